"""The store on gs://, against a real GCS endpoint (fake-gcs-server on 127.0.0.1): atomic
writes, exclusive create by generation precondition, leases, the bulk listing, a small
grid launched and relaunched, and a missing bucket as one line."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

from xstilts.core.index import snapshot
from xstilts.core.lease import Lease, LeaseLost, current_lease, lease_paths
from xstilts.core.listing import SHARD_ABOVE, list_stage, list_stages
from xstilts.core.state import node_status
from xstilts.core.store import FileExists, Store
from tests.integration.s3.test_bulk_store import STAGES, write_grid
from tests.support.s3_fault_proxy import DROP_AFTER, DROP_BEFORE, ERROR, fault_proxy
from tests.support.grid import cli_env, run_cli, status_json, write_small_grid


@pytest.fixture
def gcs(gcs_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in gcs_env.items():
        monkeypatch.setenv(name, value)
    return gcs_env


@pytest.fixture
def gcs_store(gcs: dict[str, str]) -> Store:
    return Store(f"gs://xstilts-test/unit-{uuid.uuid4().hex[:8]}")


def test_atomic_writes_and_exclusive_create_on_gcs(gcs_store: Store, tmp_path: Path) -> None:
    path = gcs_store.path("x", "state.json")
    gcs_store.write_json(path, {"n": 1})
    assert gcs_store.read_json(path) == {"n": 1}
    gcs_store.write_json(path, {"n": 2})  # a rewrite replaces the whole object
    assert gcs_store.read_json(path) == {"n": 2}
    gcs_store.create_exclusive(gcs_store.path("x", "lease"), "a")
    with pytest.raises(FileExists):
        gcs_store.create_exclusive(gcs_store.path("x", "lease"), "b")
    assert gcs_store.read_text(gcs_store.path("x", "lease")) == "a"  # the loser wrote nothing
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "f.txt").write_text("hello")
    (tmp_path / "d" / "sub" / "g.txt").write_text("deep")
    gcs_store.upload_dir(tmp_path / "d", gcs_store.path("up"))
    local = gcs_store.local_dir(gcs_store.path("up"), tmp_path / "cache")
    assert (local / "f.txt").read_text() == "hello" and (local / "sub" / "g.txt").read_text() == "deep"
    assert gcs_store.list(gcs_store.path("up")) == ["f.txt", "sub"]
    long_log = gcs_store.path("logs", "1.log")
    gcs_store.write_text(long_log, "".join(f"step {i}\n" for i in range(20_000)) + "END\n")
    tail = gcs_store.read_tail(long_log, 100)
    assert tail is not None and tail.endswith("step 19999\nEND\n") and len(tail) < 100
    assert gcs_store.read_json(gcs_store.path("absent.json")) is None


def test_an_emulator_is_reached_anonymously(gcs_store: Store) -> None:
    """With STORAGE_EMULATOR_HOST set, gcsfs neither walks Google's credential chain (it
    ends at the GCE metadata server) nor asks the gRPC control API for bucket layouts:
    anonymous access through the JSON API, to the emulator on loopback only."""
    from gcsfs.core import GCSFileSystem

    assert type(gcs_store.fs) is GCSFileSystem
    assert gcs_store.fs.credentials.method == "anon"
    assert gcs_store.fs._location.startswith("http://127.0.0.1:")


def test_exclusive_create_has_one_winner_among_racing_writers(gcs_store: Store) -> None:
    """Writers released at once on the same name: exactly one creates it, every other
    gets FileExists (the upload carries ifGenerationMatch=0; a plain upload would let
    each of them overwrite the last)."""
    writers = 8
    for round_ in range(5):
        path = gcs_store.path("race", f"{round_}.json")
        start = threading.Barrier(writers)
        outcomes: dict[int, str] = {}

        def create(i: int, path: str = path, start: threading.Barrier = start,
                   outcomes: dict[int, str] = outcomes) -> None:
            start.wait()
            try:
                gcs_store.create_exclusive(path, f"writer {i}")
                outcomes[i] = "created"
            except FileExists:
                outcomes[i] = "exists"

        threads = [threading.Thread(target=create, args=(i,)) for i in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        winners = [i for i, outcome in outcomes.items() if outcome == "created"]
        assert len(outcomes) == writers and len(winners) == 1, outcomes
        assert gcs_store.read_text(path) == f"writer {winners[0]}"


def test_a_conditional_create_whose_reply_was_lost_is_still_ours(gcs: dict[str, str]) -> None:
    """The emulator applies the conditional upload but the reply is lost (connection
    reset): gcsfs sends it again, and GCS refuses it (412) since the object exists. The
    creator reads the object back and recognises its own content: created, not FileExists.
    Someone else's object behind the same lost reply stays FileExists."""
    prefix = f"gs://xstilts-test/lost-{uuid.uuid4().hex[:8]}"
    with fault_proxy(gcs["STORAGE_EMULATOR_HOST"]) as proxy:
        store = Store(prefix, {"endpoint_url": proxy.url})
        path = store.path("lease", "000001.json")
        proxy.force(DROP_AFTER, where="ifGenerationMatch=0")
        store.create_exclusive(path, "mine, token 1")
        assert proxy.dropped_after == 1
        assert store.read_text(path) == "mine, token 1"
        proxy.force(DROP_AFTER, where="ifGenerationMatch=0")
        with pytest.raises(FileExists):
            store.create_exclusive(path, "someone else, token 2")
        assert proxy.dropped_after == 2  # its retry met the object: 412, not ours
        assert store.read_text(path) == "mine, token 1"


