"""The bulk view of a plan (core.index): the same statuses as `node_status` node by node,
from listings and parallel reads; the done index spares the reads of finished nodes and
is never trusted over the listing."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from xstilts.core.commit_record import done_marker, parse_marker
from xstilts.core.index import index_path, read_index, snapshot
from xstilts.core.lease import Lease, lease_paths
from xstilts.core.listing import list_stage
from xstilts.core.state import node_status
from xstilts.core.store import DONE, Store

EXPERIMENT = "exp"


@dataclass(frozen=True)
class N:
    stage: str
    key: str


@pytest.fixture(params=["file", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "file":
        return Store(str(tmp_path / "root"))
    return Store(f"memory://index-{uuid.uuid4().hex}")


def folder(store: Store, node: N) -> str:
    return store.node_path(node.stage, node.key)


def finish(store: Store, node: N, value: float = 1.0) -> None:
    store.write_json(f"{folder(store, node)}/state.json", {"status": "done", "attempts": [{"id": "g1", "outcome": "done"}]})
    store.write_json(f"{folder(store, node)}/result.json", {"value": value})
    store.write_text(f"{folder(store, node)}/{DONE}", f"{time.time()}\n")


def state(store: Store, node: N, status: str) -> None:
    store.write_json(f"{folder(store, node)}/state.json", {"status": status, "attempts": []})


def grid(store: Store) -> tuple[list[N], list[Lease]]:
    """A node in every situation `node_status` tells apart."""
    stages = ("train", "train-target", "evaluate")
    nodes = [N(stage, f"{'abc'[s]}{i:03d}") for s, stage in enumerate(stages) for i in range(12)]
    leases = []
    for i, node in enumerate(nodes):
        case = i % 12
        path = folder(store, node)
        if case in (0, 1):
            finish(store, node, value=i)
        elif case == 2:
            state(store, node, "queued")
        elif case == 3:
            state(store, node, "failed")
        elif case == 4:
            state(store, node, "running")  # no lease: interrupted
        elif case == 5:  # a live holder
            state(store, node, "running")
            lease = Lease(store, path, {"job_id": "live"})
            assert lease.acquire()
            leases.append(lease)
        elif case == 6:  # a released lease, recorded failed
            lease = Lease(store, path, {"job_id": "gone"})
            assert lease.acquire()
            lease.release()
            state(store, node, "failed")
        elif case == 7:  # a stale lease: heartbeat an hour old
            state(store, node, "running")
            owner, _, beat = lease_paths(path, 1)
            store.create_exclusive(owner, json.dumps({"job_id": "old", "created": time.time() - 3600}))
            store.write_text(beat, repr(time.time() - 3600))
        elif case == 8:  # DONE without result.json: not done
            state(store, node, "done")
            store.write_text(f"{path}/{DONE}", "x\n")
        elif case == 9:  # DONE with a torn result.json: not done
            state(store, node, "done")
            store.write_text(f"{path}/result.json", '{"value": ')
            store.write_text(f"{path}/{DONE}", "x\n")
        elif case == 10:  # a torn state.json
            store.write_text(f"{path}/state.json", "{")
        # case 11: nothing at all (pending)
        if case in (0, 3):  # files a listing must pass over
            store.write_text(f"{path}/checkpoints/step-1/.metadata", "m")
            store.write_text(f"{path}/logs/rank0.log", "log")
    return nodes, leases


def one_by_one(store: Store, nodes: list[N]) -> dict[str, tuple[str, dict[str, Any]]]:
    return {node.key: node_status(store, folder(store, node)) for node in nodes}


def test_the_bulk_view_gives_node_status_for_every_kind_of_node(store: Store) -> None:
    nodes, leases = grid(store)
    try:
        expected = one_by_one(store, nodes)
        for use_index in (False, True, True):  # without, building and using the index
            snap = snapshot(store, EXPERIMENT, nodes, use_index=use_index)
            assert snap.statuses == expected
        assert {s for s, _ in expected.values()} == {"done", "queued", "failed", "interrupted", "running", "pending"}
        assert snap.results == {n.key: {"value": i} for i, n in enumerate(nodes) if i % 12 in (0, 1)}
    finally:
        for lease in leases:
            lease.release()


def test_the_index_spares_the_reads_of_finished_nodes(store: Store) -> None:
    nodes, leases = grid(store)
    for lease in leases:
        lease.release()
    cold = snapshot(store, EXPERIMENT, nodes)
    warm = snapshot(store, EXPERIMENT, nodes)
    done = [n for n in nodes if cold.statuses[n.key][0] == "done"]
    assert len(done) == 6 and len(read_index(store, index_path(store, EXPERIMENT))) == 6
    # a finished node costs a state and a result read once, nothing afterwards
    assert cold.reads - warm.reads == 2 * len(done)
    assert warm.statuses == cold.statuses and warm.results == cold.results
    # nothing changed: the index is not written again
    before = store.read_text(index_path(store, EXPERIMENT))
    store.remove(index_path(store, EXPERIMENT))
    snapshot(store, EXPERIMENT, nodes)
    assert store.read_text(index_path(store, EXPERIMENT)) == before  # rebuilt when missing, the same


def test_the_listing_wins_over_the_index(store: Store) -> None:
    nodes, leases = grid(store)
    for lease in leases:
        lease.release()
    snapshot(store, EXPERIMENT, nodes)
    gone, rewritten = nodes[0], nodes[1]
    store.remove(f"{folder(store, gone)}/{DONE}")  # deleted marker: not done although indexed
    store.write_json(f"{folder(store, rewritten)}/result.json", {"value": 12345.5})  # re-run elsewhere
    snap = snapshot(store, EXPERIMENT, nodes)
    assert snap.statuses[gone.key][0] == "interrupted"  # state says done, no DONE
    assert snap.results[rewritten.key] == {"value": 12345.5}
    assert snap.statuses == one_by_one(store, nodes)
    assert f"{gone.stage}/{gone.key}" not in read_index(store, index_path(store, EXPERIMENT))


@pytest.mark.parametrize("garbage", ['{"version": 1, "nodes": {"x', "", '{"version": 99, "nodes": {}}', "[1, 2]",
                                     '{"version": 1, "nodes": {"train/a000": {"fingerprint": 3}}}'])
def test_a_torn_or_foreign_index_is_rebuilt(store: Store, garbage: str) -> None:
    nodes, leases = grid(store)
    for lease in leases:
        lease.release()
    store.write_text(index_path(store, EXPERIMENT), garbage)
    snap = snapshot(store, EXPERIMENT, nodes)
    assert snap.statuses == one_by_one(store, nodes)
    assert len(read_index(store, index_path(store, EXPERIMENT))) == 6


def test_a_forged_index_record_does_not_make_a_node_done(store: Store) -> None:
    """A record for a node whose DONE the listing does not show is ignored."""
    nodes, leases = grid(store)
    for lease in leases:
        lease.release()
    pending = next(n for n in nodes if n.key.endswith("011"))
    record = {"fingerprint": "DONE=-|result.json=-|state.json=-", "state": {}, "result": {"value": 1}}
    store.write_json(index_path(store, EXPERIMENT), {"version": 1, "nodes": {f"{pending.stage}/{pending.key}": record}})
    assert snapshot(store, EXPERIMENT, nodes).statuses[pending.key][0] == "pending"


def test_a_stage_listing_keeps_node_files_leases_and_logs_only(store: Store) -> None:
    nodes, leases = grid(store)
    for lease in leases:
        lease.release()
    listed = list_stage(store, "train")
    assert set(listed) == {n.key for n in nodes if n.stage == "train" and not n.key.endswith("011")}
    assert set(listed["a000"].files) == {"state.json", "result.json", DONE, "logs/rank0.log"}  # no checkpoints
    assert listed["a000"].log_names() == ["rank0.log"] and listed["a001"].log_names() == []
    assert listed["a005"].newest_lease() == 1 and listed["a005"].has("lease/000001.released")
    assert "train-target" not in {files.stage for files in listed.values()}  # the prefix ends at the stage


def test_a_stage_listing_by_key_prefix_keeps_only_those_keys(store: Store) -> None:
    nodes, leases = grid(store)
    for lease in leases:
        lease.release()
    assert set(list_stage(store, "evaluate", prefix="c00")) == {f"c00{i}" for i in range(10)}
    assert list_stage(store, "evaluate", prefix="z") == {}
    assert list_stage(store, "no-such-stage") == {}


def test_a_snapshot_of_some_nodes_keeps_the_index_records_of_the_others(store: Store) -> None:
    nodes, leases = grid(store)
    for lease in leases:
        lease.release()
    snapshot(store, EXPERIMENT, nodes)
    some = [n for n in nodes if n.stage == "train"]
    assert len(snapshot(store, EXPERIMENT, some).results) == 2
    assert len(read_index(store, index_path(store, EXPERIMENT))) == 6
    assert snapshot(store, EXPERIMENT, nodes).reads == snapshot(store, EXPERIMENT, nodes, use_index=False).reads - 12


def test_a_refresh_with_the_known_records_reads_no_index_and_still_checks_the_listing(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    nodes, leases = grid(store)
    for lease in leases:
        lease.release()
    first = snapshot(store, EXPERIMENT, nodes)
    store.remove(index_path(store, EXPERIMENT))  # not read: a refresh would not notice
    again = snapshot(store, EXPERIMENT, nodes, known=first.records)
    assert again.statuses == first.statuses and again.reads == first.reads - 12
    assert not store.exists(index_path(store, EXPERIMENT))  # nothing new: nothing written
    store.remove(f"{folder(store, nodes[0])}/{DONE}")
    assert snapshot(store, EXPERIMENT, nodes, known=again.records).statuses[nodes[0].key][0] == "interrupted"


def commit(store: Store, node: N, value: float) -> None:
    """A node committed as `jobs.entry` commits it: state, result, then DONE carrying both."""
    path = folder(store, node)
    state_value = {"status": "done", "attempts": [{"id": "g1", "outcome": "done"}]}
    store.write_json(f"{path}/state.json", state_value)
    store.write_json(f"{path}/result.json", {"value": value})
    store.write_text(f"{path}/{DONE}", done_marker(time.time(), state_value, {"value": value}))


def test_a_done_record_stands_in_for_the_files_until_one_changes_after_it(store: Store) -> None:
    nodes = [N("train", f"a{i:03d}") for i in range(6)]
    for i, node in enumerate(nodes):
        commit(store, node, value=i)
    snap = snapshot(store, EXPERIMENT, nodes, use_index=False)
    assert snap.reads == len(nodes)  # one DONE per node, not a state and a result
    assert snap.statuses == one_by_one(store, nodes) and snap.results[nodes[3].key] == {"value": 3}
    # rewritten after the commit with other bytes of the same size: a newer file is read again
    time.sleep(0.02)  # past the filesystem's timestamp tick
    store.write_json(f"{folder(store, nodes[1])}/result.json", {"value": 7})
    store.write_text(f"{folder(store, nodes[2])}/result.json", '{"value": ')  # torn after the commit
    snap = snapshot(store, EXPERIMENT, nodes, use_index=False)
    assert snap.results[nodes[1].key] == {"value": 7}
    assert snap.statuses[nodes[2].key][0] == "interrupted" and nodes[2].key not in snap.results
    assert snap.statuses == one_by_one(store, nodes)
    assert snap.reads == len(nodes) + 4


@pytest.mark.parametrize("marker", ["1733300000.5\n", "", "{not json", '{"version": 1}', "[1]"])
def test_a_done_marker_without_a_record_means_reading_the_files(store: Store, marker: str) -> None:
    node = N("train", "a000")
    commit(store, node, value=5)
    store.write_text(f"{folder(store, node)}/{DONE}", marker)
    assert parse_marker(marker) is None
    snap = snapshot(store, EXPERIMENT, [node], use_index=False)
    assert snap.results[node.key] == {"value": 5} and snap.statuses == one_by_one(store, [node])
