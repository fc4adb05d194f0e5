"""Node keys of the shipped specs are fixed: a refactor that changes one silently
invalidates every finished node of every user's store.

The golden files list `key label` for every node of `experiments/<name>.yaml`. A
deliberate change of meaning bumps `KEY_VERSION` and regenerates them (see
`regenerate` below); an accidental one fails here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xstilts.core.plan import build_plan
from xstilts.core.spec import load_spec
from tests.support.paths import REPO

GOLDEN = REPO / "tests" / "data" / "golden_keys"
SPECS = sorted((REPO / "experiments").glob("*.yaml"))


def keyed_labels(spec_path: Path) -> list[str]:
    plan = build_plan(load_spec(str(spec_path), []))
    return sorted(f"{node.key} {node.label}" for node in plan.nodes)


def regenerate() -> None:
    """Rewrite the golden files (only after a deliberate KEY_VERSION bump)."""
    for spec_path in SPECS:
        (GOLDEN / f"{spec_path.stem}.json").write_text(json.dumps(keyed_labels(spec_path), indent=0) + "\n")


def test_both_shipped_specs_have_golden_keys() -> None:
    assert {p.stem for p in SPECS} == {p.stem for p in GOLDEN.glob("*.json")} == {"demo", "xtreme-r-multimodal"}


@pytest.mark.parametrize("spec_path", SPECS, ids=lambda p: p.stem)
def test_node_keys_match_the_golden_file(spec_path: Path) -> None:
    expected = json.loads((GOLDEN / f"{spec_path.stem}.json").read_text())
    actual = keyed_labels(spec_path)
    missing, extra = sorted(set(expected) - set(actual)), sorted(set(actual) - set(expected))
    assert not missing and not extra, f"keys changed: {len(missing)} gone (e.g. {missing[:3]}), {len(extra)} new (e.g. {extra[:3]})"
