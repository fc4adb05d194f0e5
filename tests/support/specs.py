"""Experiment specs for tests: the demo spec as a dict, dotted-path edits, extra tasks."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.support.paths import REPO

DEMO_SPEC = REPO / "experiments" / "demo.yaml"


def demo_raw() -> dict[str, Any]:
    return yaml.safe_load(DEMO_SPEC.read_text())


def set_path(raw: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = raw
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value


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
