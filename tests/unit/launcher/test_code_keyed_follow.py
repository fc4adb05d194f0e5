"""`rerun_on_code_change` across commands: `launch` plans with the running code and records
its version; the commands that follow a launch (`status`, `logs`, `analysis`) plan with
the recorded version, so after a code change they still show the nodes that launch
submitted, and the next `launch` gives the chosen stages new keys."""

from __future__ import annotations

from pathlib import Path

from xstilts.core.plan import build_plan
from xstilts.core.provenance import code_version
from xstilts.core.spec import dump_spec, load_spec
from xstilts.core.store import Store
from xstilts.launcher import launch_record
from xstilts.launcher.experiment import open_experiment
from xstilts.launcher.profiles import load_profile
from tests.support.grid import write_small_grid

EARLIER = "0123456789ab"
"""The code version of a launch made before the code changed."""


def record_launch(spec: Path, code: str) -> launch_record.LaunchRecord:
    """Record a launch as `xstilts launch` does, made by the code `code`."""
    loaded = load_spec(spec)
    store = Store(loaded.storage)
    record = launch_record.new_record(
        experiment=loaded.name, storage=store.url, profile=load_profile("local"), profile_source="local",
        overrides=[], spec_path=str(spec), spec_text=dump_spec(loaded), argv=["xstilts", "launch", str(spec)])
    assert record.code == code_version()  # what the launcher records: its own code version
    record = record.model_copy(update={"code": code})
    launch_record.write_record(store, record)
    return record


def test_following_commands_plan_with_the_launch_code(tmp_path: Path) -> None:
    spec = write_small_grid(tmp_path, rerun_on_code_change=["evaluate"])
    record_launch(spec, EARLIER)
    followed = open_experiment(str(spec), records="follow")
    launched = build_plan(load_spec(spec), EARLIER)
    assert [node.key for node in followed.plan.nodes] == [node.key for node in launched.nodes]
    relaunch = open_experiment(str(spec), records="launch")  # a new launch: the running code
    now = build_plan(load_spec(spec), code_version())
    assert [node.key for node in relaunch.plan.nodes] == [node.key for node in now.nodes]
    changed = {node.stage for node, old in zip(relaunch.plan.nodes, followed.plan.nodes) if node.key != old.key}
    assert changed == {"evaluate"}


def test_without_the_option_the_launch_code_changes_nothing(tmp_path: Path) -> None:
    spec = write_small_grid(tmp_path)
    record_launch(spec, EARLIER)
    followed = open_experiment(str(spec), records="follow")
    assert [node.key for node in followed.plan.nodes] == [node.key for node in build_plan(load_spec(spec)).nodes]
