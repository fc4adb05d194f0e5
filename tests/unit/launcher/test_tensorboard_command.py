"""`xstilts tensorboard` (issue 19), and the spec's `tracking` section as the launcher
sees it: validated strictly, never part of node keys, wandb refused at launch when the
package is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from tests.support.specs import demo_raw
from xstilts.core.nodes import parse_node_record
from xstilts.core.plan import build_plan
from xstilts.core.spec import validate
from xstilts.jobs import tracking
from xstilts.launcher.commands.tensorboard import TRACKED_STAGES, run_name

XSTILTS = [sys.executable, "-c", "from xstilts.cli import main; main()"]
WITHOUT_WANDB = [sys.executable, "-c",
                 "import sys; sys.modules['wandb'] = None; from xstilts.cli import main; main()"]
"""The CLI in a Python where `import wandb` fails, as where the extra is not installed."""


def run_cli(*args: str, command: list[str] = XSTILTS) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, timeout=120)


def test_print_names_one_run_per_training_and_tune_node(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.data_ingester import _parse_event_files_spec

    spec = write_spec()
    done = run_cli("tensorboard", str(spec), "--print")
    assert done.returncode == 0, done.stderr
    command = done.stdout.strip()
    assert command.startswith("tensorboard --logdir_spec ")
    runs = _parse_event_files_spec(command.split(" ", 2)[2].strip("'"))  # TensorBoard's own reading: {path: name}

    plan = build_plan(validate(demo_raw() | {"storage": str(tmp_path / "store")}))
    tracked = [node for node in plan.nodes if node.stage in TRACKED_STAGES]
    expected = {str(tmp_path / "store" / "nodes" / node.stage / node.key / tracking.TENSORBOARD_DIR): node
                for node in tracked}
    assert set(runs) == set(expected)
    assert len(set(runs.values())) == len(runs)  # names are unique
    for path, name in runs.items():
        assert name.startswith(run_name(expected[path]))
    target = next(node for node in tracked if node.stage == "train-target")
    assert runs[str(tmp_path / "store" / "nodes" / "train-target" / target.key / "tensorboard")] == \
        f"train-target/{target.task}/{target.intermediate}/seed{target.seed}"


def test_the_command_names_runs_as_the_jobs_do(tmp_path: Path) -> None:
    plan = build_plan(validate(demo_raw() | {"storage": str(tmp_path / "store")}))
    for node in plan.nodes:
        if node.stage in TRACKED_STAGES:
            assert tracking.node_run(parse_node_record(node.record())).name == run_name(node)


def test_tracking_section_changes_no_node_key(tmp_path: Path) -> None:
    base = demo_raw() | {"storage": str(tmp_path / "store")}
    tracked = base | {"tracking": {"tensorboard": False, "upload_every_s": 5,
                                   "wandb": {"project": "p", "entity": "e", "mode": "offline"}}}
    assert [n.key for n in build_plan(validate(base)).nodes] == [n.key for n in build_plan(validate(tracked)).nodes]
    env = validate(tracked).job_env()
    assert tracking.TrackingPolicy.from_env(env) == tracking.TrackingPolicy(
        False, 5.0, tracking.WandbPolicy("p", "e", "offline"))
    assert tracking.TrackingPolicy.from_env(validate(base).job_env()) == tracking.TrackingPolicy()


@pytest.mark.parametrize(("tracking_section", "message"), [
    ({"tensorbord": True}, "tracking.tensorbord: unknown key 'tensorbord' (did you mean 'tensorboard'?)"),
    ({"wandb": {"project": "p", "mode": "sometimes"}}, "tracking.wandb.mode"),
    ({"wandb": {"entity": "e"}}, "tracking.wandb.project"),
])
def test_bad_tracking_section_is_one_message(write_spec: Callable[..., Path], tracking_section: dict[str, object],
                                              message: str) -> None:
    done = run_cli("launch", str(write_spec(tracking=tracking_section)), "--dry-run")
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr


def test_unknown_tracking_key_lists_the_valid_ones(write_spec: Callable[..., Path]) -> None:
    done = run_cli("plan", str(write_spec(tracking={"mlflow": {}})))
    assert done.returncode == 2
    assert "tensorboard" in done.stderr and "wandb" in done.stderr and "upload_every_s" in done.stderr


def test_launch_refuses_wandb_tracking_without_the_package(write_spec: Callable[..., Path]) -> None:
    spec = write_spec(tracking={"wandb": {"project": "p"}})
    done = run_cli("launch", str(spec), "--dry-run", command=WITHOUT_WANDB)
    assert done.returncode == 2, done.stderr
    assert "tracking.wandb: the wandb package is not installed" in done.stderr and "xstilts[wandb]" in done.stderr
    assert "Traceback" not in done.stderr
    assert run_cli("launch", str(write_spec()), "--dry-run", command=WITHOUT_WANDB).returncode == 0
