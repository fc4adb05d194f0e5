"""Preemption end to end: a stop signal checkpoints a training node, it is requeued,
resumes from storage and ends exactly as an uninterrupted run."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml
from safetensors.numpy import load_file

from xstilts.core.lease import current_lease
from xstilts.core.store import Store
from tests.support.grid import node_states, run_cli, run_upstream_in_process, small_grid_raw, status_json, wait_until


def _spec(tmp_path: Path, name: str, steps: int = 300) -> Path:
    raw = small_grid_raw(str(tmp_path / f"store-{name}"))
    raw["intermediate"]["hparams"].update(max_steps=steps, eval_interval=20)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _intermediate_key(spec: Path) -> str:
    plan = json.loads(run_cli("plan", str(spec), "--json").stdout)
    return next(n["key"] for n in plan["nodes"] if n["stage"] == "train-intermediate")


def _weights(store_root: Path, key: str) -> dict[str, Any]:
    return load_file(store_root / "nodes" / "train-intermediate" / key / "model" / "model.safetensors")


def _assert_same_weights(first: dict[str, Any], second: dict[str, Any]) -> None:
    assert first.keys() == second.keys()
    for name in first:
        assert (first[name] == second[name]).all(), name


def _metrics_steps(store_root: Path, key: str) -> list[int]:
    lines = (store_root / "nodes" / "train-intermediate" / key / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines if "loss" in json.loads(line)]


def test_preempted_training_node_is_requeued_and_ends_identical(tmp_path: Path) -> None:
    reference = _spec(tmp_path, "reference")
    run_upstream_in_process(reference, "train-intermediate")

    spec = _spec(tmp_path, "preempted")
    key = _intermediate_key(spec)
    assert key == _intermediate_key(reference)  # storage is not part of keys
    store = Store(str(tmp_path / "store-preempted"))
    node_dir = store.node_path("train-intermediate", key)
    from tests.support.grid import start_cli

    launcher = start_cli("launch", str(spec), "--wait")
    wait_until(lambda: (lease := current_lease(store, node_dir)) is not None and lease.live(), timeout=300, every=0.1)
    os.kill(int(current_lease(store, node_dir).owner["pid"]), signal.SIGUSR2)  # SLURM's preemption signal
    output, _ = launcher.communicate(timeout=600)
    assert launcher.returncode == 0, output
    assert "requeued" in output

    state = node_states(tmp_path / "store-preempted")[key]
    assert [a["outcome"] for a in state["attempts"]] == ["preempted", "done"]
    assert state["requeues"] == 1
    _assert_same_weights(_weights(tmp_path / "store-reference", key), _weights(tmp_path / "store-preempted", key))
    steps = _metrics_steps(tmp_path / "store-preempted", key)
    assert steps == sorted(set(steps))  # every logged step exactly once
    assert status_json(spec)["counts"] == {"done": 8}


def test_submitit_job_checkpoints_and_asks_for_requeue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import submitit

    from xstilts.jobs.submitit_job import NodeJob

    spec = _spec(tmp_path, "grid")
    run_upstream_in_process(spec, "train-intermediate")
    root = tmp_path / "store-grid"
    key = _intermediate_key(spec)
    finished = _weights(root, key)
    node = root / "nodes" / "train-intermediate" / key
    for name in ("DONE", "result.json", "model", "metrics.jsonl"):  # run that node again under submitit
        shutil.rmtree(node / name) if (node / name).is_dir() else (node / name).unlink()

    store = Store(str(root))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as the local runner ran it: same float summation order
    executor = submitit.LocalExecutor(folder=tmp_path / "submitit")
    executor.update_parameters(timeout_min=10)
    job = executor.submit(NodeJob(store.url, f"train-intermediate/{key}"))
    node_dir = store.node_path("train-intermediate", key)
    wait_until(lambda: (lease := current_lease(store, node_dir)) is not None and lease.live(), timeout=120, every=0.1)
    # What SLURM does before preemption: SIGUSR2 to the job's task.
    os.kill(int(current_lease(store, node_dir).owner["pid"]), signal.SIGUSR2)
    # submitit's handler pickles checkpoint()'s resubmission and requeues; its local
    # executor restarts the job, which resumes from the checkpoint in storage.
    assert job.result() == 0
    state = json.loads((node / "state.json").read_text())
    assert [a["outcome"] for a in state["attempts"]][-2:] == ["preempted", "done"]
    assert state["requeues"] == 1
    assert any(p.name.startswith("step-") and (p / ".metadata").exists() for p in (node / "checkpoints").iterdir())
    resubmission = pickle.loads(job.paths.submitted_pickle.read_bytes())
    assert isinstance(resubmission.function, NodeJob)
    assert (resubmission.function.store_url, resubmission.function.ref) == (store.url, f"train-intermediate/{key}")
    _assert_same_weights(finished, _weights(root, key))
