"""`rerun_on_code_change`: chosen stages (and what is downstream of them) get new keys
when the code changes; other stages and the default keep theirs."""

from __future__ import annotations

from typing import Any

import pytest

from xstilts.core.errors import UserError
from xstilts.core.plan import Plan, build_plan
from xstilts.core.spec import validate
from tests.support.specs import demo_raw

OLD, NEW = "1a2b3c4d5e6f", "1a2b3c4d5e6f+dirty.ab12cd34"


def plan_with(option: Any, code: str) -> Plan:
    raw = demo_raw()
    if option is not None:
        raw["rerun_on_code_change"] = option
    return build_plan(validate(raw), code)


def keys_by_label(plan: Plan) -> dict[str, str]:
    keys = {node.label: node.key for node in plan.nodes}
    assert len(keys) == len(plan.nodes)  # labels name nodes uniquely in this spec
    return keys


def downstream_of(plan: Plan, stages: set[str]) -> set[str]:
    """Labels of nodes of `stages` and of every node that reads one of them, transitively."""
    changed: set[str] = set()
    for node in plan.nodes:  # dependency order: inputs first
        if node.stage in stages or any(dep.label in changed for dep in node.inputs.values()):
            changed.add(node.label)
    return changed


def test_the_default_ignores_the_code() -> None:
    assert keys_by_label(plan_with(None, OLD)) == keys_by_label(plan_with(None, NEW))
    assert keys_by_label(plan_with(False, OLD)) == keys_by_label(plan_with(None, OLD))  # false is the default


def test_chosen_stages_and_their_downstream_change_with_the_code() -> None:
    before, after = plan_with(["train-target"], OLD), plan_with(["train-target"], NEW)
    old, new = keys_by_label(before), keys_by_label(after)
    changed = {label for label in old if old[label] != new[label]}
    assert changed == downstream_of(before, {"train-target"})
    assert {before.by_key()[old[label]].stage for label in changed} == {"train-target", "evaluate"}
    untouched = [node for node in before.nodes if node.stage in ("prepare", "train-intermediate")]
    assert untouched and all(old[node.label] == new[node.label] for node in untouched)
    # the unchanged stages keep the keys they have without the option (finished nodes are reused)
    default = keys_by_label(plan_with(None, OLD))
    assert all(default[node.label] == old[node.label] for node in untouched)


def test_true_keys_every_stage_by_code() -> None:
    old, new = keys_by_label(plan_with(True, OLD)), keys_by_label(plan_with(True, NEW))
    assert all(old[label] != new[label] for label in old)


def test_a_wrong_stage_name_lists_the_valid_ones() -> None:
    with pytest.raises(UserError) as caught:
        plan_with(["train"], OLD)
    message = str(caught.value)
    assert "rerun_on_code_change" in message and "unknown stage 'train'" in message
    for stage in ("prepare", "tune", "train-intermediate", "train-target", "evaluate"):
        assert stage in message
    with pytest.raises(UserError, match="true, false or a list of stages"):
        plan_with("evaluate", OLD)
