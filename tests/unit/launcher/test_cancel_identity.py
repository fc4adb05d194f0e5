"""`cancel` signals a process only if it is the one that wrote the marker or lease (issue
16, item 5: after a scheduler was SIGKILLed its marker stayed, and `cancel` sent SIGTERM
to whatever process had that PID by then)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from xstilts.core.plan import build_plan
from xstilts.core.process import ProcessIdentity, start_ticks
from xstilts.core.spec import Spec
from xstilts.core.store import Store
from xstilts.launcher.local_runner import SCHEDULERS_DIR, scheduler_marker, stop_local_nodes
from tests.support.grid import small_grid_raw


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    made: list[subprocess.Popen[bytes]] = []
    yield made
    for process in made:
        process.kill()
        process.wait()


def _sleeper(made: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    made.append(process)
    while start_ticks(process.pid) is None:
        time.sleep(0.01)
    return process


def _stranger_posing_as(process: subprocess.Popen[bytes]) -> ProcessIdentity:
    """The identity a marker holds when its PID now belongs to another process: same PID,
    an earlier start time (the scheduler that wrote it started before)."""
    boot, ticks = str(start_ticks(process.pid)).rsplit(":", 1)
    return ProcessIdentity(ProcessIdentity.current().host, process.pid, f"{boot}:{int(ticks) - 1}")


def test_every_scheduler_is_stopped_and_a_reused_pid_is_left_alone(tmp_path: Path, sleepers: list) -> None:
    store = Store(str(tmp_path / "store"))
    plan = build_plan(Spec.model_validate(small_grid_raw(store.url)))
    first, second, stranger = _sleeper(sleepers), _sleeper(sleepers), _sleeper(sleepers)
    for process in (first, second):
        identity = ProcessIdentity(ProcessIdentity.current().host, process.pid, start_ticks(process.pid))
        store.write_json(scheduler_marker(store, plan.experiment, identity), identity.as_record())
    dead = _stranger_posing_as(stranger)
    store.write_json(scheduler_marker(store, plan.experiment, dead), dead.as_record())

    schedulers, nodes = stop_local_nodes(store, plan)

    assert (schedulers, nodes) == (2, [])
    assert first.wait(timeout=10) == -15 and second.wait(timeout=10) == -15  # SIGTERM
    time.sleep(0.2)
    assert stranger.poll() is None  # the PID's new owner was not touched
    left = store.list(store.experiment_path(plan.experiment, SCHEDULERS_DIR))
    assert left == [f"{dead.host}-{first.pid}.json", f"{dead.host}-{second.pid}.json"]  # the stale marker is gone


def test_a_lease_whose_pid_was_reused_is_not_signalled(tmp_path: Path, sleepers: list) -> None:
    store = Store(str(tmp_path / "store"))
    plan = build_plan(Spec.model_validate(small_grid_raw(store.url)))
    node = plan.nodes[0]
    stranger = _sleeper(sleepers)
    owner = {**_stranger_posing_as(stranger).as_record(), "created": time.time()}
    store.write_text(store.node_path(node.stage, node.key, "lease", "000001.json"), json.dumps(owner))
    store.write_text(store.node_path(node.stage, node.key, "lease", "000001.heartbeat"), repr(time.time()))

    assert stop_local_nodes(store, plan) == (0, [])
    time.sleep(0.2)
    assert stranger.poll() is None


def test_a_holder_record_without_a_start_time_is_never_signalled(sleepers: list) -> None:
    """Written by an older version: its PID alone proves nothing."""
    stranger = _sleeper(sleepers)
    assert not ProcessIdentity(ProcessIdentity.current().host, stranger.pid, None).signal(15)
    assert stranger.poll() is None


def test_a_detached_scheduler_is_visible_to_cancel_before_it_has_started(tmp_path: Path) -> None:
    """`launch` returns only once the scheduler's marker exists (written by the launching
    process with the child's identity): a `cancel` right after `launch` used to find no
    marker while the child was still reading its record and building the plan, and the
    scheduler went on to run the grid."""
    from xstilts.launcher.local_runner import spawn_detached
    from xstilts.launcher.profiles import LocalProfile

    store = Store(str(tmp_path / "store"))
    pid = spawn_detached(store, "exp", LocalProfile(), retry_failed=False, launch_id="no-such-launch")
    try:
        names = store.list(store.experiment_path("exp", SCHEDULERS_DIR))
        assert len(names) == 1
        record = store.read_json(store.experiment_path("exp", SCHEDULERS_DIR, names[0]))
        assert record is not None and ProcessIdentity.from_record(record) == ProcessIdentity.of(pid)
    finally:
        import os

        os.waitpid(pid, 0)  # the child exits at once: its launch record does not exist
