"""A holder that stalls past its lease loses cleanly (issue 16, item 1: a process stopped
longer than the TTL came back, kept training and committed; both processes recorded an
outcome, and `finish` wrote over the other's attempt).

The node process is SIGSTOPped while it trains, for longer than the TTL; a relaunch then
takes the node over (the holder is alive, but its heartbeat is stale) and finishes it.
SIGCONT: the stalled process finds its lease superseded and exits without writing
anything, and the node has exactly one completed attempt and the products of an
uninterrupted run.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.integration.faults.conftest import CHECKPOINT_ENV, killed_node, spec_file
from tests.support.faults import NodeProcesses, completed_attempts, products
from xstilts.core.plan import Node
from xstilts.core.state import read_state
from xstilts.jobs.entry import EXIT_SUPERSEDED
from xstilts.launcher.experiment import Experiment, open_experiment

TTL = "5"


def _wait_for(predicate: object, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _grid_without_its_train_target(tmp_path: Path, reference: Experiment) -> tuple[Experiment, Node]:
    """A copy of the finished reference grid whose `none` train-target node is to run again."""
    shutil.copytree(reference.store.root, tmp_path / "store")
    experiment = open_experiment(str(spec_file(tmp_path, str(tmp_path / "store"))))
    node = killed_node(experiment, "train-target")
    experiment.store.remove(experiment.node_dir(node), recursive=True)
    experiment.materialize()
    return experiment, node


def test_a_holder_stalled_past_its_lease_is_superseded_and_commits_nothing(
        tmp_path: Path, processes: NodeProcesses, reference: Experiment, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XSTILTS_LEASE_TTL", TTL)  # the relaunch (this process) judges staleness by it
    experiment, node = _grid_without_its_train_target(tmp_path, reference)
    store, folder = experiment.store, experiment.node_dir(node)
    env = {**CHECKPOINT_ENV, "XSTILTS_LEASE_TTL": TTL}

    stalled = processes.start(store, node.ref, env, "stalled")
    _wait_for(lambda: store.exists(f"{folder}/checkpoints/step-2/.metadata"))  # mid-training
    os.kill(stalled.pid, signal.SIGSTOP)
    try:
        time.sleep(float(TTL) + 2)  # its heartbeat is now stale; the process is alive
        processes.relaunch(store, experiment.plan, env, "takeover")
    finally:
        os.kill(stalled.pid, signal.SIGCONT)
    stalled.join(timeout=120)

    assert stalled.exitcode == EXIT_SUPERSEDED
    attempts = read_state(store, folder)["attempts"]
    assert [a["id"] for a in attempts] == ["g1", "g2"]
    assert attempts[0]["outcome"] == "lost" and attempts[1]["outcome"] == "done"
    assert len(completed_attempts(store, folder)) == 1
    assert products(store, folder) == products(reference.store, reference.node_dir(node))
    log = (processes.log_dir / "stalled.log").read_text()
    assert "lease generation 1 was taken over by generation 2" in log or "lease lost" in log, log


def test_a_slurm_job_superseded_after_a_stall_waits_for_its_successor_and_succeeds(
        tmp_path: Path, processes: NodeProcesses, reference: Experiment, monkeypatch: pytest.MonkeyPatch) -> None:
    """On SLURM the dependants of a node start on its job's success (`afterok`): a job that
    lost its lease must neither fail (they would never run) nor commit; it waits until the
    successor has finished the node."""
    import submitit

    from xstilts.jobs.submitit_job import NodeJob

    for name, value in {**CHECKPOINT_ENV, "XSTILTS_LEASE_TTL": TTL}.items():
        monkeypatch.setenv(name, value)  # the job's environment, and the relaunch's
    experiment, node = _grid_without_its_train_target(tmp_path, reference)
    store, folder = experiment.store, experiment.node_dir(node)

    executor = submitit.LocalExecutor(folder=tmp_path / "submitit")
    executor.update_parameters(timeout_min=10)
    job = executor.submit(NodeJob(store.url, node.ref))
    _wait_for(lambda: store.exists(f"{folder}/checkpoints/step-2/.metadata"))
    holder = read_state(store, folder)["attempts"][0]["pid"]
    os.kill(holder, signal.SIGSTOP)
    try:
        time.sleep(float(TTL) + 2)
        processes.relaunch(store, experiment.plan, {**CHECKPOINT_ENV, "XSTILTS_LEASE_TTL": TTL}, "slurm-takeover")
    finally:
        os.kill(holder, signal.SIGCONT)

    assert job.result() == 0
    assert [a["outcome"] for a in read_state(store, folder)["attempts"]] == ["lost", "done"]
    assert products(store, folder) == products(reference.store, reference.node_dir(node))
