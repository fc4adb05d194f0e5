"""Shared by the fault-injection tests: a warm node-process server, and the small grid
run once without faults (the reference every case must end up equal to), on file://
and uploaded to a moto S3 server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.faults import NodeProcesses
from tests.support.grid import small_grid_raw
from tests.support.moto import moto_server
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
def s3(tmp_path_factory: pytest.TempPathFactory, reference: Experiment) -> Iterator[dict[str, str]]:
    """moto with the reference grid uploaded once; cases copy it inside the server."""
    with moto_server(["faults"]) as env:
        with pytest.MonkeyPatch.context() as patch:  # only while uploading: tests set their own
            for name, value in env.items():
                patch.setenv(name, value)
            experiment = open_experiment(str(spec_file(tmp_path_factory.mktemp("s3ref"), "s3://faults/reference")))
            experiment.store.fs.put(reference.store.root + "/", "faults/reference", recursive=True)
        yield env


