"""Leases fence their holders, attempts are recorded by id, DONE alone means done
(issue 16, items 1 and 2; each failed on main: there was no `check`, a stale lease of a
live holder was taken over without the holder ever noticing, `finish` updated
`attempts[-1]`, and a state saying done counted as done without DONE)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from xstilts.core.lease import Lease, LeaseLost, current_lease
from xstilts.core.plan import build_plan
from xstilts.core.process import ProcessIdentity, start_ticks
from xstilts.core.spec import Spec
from xstilts.core.state import finish_attempt, node_status, start_attempt, update_state
from xstilts.core.store import DONE, FileExists, Store
from xstilts.launcher.selection import select_nodes
from tests.support.grid import small_grid_raw


@pytest.fixture(params=["file", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "file":
        return Store(str(tmp_path / "root"))
    return Store(f"memory://fence-{uuid.uuid4().hex}")


def _stall(lease: Lease, seconds_ago: float) -> None:
    """What SIGSTOP does to a holder: its heartbeat stops and grows old; it stays alive."""
    lease._stop.set()
    assert lease._thread is not None
    lease._thread.join()
    lease.store.write_text(f"{lease.folder}/{lease.generation:06d}.heartbeat", repr(time.time() - seconds_ago))


def test_a_stalled_holder_is_taken_over_and_can_no_longer_commit(store: Store) -> None:
    node = store.path("nodes", "train-target", "k1")
    stalled = Lease(store, node, {"job_id": "first"})
    assert stalled.acquire()
    stalled.check()  # holds the newest generation
    _stall(stalled, seconds_ago=3600)

    successor = Lease(store, node, {"job_id": "second"})
    assert successor.acquire() and successor.generation == 2

    with pytest.raises(LeaseLost, match="generation 1 was taken over by generation 2"):
        stalled.check()
    assert stalled.lost.is_set()
    successor.check()
    stalled.release()  # a superseded holder gives up nothing that is not its own
    info = current_lease(store, node)
    assert info is not None and info.generation == 2 and info.live()
    successor.release()


def test_the_heartbeat_thread_notices_the_takeover_and_says_so(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("xstilts.core.lease.HEARTBEAT_S", 0.05)
    node = store.path("nodes", "train-target", "k2")
    noticed = threading.Event()
    holder = Lease(store, node, {}, on_lost=noticed.set)
    assert holder.acquire()
    store.create_exclusive(f"{holder.folder}/000002.json", "{}")  # someone took generation 2
    assert noticed.wait(timeout=10) and holder.lost.is_set()
    holder.release()


def test_a_live_holder_with_a_fresh_heartbeat_keeps_its_lease(store: Store) -> None:
    node = store.path("nodes", "evaluate", "k3")
    holder = Lease(store, node, {})
    assert holder.acquire()
    assert not Lease(store, node, {}).acquire()
    holder.release()
    assert Lease(store, node, {}).acquire()  # released: free at once


def test_a_holder_whose_pid_now_names_another_process_is_gone(tmp_path: Path) -> None:
    """Provably gone without waiting for the TTL: same PID, another start time."""
    store = Store(str(tmp_path / "root"))
    node = store.path("nodes", "evaluate", "k4")
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        while start_ticks(stranger.pid) is None:
            time.sleep(0.01)
        boot, ticks = str(start_ticks(stranger.pid)).rsplit(":", 1)
        gone = ProcessIdentity(ProcessIdentity.current().host, stranger.pid, f"{boot}:{int(ticks) - 1}")
        store.write_json(f"{node}/lease/000001.json", {**gone.as_record(), "created": time.time()})
        store.write_text(f"{node}/lease/000001.heartbeat", repr(time.time()))
        assert Lease(store, node, {}).acquire()
    finally:
        stranger.kill()
        stranger.wait()


def test_exclusive_creation_has_one_winner_and_leaves_no_partial_file(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "root"))
    path = store.path("nodes", "x", "k", "lease", "000001.json")
    wins: list[int] = []
    barrier = threading.Barrier(8)

    def race(i: int) -> None:
        barrier.wait()
        try:
            store.create_exclusive(path, f'{{"racer": {i}}}')
            wins.append(i)
        except FileExists:
            pass

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1
    assert store.read_json(path) == {"racer": wins[0]}
    assert os.listdir(os.path.dirname(path)) == ["000001.json"]  # no temporary left behind


def test_attempts_are_finished_by_id_never_by_position() -> None:
    state: dict = {"attempts": [], "submissions": []}
    first, second = {"id": "g1"}, {"id": "g2"}
    start_attempt(state, first)
    start_attempt(state, second)  # the first stalled; the second took over
    assert state["attempts"][0]["outcome"] == "lost"
    finish_attempt(state, second, "done", None)
    assert [a.get("outcome") for a in state["attempts"]] == ["lost", "done"]
    assert state["status"] == "done"


def test_a_state_saying_done_without_done_is_not_done_and_runs_again(store: Store) -> None:
    plan = build_plan(Spec.model_validate(small_grid_raw(store.url)))
    prepare = plan.nodes[0]
    folder = store.node_path(prepare.stage, prepare.key)
    update_state(store, folder, lambda state: state.update(status="done"))  # killed before DONE
    status, state = node_status(store, folder)
    assert status == "interrupted" and "DONE marker is missing" in state["last_error"]
    statuses = {node.key: node_status(store, store.node_path(node.stage, node.key)) for node in plan.nodes}
    assert prepare in select_nodes(plan, statuses, retry_failed=False, live={"running"}).submit

    store.write_text(f"{folder}/{DONE}", "1\n")  # DONE, but the result.json it vouches for is gone
    assert node_status(store, folder)[0] == "interrupted"
    store.write_json(f"{folder}/result.json", {"ok": True})
    assert node_status(store, folder)[0] == "done"
