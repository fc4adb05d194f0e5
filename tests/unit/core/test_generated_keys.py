"""Keys of a generated grid at scale stay byte-identical: existing stores are keyed by them.

The golden files of `test_golden_keys` and `test_node_records` pin the shipped specs and
specs with every option; this pins a generated grid the size of a real sweep (the paper
spec with twelve seeds, a pinned hub revision and code-keyed training: ~5k nodes), so that
a faster way of hashing (`core.plan._key_of`) is held to the same bytes on every node, not
only on a few hundred. The digest covers every `key label` line, sorted.
"""

from __future__ import annotations

import hashlib

from xstilts.core.plan import build_plan
from xstilts.core.spec import load_spec
from tests.support.paths import REPO

OVERRIDES = [f"seeds={list(range(1, 13))}".replace(" ", ""), "data_revision={mnli: 0123abcd}",
             "rerun_on_code_change=[train-intermediate]"]
CODE_VERSION = "0123456789abcdef0123456789abcdef01234567"
NODES = 5_070
DIGEST = "65e92289311af0d661ca19500087e949f9e15f65e0244dc0f8d213ba66189bf8"


def keyed_lines() -> list[str]:
    spec = load_spec(str(REPO / "experiments" / "xtreme-r-multimodal.yaml"), OVERRIDES)
    plan = build_plan(spec, code_version=CODE_VERSION)
    return sorted(f"{node.key} {node.label}" for node in plan.nodes)


def test_keys_of_a_generated_grid_are_unchanged() -> None:
    lines = keyed_lines()
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    assert (len(lines), digest) == (NODES, DIGEST)
