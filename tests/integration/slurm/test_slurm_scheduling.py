"""Finer SLURM scheduling on the real local cluster: per-lineage dependencies, a cap on
queued jobs, and jobs lost to a node failure retried without anyone asking.

- One intermediate training fails (its process is killed): the targets of the other
  intermediate start as soon as their own model is trained (before the failure) and
  finish; only the failed one's cells are cancelled. With the arrays of one stage wave
  (`array_grouping: wave`) its failure cancels every target.
- `max_jobs: 2`: `squeue -u` is sampled every half second while `launch --wait` runs the
  grid; no sample ever shows more than two of its tasks, and the grid still finishes, also
  where a job that has committed its node stays COMPLETING in squeue for longer than a poll
  (a slow epilog: all slots look taken while the store shows nothing live).
- A node is set DOWN under a running training (`scontrol update state=down`): SLURM ends
  the job NODE_FAIL (sacct says so) and requeues it; it resumes from its checkpoint on
  the other node, the node ends done, and the launcher shows it as retried.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

from xstilts.core.store import Store
from tests.support.grid import node_states, run_cli, small_grid_raw, start_cli, status_json, wait_until
from tests.integration.slurm.test_slurm_grid import sbatch_counter, sbatch_count, slurm_profile, wait_for_grid, write_spec


def _keys(spec: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    return json.loads(run_cli("plan", str(spec), "--json", env=env).stdout)["nodes"]


def _state(store: Store, node: dict[str, Any]) -> dict[str, Any]:
    return store.read_json(f"{store.node_path(node['stage'], node['key'])}/state.json") or {}


def _running_attempt(store: Store, node: dict[str, Any]) -> dict[str, Any] | None:
    attempts = _state(store, node).get("attempts") or []
    return attempts[-1] if attempts and "outcome" not in attempts[-1] else None


def _done(store: Store, node: dict[str, Any]) -> bool:
    return store.exists(f"{store.node_path(node['stage'], node['key'])}/DONE")


def test_failed_intermediate_leaves_other_rows_running(slurm_accounting: Any, tmp_path: Path) -> None:
    env, _ = sbatch_counter(tmp_path, slurm_accounting.env)
    raw = small_grid_raw(str(tmp_path / "store"))
    raw["intermediate"]["tasks"] = ["none", "syn-rate", "syn-chunk"]
    raw["intermediate"]["per_task"] = {"syn-rate": {"max_steps": 5000, "eval_interval": 1000}}
    spec = write_spec(tmp_path, raw, slurm_profile(tmp_path))
    nodes = _keys(spec, env)
    inter = {n["task"]: n for n in nodes if n["stage"] == "train-intermediate"}
    slow, fast = inter["syn-rate"], inter["syn-chunk"]
    fast_cells = [n for n in nodes if n["intermediate"] == "syn-chunk" and n["stage"] in ("train-target", "evaluate")]
    slow_cells = [n for n in nodes if n["intermediate"] == "syn-rate" and n["stage"] in ("train-target", "evaluate")]
    assert fast_cells and slow_cells
    launched = run_cli("launch", str(spec), env=env)
    assert launched.returncode == 0, launched.stdout + launched.stderr
    store = Store(str(tmp_path / "store"))

    # the fast row's cells finish while the slow intermediate is still training
    wait_until(lambda: all(_done(store, n) for n in fast_cells), timeout=600, every=1)
    attempt = _running_attempt(store, slow)
    assert attempt is not None and not _done(store, slow), "the slow intermediate should still be training"
    os.kill(int(attempt["pid"]), signal.SIGKILL)  # the job step dies for good: FAILED, not requeued

    status = wait_for_grid(spec, env)
    by_key = {row["key"]: row for row in status["nodes"]}
    assert by_key[slow["key"]]["status"] == "failed", by_key[slow["key"]]
    assert all(by_key[n["key"]]["status"] == "done" for n in fast_cells)
    assert all(by_key[n["key"]]["status"] in ("cancelled", "failed") for n in slow_cells)
    assert status["counts"].get("done") == len(nodes) - 1 - len(slow_cells), status["counts"]


def test_queued_jobs_never_exceed_max_jobs(slurm: Any, tmp_path: Path) -> None:
    env, calls = sbatch_counter(tmp_path, slurm.env)
    cap = 2
    raw = small_grid_raw(str(tmp_path / "store"))
    spec = write_spec(tmp_path, raw, slurm_profile(tmp_path, max_jobs=cap))
    nodes = _keys(spec, env)
    assert len(nodes) > 3 * cap
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            out = slurm.run("squeue", "-h", "-r", "-u", "root", "-o", "%i").stdout
            samples.append(len(out.split()))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with slurm.slow_job_ends(8):  # longer than a poll of `--wait` (5 s)
            launch = start_cli("launch", str(spec), "--wait", env=env)
            output, _ = launch.communicate(timeout=1200)
    finally:
        stop.set()
        sampler.join(timeout=30)
    assert launch.returncode == 0, output
    assert status_json(spec, env=env)["counts"] == {"done": len(nodes)}
    assert len(samples) > 10 and max(samples) <= cap, (max(samples), samples)
    assert max(samples) == cap  # the cap was reached, not merely never needed
    assert sbatch_count(calls) >= len(nodes) // cap  # submitted round by round as slots freed up
    assert "waiting for free slots (max_jobs 2)" in output


def test_node_failure_is_retried_automatically(slurm_accounting: Any, tmp_path: Path) -> None:
    env, _ = sbatch_counter(tmp_path, slurm_accounting.env)
    raw = small_grid_raw(str(tmp_path / "store"))
    raw["intermediate"]["hparams"].update(max_steps=300, eval_interval=100)
    raw["checkpointing"] = {"every_steps": 20, "keep": 2}
    spec = write_spec(tmp_path, raw, slurm_profile(tmp_path))
    nodes = _keys(spec, env)
    inter = next(n for n in nodes if n["stage"] == "train-intermediate")
    store = Store(str(tmp_path / "store"))
    launch = start_cli("launch", str(spec), "--wait", env=env)
    down: str | None = None
    try:
        wait_until(lambda: _running_attempt(store, inter) is not None, timeout=600, every=0.5)
        time.sleep(3)
        job = _state(store, inter)["submissions"][-1]["job_id"]
        down = slurm_accounting.run("squeue", "-h", "-j", job, "-o", "%N").stdout.strip()
        assert down, f"job {job} is not running"
        slurm_accounting.run("scontrol", "update", f"nodename={down}", "state=down", "reason=xstilts-test",
                             check=True)
        # SLURM ends the run NODE_FAIL (sacct -D keeps that record) and requeues the job
        wait_until(lambda: "NODE_FAIL" in slurm_accounting.run(
            "sacct", "-n", "-D", "-X", "-j", job, "-o", "State").stdout, timeout=120)
        # ReturnToService=2 may have taken the node back already, when its slurmd registered
        slurm_accounting.run("scontrol", "update", f"nodename={down}", "state=resume")
        down = None
        output, _ = launch.communicate(timeout=1200)
    finally:
        if down:
            slurm_accounting.run("scontrol", "update", f"nodename={down}", "state=resume")
        if launch.poll() is None:
            launch.kill()
    assert launch.returncode == 0, output
    status = status_json(spec, env=env)
    assert status["counts"] == {"done": len(nodes)}, status
    attempts = node_states(tmp_path / "store")[inter["key"]]["attempts"]
    # the failing node's slurmd sends SIGTERM first: the run checkpoints and stops without
    # asking for a requeue ("interrupted", as under scancel; SLURM requeues a NODE_FAIL job
    # itself), or, from a node gone without a word, an attempt the restart closes as "lost"
    assert attempts[0]["outcome"] in ("interrupted", "preempted", "lost"), attempts
    assert attempts[-1]["outcome"] == "done", attempts
    assert len({a["job_id"] for a in attempts}) == 1  # requeued by SLURM: the same job, not a new submission
    # shown: every job the downed node held (the training, maybe another) counts as retried
    final = next(line for line in output.splitlines() if line.startswith(f"{len(nodes)} done"))
    assert "retried)" in final and int(re.findall(r"\((\d+) retried\)", final)[0]) >= 1, output[-3000:]
