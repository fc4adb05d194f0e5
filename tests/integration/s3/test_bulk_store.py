"""The store's bulk view on S3 (moto behind the counting proxy): the requests of a status
grow with the stages, not the nodes; a done grid costs its listings and one read of the
done index; no read asks for a HEAD first; faults on the way change nothing."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

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


def write_grid(prefix: str, per_stage: int) -> list[N]:
    """Nodes as jobs leave them, straight to moto: half of each stage done (state with an
    attempt, result.json, DONE last, a released lease and a log), a quarter queued, the
    rest never started."""
    store = Store(prefix)
    nodes = [N(stage, uuid.uuid4().hex[:16]) for stage in STAGES for _ in range(per_stage)]

    def write(item: tuple[int, N]) -> None:
        i, node = item
        folder = store.node_path(node.stage, node.key)
        store.write_json(f"{folder}/node.json", {"stage": node.stage, "key": node.key})
        if i % 4 < 2:
            attempt: dict[str, Any] = {"id": "g1", "job_id": "1", "started": time.time()}
            update_state(store, folder, lambda state: start_attempt(state, attempt))
            update_state(store, folder, lambda state: finish_attempt(state, attempt, "done", None))
            store.write_json(f"{folder}/result.json", {"value": i})
            store.write_text(f"{folder}/lease/000001.json", "{}")
            store.write_text(f"{folder}/lease/000001.released", "1")
            store.write_text(f"{folder}/logs/rank0.log", "log\n")
            store.write_text(f"{folder}/{DONE}", "1\n")
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
        # cold: a listing per stage, the (absent) index, a state and a result per done
        # node, a state per queued one, the index written; never a HEAD before a GET
        assert cold[n] == {"LIST": len(STAGES), "GET": 1 + 2 * done + queued, "PUT": 1}
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