def test_lease_is_exclusive_on_gcs(gcs_store: Store) -> None:
    node = gcs_store.path("nodes", "evaluate", "abc")
    first, second = Lease(gcs_store, node, {}), Lease(gcs_store, node, {})
    assert first.acquire()
    assert not second.acquire()
    first.release()
    assert second.acquire()
    assert current_lease(gcs_store, node).generation == 2  # type: ignore[union-attr]
    second.release()


def test_a_stale_lease_is_taken_over_once(gcs_store: Store) -> None:
    """A holder whose heartbeat is older than the TTL is taken over by exactly one of two
    contenders, and finds out at its next check."""
    node = gcs_store.path("nodes", "train", "stale")
    holder = Lease(gcs_store, node, {})
    assert holder.acquire()
    holder._stop.set()  # it stalls: no more heartbeats
    assert holder._thread is not None
    holder._thread.join()
    _, _, beat = lease_paths(node, 1)
    gcs_store.write_text(beat, str(time.time() - 3600))
    contenders = [Lease(gcs_store, node, {}), Lease(gcs_store, node, {})]
    won = [lease.acquire() for lease in contenders]
    assert won == [True, False]
    assert current_lease(gcs_store, node).generation == 2  # type: ignore[union-attr]
    with pytest.raises(LeaseLost):
        holder.check()
    contenders[0].release()


def test_the_stage_listing_on_gcs(gcs: dict[str, str]) -> None:
    """One listing per stage gives every node's files; a big stage is listed in shards by
    key prefix (GCS lists by prefix), with the same statuses as reading node by node; a
    DONE record spares the reads of state and result (the listed MD5s match it)."""
    prefix = f"gs://xstilts-test/bulk-{uuid.uuid4().hex[:8]}"
    nodes = write_grid(prefix, SHARD_ABOVE + 20)
    store = Store(prefix)
    assert store.lists_by_prefix
    train = {n.key for n in nodes if n.stage == "train"}
    listed = list_stage(store, "train")
    assert set(listed) == train  # every node has its node.json
    shard = sorted(train)[0][0]
    assert set(list_stage(store, "train", shard)) == {key for key in listed if key.startswith(shard)}
    sharded = list_stages(store, {stage: [n.key for n in nodes if n.stage == stage] for stage in STAGES})
    assert {key: files.files for (stage, key), files in sharded.items() if stage == "train"} == \
        {key: files.files for key, files in listed.items()}
    done = [files for files in listed.values() if files.committed]
    assert done and all(files.has("lease/000001.json") and files.log_names() == ["rank0.log"] for files in done)
    snap = snapshot(store, "exp", nodes, use_index=False)
    assert snap.statuses == {node.key: node_status(store, store.node_path(node.stage, node.key)) for node in nodes}
    queued = len(STAGES) * (SHARD_ABOVE + 20) // 4
    assert snap.reads == len(STAGES) * (SHARD_ABOVE + 20) // 2 + queued  # one read per done node: its DONE


