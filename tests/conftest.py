"""Shared fixtures: offline Hugging Face, specs written into tmp dirs."""

from __future__ import annotations

import os
import shutil
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
# No credentials here: without this botocore probes the instance metadata address
# (169.254.169.254) before every S3 client, and traffic must stay on loopback.
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration/ starts real processes or services (local
    grids, torch.distributed groups, Ray, SLURM), and so does any test that takes the
    `s3_env` fixture (a moto server): mark them `integration`, so that
    `pytest -m "not integration"` is the fast, in-process suite."""
    for item in items:
        relative = Path(str(item.path)).resolve().relative_to(TESTS)
        if relative.parts[0] == "integration" or "s3_env" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


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


@pytest.fixture(scope="session")
def s3_env() -> Iterator[dict[str, str]]:
    """A real S3 endpoint: moto in server mode on loopback, with the test buckets.
    Yields the environment that points boto (and so s3fs) at it."""
    assert shutil.which("moto_server"), "moto_server is installed with the dev extra (moto[server])"
    from tests.moto import moto_server

    with moto_server(S3_BUCKETS) as env:
        yield env


def register_two_step_target(monkeypatch: pytest.MonkeyPatch) -> None:
    """A synthetic target trained XCOPA's way: first on `syn-first` (its own train-target
    node), then on itself with the head kept (`train_first`)."""
    from xstilts.core import tasks as registry
    from xstilts.core.tasks import DataSource, Task

    first = Task(name="syn-first", kind="classification", source=DataSource("synthetic", "syn-rate"),
                 languages=("en",), labels=("a", "b"), metric="accuracy", roles=("intermediate",))
    target = Task(name="syn-two-step", kind="classification", source=DataSource("synthetic", "syn-sent"),
                  languages=("en", "qaa"), labels=("negative", "positive"), metric="accuracy", roles=("target",),
                  train_first="syn-first")
    monkeypatch.setitem(registry.TASKS, first.name, first)
    monkeypatch.setitem(registry.TASKS, target.name, target)
