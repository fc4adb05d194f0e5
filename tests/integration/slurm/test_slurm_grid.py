"""Grids through the `slurm` executor on a real (throw-away, local) SLURM cluster.

The launcher runs as a researcher runs it on a login node: `xstilts launch` in a
subprocess with SLURM's client commands on PATH. An `sbatch` shim in front of the real
one counts submissions, so the tests can tell arrays from per-node jobs.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from pathlib import Path
from typing import Any

import yaml

from xstilts.core.store import Store
from tests.support.specs import demo_raw
from tests.support.grid import node_states, run_cli, small_grid_raw, status_json, wait_until

def slurm_profile(tmp_path: Path, **changes: Any) -> Path:
    """A profile for the test cluster: partition `low`, 20-minute jobs (USR2 before the
    limit would count as a timeout after 0.8 T), one thread per job."""
    raw: dict[str, Any] = {
        "executor": "slurm", "partition": "low", "time_min": 20, "signal_delay_s": 30, "cpus_per_task": 1,
        "log_dir": str(tmp_path / "slurm-logs"), "max_requeues": 3,
        "env": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "XSTILTS_LEASE_TTL": "20"},
    }
    raw.update(changes)
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def sbatch_counter(tmp_path: Path, cluster_env: dict[str, str]) -> tuple[dict[str, str], Path]:
    """An environment whose `sbatch` logs each call before running the real one."""
    shim_dir = tmp_path / "shim"
    shim_dir.mkdir(exist_ok=True)
    calls = tmp_path / "sbatch-calls.txt"
    real = None
    for folder in cluster_env.get("PATH", os.environ["PATH"]).split(":"):
        if (Path(folder) / "sbatch").exists():
            real = Path(folder) / "sbatch"
            break
    assert real is not None, "sbatch not on PATH"
    shim = shim_dir / "sbatch"
    shim.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexec {real} "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, **cluster_env, "COLUMNS": "200"}
    env["PATH"] = f"{shim_dir}:{env['PATH']}"
    return env, calls


def write_spec(tmp_path: Path, raw: dict[str, Any], profile: Path, name: str = "spec.yaml") -> Path:
    raw = {**raw, "cluster": str(profile)}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def wait_for_grid(spec: Path, env: dict[str, str], timeout: float = 900) -> dict[str, Any]:
    """Poll `xstilts status --json` until nothing is queued or running."""
    deadline = time.time() + timeout
    while True:
        status = status_json(spec, env=env)
        if not set(status["counts"]) & {"queued", "running", "preempted"}:
            return status
        assert time.time() < deadline, status["counts"]
        time.sleep(3)


def sbatch_count(calls: Path) -> int:
    return len(calls.read_text().splitlines()) if calls.exists() else 0


# ------------------------------------------------------------------ the grid


def test_demo_runs_as_arrays_and_relaunch_submits_nothing(slurm: Any, tmp_path: Path) -> None:
    """The demo spec through the slurm executor with `--wait`: one sbatch per stage
    wave, the paper table at the end, and a relaunch that submits nothing. Its storage,
    its rows and its step counts change: the text rows run here (33 nodes), each training
    a few steps; the image-caption rows run through the same job code in
    tests/unit/jobs/test_multimodal.py, and the demo's full training in `make demo`. Neither would
    cover anything more of SLURM here, only add minutes to CI."""
    env, calls = sbatch_counter(tmp_path, slurm.env)
    profile = slurm_profile(tmp_path, array_grouping="wave")  # per lineage: test_slurm_scheduling.py
    raw = demo_raw()
    raw["storage"] = str(tmp_path / "store")
    raw["intermediate"]["tasks"] = [t for t in raw["intermediate"]["tasks"] if not t.startswith("syn-shapes")]
    raw["model"].update(pretrain_steps=20, corpus_sentences_per_language=500)
    raw["intermediate"]["hparams"].update(max_steps=10, eval_interval=5)
    raw["target"]["hparams"].update(max_steps=10, eval_interval=5)
    spec = write_spec(tmp_path, raw, profile)
    plan = json.loads(run_cli("plan", str(spec), "--json", env=env).stdout)
    first = run_cli("launch", str(spec), "--wait", env=env, timeout=1500)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"submitted {len(plan['nodes'])} nodes in 7 arrays" in first.stdout
    assert "zero-shot cross-lingual transfer" in first.stdout  # the table's title
    assert sbatch_count(calls) == 7  # one per stage wave, not 33
    status = status_json(spec, env=env)
    assert status["counts"] == {"done": len(plan["nodes"])}, status
    states = node_states(tmp_path / "store")
    assert all(s["submissions"][-1]["executor"] == "slurm" for s in states.values())
    assert all(len(s["attempts"]) == 1 for s in states.values())
    again = run_cli("launch", str(spec), env=env)
    assert again.returncode == 0 and "submitted 0 nodes" in again.stdout, again.stdout
    assert sbatch_count(calls) == 7


def test_failed_node_blocks_dependents_and_retry_finishes(slurm_accounting: Any, tmp_path: Path) -> None:
    """On the cluster with accounting, so that the reason comes from sacct (the grid test
    above runs without it: status must work both ways)."""
    env, calls = sbatch_counter(tmp_path, slurm_accounting.env)
    profile = slurm_profile(tmp_path)
    raw = small_grid_raw(str(tmp_path / "store"))
    raw["intermediate"]["hparams"].update(max_steps=400, eval_interval=50)
    spec = write_spec(tmp_path, raw, profile)
    assert run_cli("launch", str(spec), env=env).returncode == 0
    store = Store(str(tmp_path / "store"))
    plan = json.loads(run_cli("plan", str(spec), "--json", env=env).stdout)
    inter = next(n["key"] for n in plan["nodes"] if n["stage"] == "train-intermediate")
    node_dir = store.node_path("train-intermediate", inter)

    def running_attempt() -> dict[str, Any] | None:
        state = store.read_json(f"{node_dir}/state.json") or {}
        attempts = state.get("attempts") or []
        return attempts[-1] if attempts and "ended" not in attempts[-1] else None

    wait_until(lambda: running_attempt() is not None, timeout=300, every=0.5)
    time.sleep(2)
    os.kill(int(running_attempt()["pid"]), signal.SIGKILL)  # the job step dies for good
    status = wait_for_grid(spec, env)
    by_key = {row["key"]: row for row in status["nodes"]}
    assert by_key[inter]["status"] == "failed", by_key[inter]
    assert by_key[inter]["last_error"] and "FAILED" in by_key[inter]["last_error"]  # from sacct
    assert by_key[inter]["log_tail"], "the end of the killed job's log"
    dependents = [n["key"] for n in plan["nodes"] if inter in n["inputs"].values()]
    assert dependents and all(by_key[k]["status"] in ("cancelled", "failed") for k in dependents)
    assert all(not store.exists(f"{store.node_path(by_key[k]['stage'], k)}/DONE") for k in dependents)
    text = run_cli("status", str(spec), env=env).stdout
    assert "failed" in text and inter[:8] in text

    retry = run_cli("launch", str(spec), "--retry-failed", env=env)
    assert retry.returncode == 0, retry.stdout + retry.stderr
    assert wait_for_grid(spec, env)["counts"] == {"done": 8}


def test_cancel_touches_only_this_experiments_jobs(slurm: Any, tmp_path: Path) -> None:
    env, _ = sbatch_counter(tmp_path, slurm.env)
    profile = slurm_profile(tmp_path)
    specs = []
    for name in ("first", "second"):
        raw = small_grid_raw(str(tmp_path / f"store-{name}"))
        raw["name"] = name
        specs.append(write_spec(tmp_path, raw, profile, name=f"{name}.yaml"))
        launched = run_cli("launch", str(specs[-1]), env=env)
        assert launched.returncode == 0, launched.stdout + launched.stderr

    def names() -> set[str]:
        return set(slurm.run("squeue", "-h", "-o", "%j").stdout.split())

    assert names() == {"xstilts-first", "xstilts-second"}
    cancelled = run_cli("cancel", str(specs[0]), env=env)
    assert cancelled.returncode == 0, cancelled.stderr
    wait_until(lambda: names() == {"xstilts-second"}, timeout=30)
    assert run_cli("cancel", str(specs[1]), env=env).returncode == 0


def test_dry_run_reads_max_array_size_from_the_cluster(slurm: Any, tmp_path: Path) -> None:
    env, calls = sbatch_counter(tmp_path, slurm.env)
    raw = small_grid_raw(str(tmp_path / "store"))
    spec = write_spec(tmp_path, raw, slurm_profile(tmp_path))
    result = run_cli("launch", str(spec), "--dry-run", env=env)
    assert result.returncode == 0, result.stderr
    assert f"at most {slurm.max_array_size} tasks per array (scontrol show config)" in result.stdout
    assert sbatch_count(calls) == 0 and not (tmp_path / "store").exists()
