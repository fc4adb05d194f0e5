"""Experiment specs for tests: the demo spec as a dict, dotted-path edits, extra tasks."""

from __future__ import annotations

from pathlib import Path
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


TINY_MODEL: dict[str, Any] = {
    "tiny": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 64, "max_position_embeddings": 130},
    "tokenizer_vocab_size": 400,
    "corpus_languages": ["en", "qaa"],
    "corpus_sentences_per_language": 200,
    "pretrain_steps": 0,
}
"""The smallest model that runs every task's head: no pretraining, a tiny tokenizer."""


def write_data_dir_spec(tmp: Path, name: str, intermediates: list[str], targets: list[str], data_dir: Path,
                        store: Path, hparams: dict[str, Any], mixtures: dict[str, list[str]] | None = None) -> Path:
    """A one-seed spec of real tasks read from `data_dir`, on `TINY_MODEL`, written to
    `<tmp>/<name>.yaml`."""
    raw = {
        "name": name,
        "model": TINY_MODEL,
        "intermediate": {"tasks": intermediates, "hparams": hparams, "mixtures": mixtures or {}},
        "target": {"tasks": targets, "hparams": hparams},
        "seeds": [1],
        "storage": str(store),
        "data_dir": str(data_dir),
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path
