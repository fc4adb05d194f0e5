"""Preemption three ways, and a two-node FSDP2 job, on the local SLURM cluster.

A grid with four intermediate training nodes runs once locally (the reference) and
once through SLURM, where three of those nodes are interrupted while they train:
`scontrol requeue` (no signal: the job is killed and restarted, resume comes from the
newest periodic checkpoint in storage), submitit's interrupt signal (USR2 to the job:
checkpoint now, requeue), and a job in the higher-priority partition that preempts
them (SLURM signals, then requeues). Each must end with exactly the weights of the
uninterrupted run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from safetensors.numpy import load_file

from xstilts.core.store import Store
from tests.support.grid import node_states, run_cli, run_upstream_in_process, small_grid_raw, wait_until
from tests.integration.slurm.test_slurm_grid import sbatch_counter, slurm_profile, wait_for_grid, write_spec


def _grid(store: Path) -> dict[str, Any]:
    raw = small_grid_raw(str(store))
    raw["intermediate"]["tasks"] = ["none", "syn-rate", "syn-chunk"]
    raw["seeds"] = [1, 2]
    raw["intermediate"]["hparams"].update(max_steps=240, eval_interval=40)
    raw["target"]["hparams"].update(max_steps=4, eval_interval=4)
    raw["checkpointing"] = {"every_steps": 20, "keep": 2}
    return raw


def _weights(store: Path, key: str) -> dict[str, Any]:
    return load_file(store / "nodes" / "train-intermediate" / key / "model" / "model.safetensors")


def _job_of(store: Store, key: str) -> str:
    state = store.read_json(f"{store.node_path('train-intermediate', key)}/state.json") or {}
    return state["submissions"][-1]["job_id"]


def _training(store: Store, key: str, after_step: int = 25) -> bool:
    """The node is running and has a checkpoint at `after_step` or later in storage."""
    folder = store.node_path("train-intermediate", key)
    state = store.read_json(f"{folder}/state.json") or {}
    attempts = state.get("attempts") or []
    if not attempts or "ended" in attempts[-1]:
        return False
    checkpoints = store.list(f"{folder}/checkpoints") if store.exists(f"{folder}/checkpoints") else []
    return any(name.startswith("step-") and int(name[5:]) >= after_step for name in checkpoints)


def test_preempted_three_ways_ends_identical(slurm: Any, tmp_path: Path) -> None:
    reference_store = tmp_path / "reference"
    local = tmp_path / "local.yaml"
    local.write_text(yaml.safe_dump(_grid(reference_store), sort_keys=False))
    run_upstream_in_process(local, "train-intermediate")

    env, _ = sbatch_counter(tmp_path, slurm.env)
    spec = write_spec(tmp_path, _grid(tmp_path / "store"), slurm_profile(tmp_path))
    plan = json.loads(run_cli("plan", str(spec), "--json", env=env).stdout)
    keys = [n["key"] for n in plan["nodes"] if n["stage"] == "train-intermediate"]
    assert len(keys) == 4
    launched = run_cli("launch", str(spec), env=env)
    assert launched.returncode == 0, launched.stdout + launched.stderr
    store = Store(str(tmp_path / "store"))
    requeue_key, signal_key, partition_key = keys[0], keys[1], keys[2]

    wait_until(lambda: _training(store, requeue_key), timeout=600, every=0.5)
    slurm.run("scontrol", "requeue", _job_of(store, requeue_key))

    wait_until(lambda: _training(store, signal_key), timeout=600, every=0.5)
    slurm.run("scancel", "--signal=USR2", _job_of(store, signal_key))

    wait_until(lambda: _training(store, partition_key), timeout=600, every=0.5)
    job = _job_of(store, partition_key)
    node_name = slurm.run("squeue", "-h", "-j", job, "-o", "%N").stdout.strip()
    assert node_name, f"job {job} of the node to preempt is not running"
    slurm.run("sbatch", "-p", "high", "-w", node_name, "--exclusive", "-J", "preemptor",
              "-o", "/dev/null", "--wrap", "sleep 15")

    status = wait_for_grid(spec, env, timeout=1200)
    assert status["counts"] == {"done": len(plan["nodes"])}, status["counts"]
    states = node_states(tmp_path / "store")
    for key in (requeue_key, signal_key, partition_key):
        outcomes = [a.get("outcome") for a in states[key]["attempts"]]
        assert len(outcomes) >= 2 and outcomes[-1] == "done", (key, outcomes)
        reference, preempted = _weights(reference_store, key), _weights(tmp_path / "store", key)
        assert reference.keys() == preempted.keys()
        assert all((reference[name] == preempted[name]).all() for name in reference), key


def test_two_node_job_trains_with_fsdp_and_checkpoints(slurm: Any, tmp_path: Path) -> None:
    env, _ = sbatch_counter(tmp_path, slurm.env)
    profile = slurm_profile(tmp_path, nodes=2, tasks_per_node=1)
    raw = small_grid_raw(str(tmp_path / "store"))
    raw["checkpointing"] = {"every_steps": 4, "keep": 5}
    spec = write_spec(tmp_path, raw, profile)
    assert run_cli("launch", str(spec), env=env).returncode == 0
    status = wait_for_grid(spec, env)
    assert status["counts"] == {"done": 8}, status
    plan = json.loads(run_cli("plan", str(spec), "--json", env=env).stdout)
    key = next(n["key"] for n in plan["nodes"] if n["stage"] == "train-intermediate")
    node = tmp_path / "store" / "nodes" / "train-intermediate" / key
    steps = sorted(p for p in (node / "checkpoints").iterdir() if (p / ".metadata").exists())
    assert steps, "no complete checkpoint"
    shards = {p.name for p in steps[-1].iterdir() if p.suffix == ".distcp"}
    assert len(shards) == 2, shards  # one file per rank: two processes on two SLURM nodes
    hosts = json.loads((node / "state.json").read_text())["attempts"][-1]
    assert hosts["job_id"]