def test_the_bulk_view_rides_out_faults_on_gcs(gcs: dict[str, str]) -> None:
    """503s and dropped connections (before and after the emulator acted) on listings,
    reads and the index write are retried by gcsfs: the same statuses."""
    prefix = f"gs://xstilts-test/bulk-{uuid.uuid4().hex[:8]}"
    nodes = write_grid(prefix, 12)
    clean = snapshot(Store(prefix), "exp-clean", nodes, use_index=False).statuses
    with fault_proxy(gcs["STORAGE_EMULATOR_HOST"], drop_rate=0.1, error_rate=0.1, seed=3) as proxy:
        proxy.force(ERROR, DROP_BEFORE, where="/o?")  # the first listing
        store = Store(prefix, {"endpoint_url": proxy.url})
        assert snapshot(store, "exp", nodes).statuses == clean
        assert snapshot(store, "exp", nodes).statuses == clean  # from the index written through faults
        assert proxy.faults > 2


def test_grid_runs_and_relaunches_on_gcs_storage(gcs: dict[str, str], tmp_path: Path) -> None:
    prefix = f"gs://xstilts-test/grid-{uuid.uuid4().hex[:8]}"
    spec = write_small_grid(tmp_path, storage=prefix)
    env = cli_env({**gcs, "XSTILTS_CACHE": str(tmp_path / "cache")})
    launched = run_cli("launch", str(spec), "--wait", env=env)
    assert launched.returncode == 0, launched.stdout + launched.stderr
    assert "Could not determine bucket type" not in launched.stderr  # the emulator's JSON-API filesystem
    status = status_json(spec, env=env)
    assert status["counts"] == {"done": 8}
    store = Store(prefix)
    assert store.exists(store.path("small", "spec.yaml"))
    evaluate = next(n for n in status["nodes"] if n["stage"] == "evaluate")
    result = store.read_json(store.node_path("evaluate", evaluate["key"], "result.json"))
    assert result is not None and set(result["languages"]) == {"en", "qaa", "qab", "qac"}
    logs = store.find(store.node_path("evaluate", evaluate["key"], "logs"))
    assert logs  # logs uploaded
    for log in logs:  # the node processes, too, reached the emulator through the JSON API only
        assert "bucket type" not in (store.read_text(log) or "")
    again = run_cli("launch", str(spec), "--wait", env=env)
    assert again.returncode == 0 and "submitted 0 nodes" in again.stdout


def test_a_missing_bucket_is_one_line(gcs: dict[str, str], tmp_path: Path) -> None:
    spec = write_small_grid(tmp_path, storage="gs://no-such-bucket-xstilts/grid")
    result = run_cli("status", str(spec), env=cli_env(gcs))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["error: storage: cannot reach gs://no-such-bucket-xstilts/grid: FileNotFoundError: "
                     "bucket 'no-such-bucket-xstilts' does not exist (or these credentials cannot see it)"], lines


def test_no_google_credentials_is_one_line(tmp_path: Path) -> None:
    """Google's own endpoint (no emulator) and no credentials anywhere (no key file, no
    gcloud configuration, not on GCE): one line before any request, not gcsfs's silent
    anonymous access retried against 401s."""
    spec = write_small_grid(tmp_path, storage="gs://some-bucket/grid")
    env = {name: value for name, value in cli_env().items()
           if name not in ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG")}
    env.update(HOME=str(tmp_path / "home"), CLOUDSDK_CONFIG=str(tmp_path / "gcloud"), NO_GCE_CHECK="true")
    result = run_cli("status", str(spec), env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(
        "error: storage: cannot reach gs://some-bucket/grid: PermissionError: no Google credentials found;"), lines
