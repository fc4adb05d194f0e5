"""Shared by the fault-injection tests: a warm node-process server, and the small grid
run once without faults (the reference every case must end up equal to), on file://
and uploaded to a moto S3 server."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.support.faults import NodeProcesses
from tests.support.grid import small_grid_raw
from xstilts.core.plan import Node
from xstilts.launcher.experiment import Experiment, open_experiment

CHECKPOINT_ENV = {"XSTILTS_CHECKPOINT_EVERY": "2"}
"""Training nodes checkpoint every 2 of their 8 steps: a node's life has 4 saves."""


def spec_file(folder: Path, storage: str) -> Path:
    raw = small_grid_raw(storage)
    raw["checkpointing"] = {"every_steps": 2}
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def killed_node(experiment: Experiment, stage: str) -> Node:
    return next(n for n in experiment.plan.nodes if n.stage == stage and n.intermediate == "none")


@pytest.fixture(scope="session")
def processes(tmp_path_factory: pytest.TempPathFactory) -> NodeProcesses:
    return NodeProcesses(tmp_path_factory.mktemp("fault-logs"))


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory, processes: NodeProcesses) -> Experiment:
    """The grid run once without faults: what every case must end up with."""
    folder = tmp_path_factory.mktemp("reference")
    experiment = open_experiment(str(spec_file(folder, str(folder / "store"))))
    experiment.materialize()
    processes.relaunch(experiment.store, experiment.plan, CHECKPOINT_ENV, "reference")
    return experiment


@pytest.fixture(scope="session")
def s3(s3_env: dict[str, str], reference: Experiment, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The session's moto server with the reference grid uploaded once under
    `xstilts-test/faults/reference`; cases copy it inside the server.

    The session's server, not one of its own: fsspec caches S3 filesystems by their
    arguments, and the endpoint comes from the environment, so a filesystem made here for
    a second server would be handed to later tests and send them to the wrong one."""
    with pytest.MonkeyPatch.context() as patch:  # only while uploading: tests set their own
        for name, value in s3_env.items():
            patch.setenv(name, value)
        experiment = open_experiment(str(spec_file(tmp_path_factory.mktemp("s3ref"), f"s3://{S3_REFERENCE}")))
        experiment.store.fs.put(reference.store.root + "/", S3_REFERENCE, recursive=True)
    return s3_env


S3_REFERENCE = "xstilts-test/faults/reference"
