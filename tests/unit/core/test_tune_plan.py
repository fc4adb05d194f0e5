"""Planning hyperparameter searches: scope per_task (one `tune` node per task) and
per_cell (one per intermediate x target cell, on the cell's upstream encoder), the
dependency order of the plan, and the SLURM arrays of a per_cell plan."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from xstilts.launcher import slurm
from xstilts.core.errors import UserError
from xstilts.core.plan import Node, Plan, build_plan
from xstilts.core.spec import STAGES, validate
from tests.support.specs import demo_raw, register_two_step_target

INTERMEDIATES = ["none", "syn-rate"]
TARGETS = ["syn-sent", "syn-pos"]
SEEDS = [2, 1]  # not sorted: the search runs on the upstream of the *first listed* seed


def search_spec(scope: str | None = "per_cell", intermediates: list[str] = INTERMEDIATES) -> dict[str, Any]:
    """The demo grid with a target search of `scope` (None: no search)."""
    raw = demo_raw()
    raw["intermediate"]["tasks"] = list(intermediates)
    raw["target"]["tasks"] = list(TARGETS)
    raw["seeds"] = list(SEEDS)
    if scope is not None:
        raw["target"]["search"] = {"space": {"learning_rate": {"grid": [1e-3, 1e-4]}}, "scope": scope}
    return raw


def _stage(plan: Plan, stage: str) -> list[Node]:
    return [node for node in plan.nodes if node.stage == stage]


def _model(plan: Plan) -> Node:
    return next(node for node in plan.nodes if node.kind == "model")


def _assert_dependency_order(plan: Plan) -> None:
    seen: set[str] = set()
    for node in plan.nodes:
        missing = [dep.label for dep in node.inputs.values() if dep.key not in seen]
        assert not missing, f"{node.label} comes before its inputs {missing}"
        seen.add(node.key)


def test_per_cell_searches_once_per_cell_on_the_first_seeds_upstream() -> None:
    plan = build_plan(validate(search_spec()))
    tunes = {(node.intermediate, node.task): node for node in _stage(plan, "tune")}
    assert len(_stage(plan, "tune")) == len(tunes) == len(INTERMEDIATES) * len(TARGETS)
    assert set(tunes) == set(itertools.product(INTERMEDIATES, TARGETS))
    model = _model(plan)
    intermediate_of = {(n.task, n.seed): n for n in _stage(plan, "train-intermediate")}
    for (intermediate, target), tune in tunes.items():
        expected = model if intermediate == "none" else intermediate_of[(intermediate, SEEDS[0])]
        assert tune.inputs["init"] is expected, tune.label
        assert tune.inputs["model"] is model and tune.inputs["data"].task == target
        assert tune.config.intermediate == intermediate and tune.config.search.scope == "per_cell"
        assert tune.seed is None and "continue_head" not in tune.config.as_json()
        assert tune.label == f"tune {intermediate}->{target}"
    trainings = _stage(plan, "train-target")
    assert len(trainings) == len(INTERMEDIATES) * len(TARGETS) * len(SEEDS)
    for train in trainings:  # every seed of a cell uses the search of its own cell
        assert train.inputs["tune"] is tunes[(train.intermediate, train.task)], train.label


def test_per_cell_plan_is_in_dependency_order() -> None:
    plan = build_plan(validate(search_spec()))
    _assert_dependency_order(plan)
    position = {node.key: i for i, node in enumerate(plan.nodes)}
    searched_after_training = [
        tune for tune in _stage(plan, "tune") if tune.inputs["init"].stage == "train-intermediate"
    ]
    assert searched_after_training  # what a plain sort by stage would put first
    for tune in searched_after_training:
        assert position[tune.inputs["init"].key] < position[tune.key]


@pytest.mark.parametrize("scope", [None, "per_task"])
def test_plans_without_per_cell_keep_the_stage_order(scope: str | None) -> None:
    plan = build_plan(validate(search_spec(scope, intermediates=["none", "syn-rate", "syn-chunk"])))
    rank = {stage: i for i, stage in enumerate(STAGES)}
    assert plan.nodes == sorted(plan.nodes, key=lambda node: rank[node.stage])
    # within a stage, the build order: target x intermediate x seed
    cells = [(n.task, n.intermediate, n.seed) for n in plan.evaluations()]
    assert cells == list(itertools.product(TARGETS, ["none", "syn-rate", "syn-chunk"], SEEDS))
    _assert_dependency_order(plan)


def test_per_task_search_is_one_node_per_task_on_the_pretrained_encoder() -> None:
    per_task = build_plan(validate(search_spec("per_task")))
    tunes = _stage(per_task, "tune")
    assert [n.task for n in tunes] == TARGETS
    assert all(set(n.inputs) == {"model", "data"} and n.intermediate is None for n in tunes)
    assert all(n.label == f"tune {n.task}" for n in tunes)
    per_cell = build_plan(validate(search_spec("per_cell")))

    def keys(plan: Plan, stage: str) -> list[str]:
        return [n.key for n in _stage(plan, stage)]

    # the scope changes the searches and what depends on them, nothing upstream
    for stage in ("prepare", "train-intermediate"):
        assert keys(per_task, stage) == keys(per_cell, stage)
    assert not set(keys(per_task, "train-target")) & set(keys(per_cell, "train-target"))


def test_per_cell_with_a_mixture_searches_on_the_mixtures_checkpoint() -> None:
    raw = search_spec(intermediates=["none", "rate+chunk"])
    raw["intermediate"]["mixtures"] = {"rate+chunk": ["syn-rate", "syn-chunk"]}
    plan = build_plan(validate(raw))
    mixture = next(n for n in _stage(plan, "train-intermediate") if n.seed == SEEDS[0])
    assert mixture.task == "rate+chunk"
    mixed = [n for n in _stage(plan, "tune") if n.intermediate == "rate+chunk"]
    assert [n.task for n in mixed] == TARGETS and all(n.inputs["init"] is mixture for n in mixed)
    _assert_dependency_order(plan)


def test_per_cell_with_a_first_fine_tuning_searches_on_it_with_its_head(monkeypatch: pytest.MonkeyPatch) -> None:
    """XCOPA's recipe: the cell's search starts where its training starts, from the first
    seed's first fine-tuning (SIQA), continuing that head."""
    register_two_step_target(monkeypatch)
    raw = search_spec()
    raw["target"]["tasks"] = ["syn-two-step"]
    plan = build_plan(validate(raw))
    firsts = {(n.intermediate, n.seed): n for n in _stage(plan, "train-target") if n.task == "syn-first"}
    tunes = _stage(plan, "tune")
    assert len(tunes) == len(INTERMEDIATES)
    for tune in tunes:
        assert tune.inputs["init"] is firsts[(tune.intermediate, SEEDS[0])], tune.label
        assert tune.config.continue_head is True
    for train in (n for n in _stage(plan, "train-target") if n.task == "syn-two-step"):
        assert train.inputs["tune"].intermediate == train.intermediate
        assert train.inputs["init"] is firsts[(train.intermediate, train.seed)]
    _assert_dependency_order(plan)


