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


def _payload_key(node: object) -> str:
    """A key as it was computed before `_key_of` wrote the payload field by field: the
    canonical encoding of the whole payload dict."""
    from xstilts.core.plan import KEY_LENGTH, KEY_VERSION, _canonical

    payload = {"v": KEY_VERSION, "stage": node.stage, "kind": node.kind,  # type: ignore[attr-defined]
               "config": node.config.as_json(),  # type: ignore[attr-defined]
               "inputs": {name: dep.key for name, dep in sorted(node.inputs.items())}}  # type: ignore[attr-defined]
    if node.code is not None:  # type: ignore[attr-defined]
        payload["code"] = node.code  # type: ignore[attr-defined]
    return hashlib.sha256(_canonical(payload).encode()).hexdigest()[:KEY_LENGTH]


def test_keys_written_field_by_field_equal_the_encoded_payload_on_every_option() -> None:
    """Every node of the option-rich specs of `test_node_records` (tiny and hub models,
    vision, mixtures, both search scopes, data_dir signatures) and of the generated grid."""
    from tests.unit.core.test_node_records import VARIANTS
    from xstilts.core.spec import validate

    plans = [build_plan(validate(make())) for make in VARIANTS.values()]
    spec = load_spec(str(REPO / "experiments" / "xtreme-r-multimodal.yaml"), OVERRIDES)
    plans.append(build_plan(spec, code_version=CODE_VERSION))
    nodes = [node for plan in plans for node in plan.nodes]
    assert len({node.stage for node in nodes}) == 5 and any(node.code for node in nodes)
    assert [node.key for node in nodes] == [_payload_key(node) for node in nodes]
