"""Kill a node at each store write of its life, on file:// and on S3, then relaunch
(issue 16, "Fault injection as a test suite"). Every case checks that the grid
finishes, that every node has exactly one completed attempt, and that the rerun node's
products are byte-equal to an uninterrupted run's (timing fields aside).

The killed node is the `none` cell's train-target node (it writes a lease, heartbeats,
state, checkpoints every 2 steps, its model, result, DONE, and releases its lease) or
its evaluate node (predictions); everything else stays done from the reference run, so
a case costs one node run killed and one relaunched.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from tests.integration.faults.conftest import CHECKPOINT_ENV, S3_REFERENCE, killed_node, spec_file
from tests.support.faults import SIGKILLED, NodeProcesses, completed_attempts, products
from xstilts.core.failpoints import ENV as FAILPOINT
from xstilts.core.plan import Node
from xstilts.core.state import node_status
from xstilts.launcher.experiment import Experiment, open_experiment

POINTS = [
    # (stage of the killed node, failpoint): every write of the node's life, in order
    ("train-target", "lease"),                  # before its lease exists
    ("train-target", "heartbeat"),              # lease taken, never beaten
    ("train-target", "state"),                  # lease held, no attempt recorded
    ("train-target", "checkpoint-files@2"),     # one checkpoint complete, the next begun
    ("train-target", "checkpoint-shards@2"),    # the next checkpoint's curve written, no shards
    ("train-target", "checkpoint-metadata@2"),  # shards written, no .metadata: incomplete
    ("train-target", "upload@2"),               # half of the model uploaded
    ("train-target", "result"),                 # outputs uploaded, no result
    ("train-target", "state@2"),                # result written, state not done
    ("train-target", "done"),                   # state says done, no DONE
    ("train-target", "released"),               # DONE written, lease not released
    ("evaluate", "upload@2"),                   # some predictions uploaded
    ("evaluate", "result"),
    ("evaluate", "done"),
]


def _case(processes: NodeProcesses, reference: Experiment, experiment: Experiment, stage: str, point: str,
          env: dict[str, str], name: str) -> None:
    store, plan = experiment.store, experiment.plan
    node = killed_node(experiment, stage)
    store.remove(experiment.node_dir(node), recursive=True)
    experiment.materialize()  # as every launch does first

    code = processes.run(store, node.ref, {**env, FAILPOINT: point}, f"{name}-killed")
    assert code == SIGKILLED, f"the failpoint {point} was never reached (exit {code}); log in {processes.log_dir}"
    processes.relaunch(store, plan, env, name)

    for each in plan.nodes:
        folder = experiment.node_dir(each)
        assert node_status(store, folder)[0] == "done", each.ref
        assert len(completed_attempts(store, folder)) == 1, (each.ref, completed_attempts(store, folder))
    assert products(store, experiment.node_dir(node)) == products(reference.store, reference.node_dir(node))


def _case_name(stage: str, point: str) -> str:
    return f"{stage}-{point.replace('@', '-')}"


@pytest.mark.parametrize("stage, point", POINTS, ids=[_case_name(*p) for p in POINTS])
def test_a_kill_at_any_write_on_file_storage_is_repaired(stage: str, point: str, tmp_path: Path,
                                                           processes: NodeProcesses, reference: Experiment) -> None:
    shutil.copytree(reference.store.root, tmp_path / "store")
    experiment = open_experiment(str(spec_file(tmp_path, str(tmp_path / "store"))))
    _case(processes, reference, experiment, stage, point, CHECKPOINT_ENV, _case_name(stage, point))


@pytest.mark.parametrize("stage, point", POINTS, ids=[_case_name(*p) for p in POINTS])
def test_a_kill_at_any_write_on_s3_is_repaired(stage: str, point: str, tmp_path: Path, processes: NodeProcesses,
                                               reference: Experiment, s3: dict[str, str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in s3.items():
        monkeypatch.setenv(name, value)
    prefix = f"xstilts-test/faults/{_case_name(stage, point)}"
    experiment = open_experiment(str(spec_file(tmp_path, f"s3://{prefix}")))
    experiment.store.fs.copy(S3_REFERENCE, prefix, recursive=True)
    env: dict[str, Any] = {**CHECKPOINT_ENV, **s3, "XSTILTS_CACHE": str(tmp_path / "cache")}
    _case(processes, reference, experiment, stage, point, env, _case_name(stage, point))
