"""Shared fixtures: offline Hugging Face, specs written into tmp dirs."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEMO_SPEC = REPO / "experiments" / "demo.yaml"

# No hub here: fail at once instead of retrying for half a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def demo_raw() -> dict[str, Any]:
    return yaml.safe_load(DEMO_SPEC.read_text())


def set_path(raw: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = raw
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[..., Path]:
    """Write a copy of the demo spec with changes (dotted keys) and its storage in tmp."""

    def write(name: str = "spec.yaml", raw: dict[str, Any] | None = None, **changes: Any) -> Path:
        data = raw if raw is not None else demo_raw()
        data.setdefault("storage", str(tmp_path / "store"))
        if raw is None:
            data["storage"] = str(tmp_path / "store")
        for dotted, value in changes.items():
            set_path(data, dotted.replace("__", "."), value)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


S3_BUCKETS = ("xstilts-test", "xstilts-ckpt")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_env() -> Iterator[dict[str, str]]:
    """A real S3 endpoint: moto in server mode on loopback, with the test buckets.
    Yields the environment that points boto (and so s3fs) at it."""
    server = shutil.which("moto_server")
    assert server, "moto_server is installed with the dev extra (moto[server])"
    port = _free_port()
    process = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.1)
    import boto3

    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    for bucket in S3_BUCKETS:
        client.create_bucket(Bucket=bucket)
    try:
        yield env
    finally:
        process.terminate()
        process.wait(timeout=10)
