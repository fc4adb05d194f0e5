"""What the plan writes to node.json is fixed, for every shape a node config takes.

`tests/unit/core/test_golden_keys.py` pins the keys of the two shipped specs. This file pins the
whole record (`node.json`: stage, kind, config, inputs) and the key of plans that also
exercise what those specs leave out: `data_dir`, mixtures, an intermediate search, a
per_cell target search (with XCOPA's first fine-tuning: `first_of`, `continue_head`),
image tasks and a hub model. The records were taken from the plan of dict configs,
before node configs were typed; a typed config must serialise to exactly them, or every
finished node of every user's store would be orphaned.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from xstilts.core.plan import build_plan
from xstilts.core.spec import validate
from tests.support.paths import REPO

GOLDEN = REPO / "tests" / "data" / "golden_records"


def _spec(name: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / "experiments" / f"{name}.yaml").read_text())


def _paper_every_option() -> dict[str, Any]:
    raw = _spec("xtreme-r-multimodal")
    raw["data_dir"] = "/"  # exists everywhere and resolves to itself: the records stay portable
    raw["intermediate"]["tasks"] = ["none", "mnli", "coco-mcm", "coco-mcm-text", "mnli+qqp"]
    raw["intermediate"]["mixtures"] = {"mnli+qqp": ["mnli", "qqp"]}
    raw["intermediate"]["search"] = {"space": {"learning_rate": {"loguniform": [1e-6, 1e-4]}}, "trials": 3,
                                     "budget_epochs": 0.5}
    raw["target"]["tasks"] = ["xnli", "xcopa", "tatoeba"]
    for role in ("intermediate", "target"):
        raw[role]["per_task"] = {t: o for t, o in raw[role]["per_task"].items() if t in raw[role]["tasks"]}
    raw["target"]["search"]["scope"] = "per_cell"
    raw["target"]["search"]["space"]["batch_size"] = {"choice": [16, 32]}
    raw["seeds"] = [3, 1]
    return raw


def _demo_hub_model() -> dict[str, Any]:
    raw = _spec("demo")
    raw["model"] = {"name": "xlm-roberta-base"}
    raw["data_dir"] = "/"
    raw["target"]["search"] = {"space": {"weight_decay": {"grid": [0.0, 0.01]}}, "scheduler": "fifo",
                               "max_concurrent": 2}
    return raw


VARIANTS = {
    "demo": lambda: _spec("demo"),
    "paper-every-option": _paper_every_option,
    "demo-hub-model": _demo_hub_model,
}


def records(variant: str) -> list[dict[str, Any]]:
    plan = build_plan(validate(VARIANTS[variant]()))
    return sorted((node.record() for node in plan.nodes), key=lambda record: str(record["key"]))


def regenerate() -> None:
    """Rewrite the golden files (only after a deliberate KEY_VERSION bump)."""
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for variant in VARIANTS:
        (GOLDEN / f"{variant}.json").write_text(json.dumps(records(variant), indent=1, sort_keys=True) + "\n")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_node_records_match_the_golden_file(variant: str) -> None:
    expected = json.loads((GOLDEN / f"{variant}.json").read_text())
    actual = json.loads(json.dumps(records(variant), sort_keys=True))
    assert [r["key"] for r in actual] == [r["key"] for r in expected]
    for got, want in zip(actual, expected):
        assert got == want, f"node.json of {want['stage']} {want['key']} changed"