def test_per_cell_is_for_target_searches_only() -> None:
    raw = search_spec("per_task")
    raw["intermediate"]["search"] = {"space": {"learning_rate": {"grid": [1e-3]}}, "scope": "per_cell"}
    with pytest.raises(UserError) as caught:
        validate(raw)
    message = str(caught.value)
    assert "intermediate.search.scope" in message and "per_task" in message
    raw["intermediate"]["search"]["scope"] = "per_task"
    assert validate(raw).intermediate.search.scope == "per_task"  # type: ignore[union-attr]


def test_unknown_scope_lists_the_valid_ones() -> None:
    with pytest.raises(UserError) as caught:
        validate(search_spec("per_seed"))
    message = str(caught.value)
    assert "target.search.scope" in message and "per_seed" in message
    assert "'per_task'" in message and "'per_cell'" in message


def test_slurm_arrays_start_each_cell_search_after_its_intermediate_training() -> None:
    plan = build_plan(validate(search_spec()))
    arrays = slurm.plan_arrays(plan.nodes, {}, size=1000)
    assert sum(len(a.nodes) for a in arrays) == len(plan.nodes)
    array_of = {node.key: array for array in arrays for node in array.nodes}
    for array in arrays:  # every input is in an earlier array, which this one waits for
        for node in array.nodes:
            for dep in node.inputs.values():
                upstream = array_of[dep.key]
                assert upstream.index < array.index and upstream.index in array.after, node.label
                assert upstream.wave < array.wave
    for tune in _stage(plan, "tune"):
        init = array_of[tune.inputs["init"].key]
        if tune.intermediate == "none":
            assert init.stage == "prepare"
        else:
            assert init.stage == "train-intermediate" and init.index in array_of[tune.key].after
    # the searches on the pretrained encoder do not wait for any intermediate training
    baseline = {array_of[n.key].index for n in _stage(plan, "tune") if n.intermediate == "none"}
    assert all(arrays[i].stage == "tune" and all(arrays[j].stage == "prepare" for j in arrays[i].after)
               for i in baseline)


def test_batch_size_is_searched_over_integers_only() -> None:
    from pathlib import Path

    from tests.support.tune import search_spec

    raw = search_spec(Path("/tmp/unused"))
    raw["target"]["search"]["space"] = {"batch_size": {"loguniform": [8, 64]}}
    with pytest.raises(UserError, match="batch_size is searched over a grid or choice of positive integers"):
        validate(raw)
    raw["target"]["search"]["space"] = {"batch_size": {"grid": [8, 12.5]}}
    with pytest.raises(UserError, match="positive integers"):
        validate(raw)
    raw["target"]["search"]["space"] = {"epochs": {"grid": [1, 2]}}
    with pytest.raises(UserError, match="searchable: batch_size, learning_rate, warmup_ratio, weight_decay"):
        validate(raw)


@pytest.mark.parametrize("scope", ["per_cell", "per_task", None])
def test_the_stage_sort_shortcut_gives_kahns_order(scope: str | None) -> None:
    """`_dependency_order` returns the stage sort when it is a dependency order (one pass:
    a 100k-node plan) and Kahn's order otherwise; both must be exactly what Kahn's
    algorithm gives, so that no plan's order (and no array of a SLURM launch) changes."""
    from xstilts.core.plan import _dependency_order, _inputs_first, _kahn_order

    nodes = build_plan(validate(search_spec(scope))).nodes
    shuffled = sorted(nodes, key=lambda node: node.key)  # any build order: the plan's own is already sorted
    for order in (list(nodes), shuffled):
        assert _dependency_order(order) == _kahn_order(order)
    assert _inputs_first(sorted(nodes, key=lambda node: STAGES.index(node.stage))) == (scope != "per_cell")
