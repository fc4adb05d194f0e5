"""S3 faults: latency, dropped connections and 503 replies from a proxy in front of moto
(tests/support/s3_fault_proxy.py). Retries are bounded (`XSTILTS_S3_MAX_ATTEMPTS`) and each
one is a WARNING line (xstilts.core.object_store); a grid through the faults finishes
with the results of a clean run."""

from __future__ import annotations

import http.client
import json
import logging
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from xstilts.core.object_store import MAX_ATTEMPTS_ENV, holds
from xstilts.core.lease import Lease
from xstilts.core.store import Store
from tests.support.faults import products
from tests.support.grid import cli_env, small_grid_raw, start_cli, status_json
from tests.support.s3_fault_proxy import DROP_AFTER, ERROR, FaultProxy, fault_proxy

RETRY_LINE = re.compile(r"S3 retry (\d+)/(\d+) after (.+) \((\w+) (\S+)\)")


@pytest.fixture
def moto_env(s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in s3_env.items():
        monkeypatch.setenv(name, value)
    return s3_env


def proxied_store(proxy: FaultProxy) -> Store:
    """A Store whose requests go through `proxy`. The endpoint is a filesystem argument,
    not AWS_ENDPOINT_URL: fsspec caches filesystems by their arguments, so a filesystem
    made for another test (straight to moto) is never reused here."""
    return Store(f"s3://xstilts-test/faults-{uuid.uuid4().hex[:8]}", {"endpoint_url": proxy.url})


def retry_lines(caplog: pytest.LogCaptureFixture) -> list[re.Match[str]]:
    return [m for r in caplog.records if r.name == "xstilts.storage" and (m := RETRY_LINE.match(r.getMessage()))]


def test_the_proxy_relays_s3_faithfully(moto_env: dict[str, str]) -> None:
    """Without faults the proxy is invisible: PUT, GET, HEAD (no body), listing,
    deleting, a multi-megabyte body and a chunked request body all pass through, over
    kept-alive connections."""
    with fault_proxy(moto_env["AWS_ENDPOINT_URL"]) as proxy:
        store = proxied_store(proxy)
        big = bytes(range(256)) * 12_000  # 3 MB
        store.write_bytes(store.path("big.bin"), big)
        with store.fs.open(store.path("streamed.bin"), "wb") as handle:
            handle.write(big)
        assert store.fs.cat_file(store.path("big.bin")) == big == store.fs.cat_file(store.path("streamed.bin"))
        assert store.fs.info(store.path("big.bin"))["size"] == len(big)  # HEAD: size without a body
        for i in range(20):
            store.write_json(store.path("small", f"{i}.json"), {"i": i})
        assert store.list(store.path("small")) == sorted(f"{i}.json" for i in range(20))
        assert store.read_json(store.path("small", "7.json")) == {"i": 7}
        store.remove(store.path("small"), recursive=True)
        assert not store.exists(store.path("small", "7.json"))
        raw = http.client.HTTPConnection("127.0.0.1", proxy.server_address[1], timeout=30)
        raw.request("PUT", f"/{store.path('chunked.txt')}", body=iter([b"chunked ", b"body"]), encode_chunked=True)
        assert raw.getresponse().status == 200
        raw.close()
        assert store.read_text(store.path("chunked.txt")) == "chunked body"
        counts = proxy.counts()
    assert counts["forwarded"] == counts["requests"] > 25 and proxy.faults == 0
    assert counts["connections"] < counts["requests"] / 2  # keep-alive works through the proxy


def test_each_retry_is_one_warning_line_and_the_write_succeeds(moto_env: dict[str, str],
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    with fault_proxy(moto_env["AWS_ENDPOINT_URL"]) as proxy, caplog.at_level(logging.WARNING, "xstilts.storage"):
        store = proxied_store(proxy)
        proxy.force(ERROR, ERROR, ERROR)
        store.write_text(store.path("state.json"), "{}")
        assert proxy.errors == 3 and proxy.requests == 4
        assert store.read_text(store.path("state.json")) == "{}"
    lines = retry_lines(caplog)
    assert [(int(m[1]), int(m[2])) for m in lines] == [(1, 7), (2, 7), (3, 7)]  # default: 8 attempts
    assert {m[3] for m in lines} <= {"503 SlowDown", "503 ServiceUnavailable"}
    assert {(m[4], m[5]) for m in lines} == {("PutObject", store.path("state.json"))}
    assert "testing" not in caplog.text  # the access key and secret never appear


def test_a_permanent_503_fails_after_exactly_the_configured_attempts(
        moto_env: dict[str, str], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MAX_ATTEMPTS_ENV, "3")
    with fault_proxy(moto_env["AWS_ENDPOINT_URL"], error_rate=1.0) as proxy, \
            caplog.at_level(logging.WARNING, "xstilts.storage"):
        store = proxied_store(proxy)
        with pytest.raises(OSError):
            store.write_text(store.path("state.json"), "{}")
        assert proxy.requests == proxy.errors == 3  # no other loop (s3fs's) sends it again
    assert [(int(m[1]), int(m[2])) for m in retry_lines(caplog)] == [(1, 2), (2, 2)]
    assert "S3 gave up after 3 attempts" in caplog.text


def test_a_lease_whose_creation_reply_was_lost_is_still_taken(moto_env: dict[str, str]) -> None:
    """The nasty case: the store created the lease object but the reply was lost, so the
    request is sent again (by aiohttp at once, PUT being idempotent, or by botocore) and
    answered 412 PreconditionFailed. The lease is this process's all the same."""
    with fault_proxy(moto_env["AWS_ENDPOINT_URL"]) as proxy:
        store = proxied_store(proxy)
        node = store.path("nodes", "evaluate", "abc")
        proxy.force(DROP_AFTER, where="/lease/000001.json")
        lease = Lease(store, node, {"job_id": "test"})
        taken = lease.acquire()
        assert [(fate, method) for fate, method, _ in proxy.injected] == [(DROP_AFTER, "PUT")]
        created = f"{node}/lease/000001.json"
        assert holds(store.fs, created, json.dumps(lease.owner).encode())  # what the fix can tell by
        assert taken
        lease.release()


# -- a grid through the faults ---------------------------------------------------------------

def differences(got: Any, want: Any, where: str = "") -> list[str]:
    """Where `got` and `want` differ (exactly), as readable lines."""
    if isinstance(got, dict) and isinstance(want, dict):
        return [d for k in sorted(set(got) | set(want), key=str)
                for d in differences(got.get(k), want.get(k), f"{where}/{k}")]
    if isinstance(got, list) and isinstance(want, list) and len(got) == len(want):
        return [d for i, (g, w) in enumerate(zip(got, want)) for d in differences(g, w, f"{where}[{i}]")]
    return [] if got == want else [f"{where}: {str(got)[:80]} != {str(want)[:80]}"]


def node_results(prefix: str) -> dict[str, dict[str, Any]]:
    """'stage/key' -> what each node produced (`tests.support.faults.products`: JSON
    without timing fields, everything else as bytes; run records left out)."""
    store = Store(prefix)
    nodes = store.path("nodes")
    return {f"{stage}/{key}": products(store, f"{nodes}/{stage}/{key}")
            for stage in store.list(nodes) for key in store.list(f"{nodes}/{stage}")}


class Grid:
    """The small grid (with DCP checkpoints, so that torch's own S3 filesystem meets the
    faults too), launched on a fresh prefix with requests going to `endpoint`."""

    def __init__(self, tmp_path: Path, name: str, endpoint: str, s3_env: dict[str, str]) -> None:
        self.prefix = f"s3://xstilts-test/{name}-{uuid.uuid4().hex[:8]}"
        raw = small_grid_raw(self.prefix)
        raw["checkpointing"] = {"every_steps": 4}
        self.spec = tmp_path / name / "small.yaml"
        self.spec.parent.mkdir()
        self.spec.write_text(yaml.safe_dump(raw, sort_keys=False))
        self.cache = tmp_path / name / "cache"
        self.env = cli_env({**s3_env, "AWS_ENDPOINT_URL": endpoint, "XSTILTS_CACHE": str(self.cache)})
        self.process = start_cli("launch", str(self.spec), "--wait", env=self.env)

    def finish(self) -> str:
        """Wait for the launch; every line the launcher and its node processes logged."""
        output, _ = self.process.communicate(timeout=600)
        logged = output + "".join(p.read_text() for p in sorted(self.cache.rglob("*.log")))
        assert self.process.returncode == 0, logged
        assert status_json(self.spec, env=self.env)["counts"] == {"done": 8}
        return logged


def test_a_grid_through_s3_faults_gives_the_results_of_a_clean_run(
        moto_env: dict[str, str], tmp_path: Path) -> None:
    """Done when (issue 16): latency 50 ms, 2% dropped connections, 1% HTTP 503. The clean
    run goes straight to moto at the same time: the faulty one mostly waits."""
    with fault_proxy(moto_env["AWS_ENDPOINT_URL"], latency_s=0.05, drop_rate=0.02, error_rate=0.01, seed=16) as proxy:
        faulty = Grid(tmp_path, "faulty", proxy.url, moto_env)
        clean = Grid(tmp_path, "clean", moto_env["AWS_ENDPOINT_URL"], moto_env)
        clean.finish()
        logged = faulty.finish()
        counts = proxy.counts()
    print("fault proxy:", counts, "e.g.", proxy.injected[:5])  # shown with -s or on failure
    retries = RETRY_LINE.findall(logged)
    print(f"{len(retries)} retry lines, e.g.", retries[:3])
    assert counts["dropped_before"] > 0 and counts["dropped_after"] > 0 and counts["errors"] > 0
    assert retries and all(int(n) <= int(bound) for n, bound, *_ in retries)
    expected = node_results(clean.prefix)
    assert len(expected) == 8
    saved = {p.split("/checkpoints/")[0] for p in Store(faulty.prefix).fs.find(faulty.prefix)
             if "/checkpoints/" in p and p.endswith("/.metadata")}
    assert len(saved) == 3  # each training node checkpointed through the faults (torch's S3 filesystem)
    unequal = differences(node_results(faulty.prefix), expected)
    assert not unequal, "\n".join(unequal)
