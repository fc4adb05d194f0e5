"""Shared fixtures (specs written into tmp dirs, an S3 endpoint), the offline environment,
and the `integration` marker by path. Helpers that are not fixtures live in tests/support/."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from tests.support.paths import TESTS
from tests.support.specs import demo_raw, set_path

# No hub here: fail at once instead of retrying for half a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# No credentials here: without this botocore probes the instance metadata address
# (169.254.169.254) before every S3 client, and traffic must stay on loopback.
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
# Likewise google-auth (gcsfs's credentials) pings the GCE metadata server
# (169.254.169.254, metadata.google.internal) unless told it is not on GCE.
os.environ.setdefault("NO_GCE_CHECK", "true")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration/ starts real processes or services (local
    grids, torch.distributed groups, Ray, SLURM), and so does any test that takes the
    `s3_env` or `gcs_env` fixture (a moto or fake-gcs-server): mark them `integration`, so that
    `pytest -m "not integration"` is the fast, in-process suite."""
    for item in items:
        relative = Path(str(item.path)).resolve().relative_to(TESTS)
        fixtures = getattr(item, "fixturenames", ())
        if relative.parts[0] == "integration" or "s3_env" in fixtures or "gcs_env" in fixtures:
            item.add_marker(pytest.mark.integration)


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


@pytest.fixture(scope="session")
def s3_env() -> Iterator[dict[str, str]]:
    """A real S3 endpoint: moto in server mode on loopback, with the test buckets.
    Yields the environment that points boto (and so s3fs) at it."""
    assert shutil.which("moto_server"), "moto_server is installed with the dev extra (moto[server])"
    from tests.support.moto import moto_server

    with moto_server(S3_BUCKETS) as env:
        yield env


GCS_BUCKETS = ("xstilts-test",)


@pytest.fixture(scope="session")
def gcs_env() -> Iterator[dict[str, str]]:
    """A real GCS endpoint: fake-gcs-server (memory backend, plain HTTP) on loopback,
    with the test bucket. Yields the environment that points gcsfs at it."""
    from tests.support.gcs import fake_gcs_server

    with fake_gcs_server(GCS_BUCKETS) as env:
        yield env
