"""The grid on s3:// storage, against a real S3 endpoint (moto in server mode on 127.0.0.1)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from xstilts.core.lease import Lease
from xstilts.core.store import FileExists, Store
from tests.support.grid import cli_env, run_cli, status_json, write_small_grid


@pytest.fixture
def s3_store(s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Store:
    for name, value in s3_env.items():
        monkeypatch.setenv(name, value)
    return Store(f"s3://xstilts-test/unit-{uuid.uuid4().hex[:8]}")


def test_atomic_writes_and_exclusive_create_on_s3(s3_store: Store, tmp_path: Path) -> None:
    path = s3_store.path("x", "state.json")
    s3_store.write_json(path, {"n": 1})
    assert s3_store.read_json(path) == {"n": 1}
    s3_store.create_exclusive(s3_store.path("x", "lease"), "a")
    with pytest.raises(FileExists):
        s3_store.create_exclusive(s3_store.path("x", "lease"), "b")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.txt").write_text("hello")
    s3_store.upload_dir(tmp_path / "d", s3_store.path("up"))
    assert (s3_store.local_dir(s3_store.path("up"), tmp_path / "cache") / "f.txt").read_text() == "hello"


def test_lease_is_exclusive_on_s3(s3_store: Store) -> None:
    node = s3_store.path("nodes", "evaluate", "abc")
    first, second = Lease(s3_store, node, {}), Lease(s3_store, node, {})
    assert first.acquire()
    assert not second.acquire()
    first.release()
    assert second.acquire()
    second.release()


def test_grid_runs_on_s3_storage(s3_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = f"s3://xstilts-test/grid-{uuid.uuid4().hex[:8]}"
    spec = write_small_grid(tmp_path, storage=prefix)
    env = cli_env({**s3_env, "XSTILTS_CACHE": str(tmp_path / "cache")})
    launched = run_cli("launch", str(spec), "--wait", env=env)
    assert launched.returncode == 0, launched.stdout + launched.stderr
    status = status_json(spec, env=env)
    assert status["counts"] == {"done": 8}
    for name, value in s3_env.items():
        monkeypatch.setenv(name, value)
    store = Store(prefix)
    assert store.exists(store.path("small", "spec.yaml"))
    evaluate = next(n for n in status["nodes"] if n["stage"] == "evaluate")
    result = store.read_json(store.node_path("evaluate", evaluate["key"], "result.json"))
    assert set(result["languages"]) == {"en", "qaa", "qab", "qac"}
    assert store.list(store.node_path("evaluate", evaluate["key"], "logs"))  # logs uploaded
    again = run_cli("launch", str(spec), "--wait", env=env)
    assert again.returncode == 0 and "submitted 0 nodes" in again.stdout
