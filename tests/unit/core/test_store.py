"""Store and leases: atomic writes, exclusive creation, one holder at a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from xstilts.core.atomic import replacing
from xstilts.core.errors import UserError
from xstilts.core.lease import Lease, current_lease
from xstilts.core.state import node_status, record_submission, update_state
from xstilts.core.store import FileExists, Store, check_storage_url


@pytest.fixture(params=["file", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "file":
        return Store(str(tmp_path / "root"))
    return Store(f"memory://test-{uuid.uuid4().hex}")


def test_plain_paths_become_file_urls(tmp_path: Path) -> None:
    assert Store(str(tmp_path)).url == f"file://{tmp_path}"
    assert check_storage_url("relative/dir").startswith("file:///")


def test_unknown_scheme_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown storage scheme 'nosuch://'"):
        check_storage_url("nosuch://bucket/prefix")


def test_write_read_roundtrip_and_no_temporaries_left(store: Store) -> None:
    path = store.path("a", "b.json")
    store.write_json(path, {"x": 1})
    store.write_json(path, {"x": 2})
    assert store.read_json(path) == {"x": 2}
    assert store.list(store.path("a")) == ["b.json"]
    assert store.read_json(store.path("missing.json")) is None


def test_a_failed_local_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    """`replacing` (tables, figures, reports and the folder store use it): an error while
    writing leaves the previous content; the temporary keeps the suffix for savefig."""
    target = tmp_path / "out" / "table.csv"
    with replacing(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".csv" and tmp != target
        tmp.write_text("first\n")
    with pytest.raises(RuntimeError), replacing(target) as tmp:
        tmp.write_text("half of the seco")
        raise RuntimeError("the writer died")
    assert target.read_text() == "first\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["table.csv"]


def test_create_exclusive_refuses_second_writer(store: Store) -> None:
    path = store.path("lease", "000001.json")
    store.create_exclusive(path, "first")
    with pytest.raises(FileExists):
        store.create_exclusive(path, "second")
    assert store.read_text(path) == "first"


def test_upload_and_fetch_directory(store: Store, tmp_path: Path) -> None:
    local = tmp_path / "out"
    (local / "model").mkdir(parents=True)
    (local / "model" / "w.bin").write_bytes(b"\x00\x01" * 1000)
    (local / "metrics.jsonl").write_text("{}\n")
    store.upload_dir(local, store.path("node"))
    fetched = store.local_dir(store.path("node"), tmp_path / "cache")
    assert (fetched / "model" / "w.bin").read_bytes() == b"\x00\x01" * 1000
    assert (fetched / "metrics.jsonl").read_text() == "{}\n"


def test_only_one_lease_holder(store: Store) -> None:
    node = store.path("nodes", "train-target", "k1")
    first = Lease(store, node, {"job_id": "a"})
    second = Lease(store, node, {"job_id": "b"})
    assert first.acquire()
    assert not second.acquire()
    info = current_lease(store, node)
    assert info is not None and info.live() and info.owner["job_id"] == "a"
    first.release()
    assert second.acquire()
    assert current_lease(store, node).generation == 2
    second.release()


def test_stale_lease_is_taken_over(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    node = store.path("nodes", "evaluate", "k2")
    store.write_text(f"{node}/lease/000001.json", json.dumps({"host": "elsewhere", "created": time.time() - 1000}))
    store.write_text(f"{node}/lease/000001.heartbeat", repr(time.time() - 1000))
    lease = Lease(store, node, {"job_id": "new"})
    assert lease.acquire()
    assert lease.generation == 2
    lease.release()


def test_lease_of_dead_local_process_is_not_live(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    node = store.path("nodes", "evaluate", "k3")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    store.write_text(f"{node}/lease/000001.json", json.dumps({"host": os.uname().nodename, "pid": child.pid,
                                                              "created": time.time()}))
    info = current_lease(store, node)
    assert info is not None and not info.live()


def test_status_derivation(store: Store) -> None:
    node = store.path("nodes", "train-target", "k4")
    assert node_status(store, node)[0] == "pending"
    record_submission(store, node, "job-1", "local")
    status, state = node_status(store, node)
    assert status == "queued" and state["submissions"][0]["job_id"] == "job-1"
    update_state(store, node, lambda s: s.update(status="running"))
    assert node_status(store, node)[0] == "interrupted"  # running without a live lease
    lease = Lease(store, node, {})
    assert lease.acquire()
    assert node_status(store, node)[0] == "running"
    lease.release()
    store.write_text(f"{node}/DONE", "x")
    assert node_status(store, node)[0] == "interrupted"  # DONE, but no result.json: not done
    store.write_json(f"{node}/result.json", {"accuracy": 1.0})
    assert node_status(store, node)[0] == "done"


def test_read_tail_reads_only_the_end_of_a_long_file(store: Store) -> None:
    path = store.path("nodes", "x", "logs", "1.log")
    body = "".join(f"step {i} loss {i / 7:.6f}\n" for i in range(40_000))  # ~1 MB
    store.write_bytes(path, body.encode() + b"\xff broken byte\nlast line\n")
    tail = store.read_tail(path, 4096)
    assert tail is not None and tail.endswith("\ufffd broken byte\nlast line\n")
    assert len(tail) <= 4096 and tail.startswith("step ")  # the line cut by the range is dropped
    assert store.read_tail(store.path("short.log"), 4096) is None  # absent
    store.write_text(store.path("short.log"), "only line\n")
    assert store.read_tail(store.path("short.log"), 4096) == "only line\n"


@pytest.mark.parametrize("url", ["LOCAL", "memory://bucket/prefix/", "s3://bucket/prefix"])
def test_node_path_is_the_joined_path_without_parsing_it(url: str, tmp_path: Path) -> None:
    """`node_path` joins stage and key as they are (100k nodes ask for theirs); what it
    returns must stay what `path` gives for the same parts, with and without inner parts."""
    store = Store(str(tmp_path / "store") if url == "LOCAL" else url)
    for parts in [(), ("state.json",), ("lease", "000001.owner"), ("/logs/", "a.log")]:
        assert store.node_path("train-target", "0123abcd0123abcd", *parts) == \
            store.path("nodes", "train-target", "0123abcd0123abcd", *parts)
