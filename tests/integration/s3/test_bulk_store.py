"""The store's bulk view on S3 (moto behind the counting proxy): the requests of a status
grow with the stages, not the nodes; a done grid costs its listings and one read of the
done index; no read asks for a HEAD first; faults on the way change nothing."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from xstilts.core.commit_record import done_marker
from xstilts.core.index import snapshot
from xstilts.core.listing import SHARD_ABOVE, in_parallel
from xstilts.core.state import finish_attempt, node_status, start_attempt, update_state
from xstilts.core.store import DONE, Store
from tests.support.s3_fault_proxy import ERROR, FaultProxy, fault_proxy

STAGES = ("prepare", "train", "evaluate")


@dataclass(frozen=True)
class N:
    stage: str
    key: str


@pytest.fixture
def moto_env(s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in s3_env.items():
        monkeypatch.setenv(name, value)
    return s3_env


def write_grid(prefix: str, per_stage: int, records: bool = True) -> list[N]:
    """Nodes as jobs leave them, straight to moto: half of each stage done (state with an
    attempt, result.json, DONE last carrying both (`core.commit_record`; with
    `records=False` a timestamp, as older versions wrote it), a released lease and a log),
    a quarter queued, the rest never started."""
    store = Store(prefix)
    nodes = [N(stage, uuid.uuid4().hex[:16]) for stage in STAGES for _ in range(per_stage)]

    def write(item: tuple[int, N]) -> None:
        i, node = item
        folder = store.node_path(node.stage, node.key)
        store.write_json(f"{folder}/node.json", {"stage": node.stage, "key": node.key})
        if i % 4 < 2:
            attempt: dict[str, Any] = {"id": "g1", "job_id": "1", "started": time.time()}
            update_state(store, folder, lambda state: start_attempt(state, attempt))
            state = update_state(store, folder, lambda state: finish_attempt(state, attempt, "done", None))
            store.write_json(f"{folder}/result.json", {"value": i})
            store.write_text(f"{folder}/lease/000001.json", "{}")
            store.write_text(f"{folder}/lease/000001.released", "1")
            store.write_text(f"{folder}/logs/rank0.log", "log\n")
            store.write_text(f"{folder}/{DONE}", done_marker(time.time(), state, {"value": i}) if records else "1\n")
        elif i % 4 == 2:
            store.write_json(f"{folder}/state.json", {"status": "queued", "attempts": []})

    in_parallel(write, list(enumerate(nodes)), 16)
    return nodes


def proxied(proxy: FaultProxy, prefix: str) -> Store:
    """The same root through the proxy (the endpoint as a filesystem argument: fsspec
    caches filesystems by their arguments)."""
    return Store(prefix, {"endpoint_url": proxy.url})


def counted(proxy: FaultProxy, store: Store, nodes: list[N]) -> tuple[dict[str, tuple[str, dict[str, Any]]], dict[str, int]]:
    proxy.reset_counts()
    snap = snapshot(store, "exp", nodes)
    return snap.statuses, dict(proxy.methods)


def test_status_requests_grow_with_stages_not_nodes(moto_env: dict[str, str]) -> None:
    small, big = 8, 40  # both below SHARD_ABOVE: one listing per stage
    assert big <= SHARD_ABOVE
    prefixes = {n: f"s3://xstilts-test/bulk-{uuid.uuid4().hex[:8]}" for n in (small, big)}
    grids = {n: write_grid(prefixes[n], n) for n in (small, big)}
    cold: dict[int, dict[str, int]] = {}
    warm: dict[int, dict[str, int]] = {}
    with fault_proxy(moto_env["AWS_ENDPOINT_URL"]) as proxy:
        for n in (small, big):
            store = proxied(proxy, prefixes[n])
            statuses, cold[n] = counted(proxy, store, grids[n])
            assert statuses == {node.key: node_status(store, store.node_path(node.stage, node.key))
                                for node in grids[n]}
            again, warm[n] = counted(proxy, store, grids[n])
            assert again == statuses
    for n in (small, big):
        done, queued = len(STAGES) * n // 2, len(STAGES) * n // 4
        # cold: a listing per stage, the (absent) index, the DONE record of each done
        # node, a state per queued one, the index written; never a HEAD before a GET
        assert cold[n] == {"LIST": len(STAGES), "GET": 1 + done + queued, "PUT": 1}
        # warm: the done nodes come from the index; only the queued states are read
        assert warm[n] == {"LIST": len(STAGES), "GET": 1 + queued}
    # a finished grid: the listings and the index, whatever its size
    for n in (small, big):
        store = Store(prefixes[n])
        for node in grids[n]:
            folder = store.node_path(node.stage, node.key)
            if store.read_json(f"{folder}/state.json") == {"status": "queued", "attempts": []}:
                store.remove(f"{folder}/state.json")  # back to never started
    with fault_proxy(moto_env["AWS_ENDPOINT_URL"]) as proxy:
        counts = {n: counted(proxy, proxied(proxy, prefixes[n]), grids[n])[1] for n in (small, big)}
    assert counts[small] == counts[big] == {"LIST": len(STAGES), "GET": 1}


def test_a_done_record_spares_the_file_reads_unless_a_file_changed_after_it(moto_env: dict[str, str]) -> None:
    """A DONE record stands in for state.json and result.json only while their ETags are
    the MD5s it recorded: a result.json rewritten after the commit with other bytes of the
    same size is read again. An older timestamp marker costs the two file reads, not three."""
    with_records = f"s3://xstilts-test/bulk-{uuid.uuid4().hex[:8]}"
    old_markers = f"s3://xstilts-test/bulk-{uuid.uuid4().hex[:8]}"
    nodes = {with_records: write_grid(with_records, 8), old_markers: write_grid(old_markers, 8, records=False)}
    done = len(STAGES) * 8 // 2
    with fault_proxy(moto_env["AWS_ENDPOINT_URL"]) as proxy:
        for prefix, per_done in ((with_records, 1), (old_markers, 2)):
            store = proxied(proxy, prefix)
            proxy.reset_counts()
            snap = snapshot(store, "exp", nodes[prefix], use_index=False)
            assert snap.reads == per_done * done + len(STAGES) * 8 // 4
            assert snap.statuses == {node.key: node_status(store, store.node_path(node.stage, node.key))
                                     for node in nodes[prefix]}
        store = proxied(proxy, with_records)
        rewritten = nodes[with_records][0]  # i = 0: done, result {"value": 0}
        path = f"{store.node_path(rewritten.stage, rewritten.key)}/result.json"
        before = store.fs.cat_file(path)
        store.write_bytes(path, before.replace(b"0", b"7"))  # same size, other bytes
        snap = snapshot(store, "exp", nodes[with_records], use_index=False)
        assert snap.results[rewritten.key] == {"value": 7}
        assert snap.reads == done + len(STAGES) * 8 // 4 + 2  # that node's files were read


def test_a_big_stage_is_listed_in_parallel_shards(moto_env: dict[str, str]) -> None:
    """Above SHARD_ABOVE nodes a stage is listed by key prefix (one listing per first
    character of its keys), and the statuses are the same."""
    prefix = f"s3://xstilts-test/bulk-{uuid.uuid4().hex[:8]}"
    nodes = write_grid(prefix, SHARD_ABOVE + 20)
    shards = sum(len({n.key[0] for n in nodes if n.stage == stage}) for stage in STAGES)
    assert shards > len(STAGES)
    with fault_proxy(moto_env["AWS_ENDPOINT_URL"]) as proxy:
        store = proxied(proxy, prefix)
        statuses, methods = counted(proxy, store, nodes)
        assert methods["LIST"] == shards
        assert statuses == {node.key: node_status(store, store.node_path(node.stage, node.key)) for node in nodes}


def test_the_bulk_view_rides_out_faults(moto_env: dict[str, str]) -> None:
    """503s and dropped connections on listings and reads are retried: the same statuses."""
    prefix = f"s3://xstilts-test/bulk-{uuid.uuid4().hex[:8]}"
    nodes = write_grid(prefix, 12)
    clean = snapshot(Store(prefix), "exp-clean", nodes, use_index=False).statuses
    with fault_proxy(moto_env["AWS_ENDPOINT_URL"], drop_rate=0.1, error_rate=0.1, seed=3) as proxy:
        proxy.force(ERROR, ERROR, where="list-type=")
        store = proxied(proxy, prefix)
        assert snapshot(store, "exp", nodes).statuses == clean
        assert snapshot(store, "exp", nodes).statuses == clean  # from the index written through faults
        assert proxy.faults > 2


def test_a_log_tail_is_one_ranged_get(moto_env: dict[str, str]) -> None:
    """`status` shows a failed node's log tail: on S3 a suffix-range GET, not the whole log."""
    prefix = f"s3://xstilts-test/bulk-{uuid.uuid4().hex[:8]}"
    Store(prefix).write_text(f"{prefix}/nodes/train/k/logs/1.log", "".join(f"step {i}\n" for i in range(200_000)) + "END\n")
    with fault_proxy(moto_env["AWS_ENDPOINT_URL"]) as proxy:
        store = proxied(proxy, prefix)
        proxy.reset_counts()
        tail = store.read_tail(f"{prefix}/nodes/train/k/logs/1.log", 1000)
        assert tail is not None and tail.endswith("step 199999\nEND\n") and len(tail) < 1000
        assert dict(proxy.methods) == {"GET": 1}
