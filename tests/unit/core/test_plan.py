"""The plan: matrix expansion, content keys, and what a change invalidates."""

from __future__ import annotations

from collections import Counter

from xstilts.core import tasks as registry
from xstilts.core.tasks import TASKS, DataSource, Task
from xstilts.core.plan import build_plan
from xstilts.core.spec import load_spec, validate
from tests.support.specs import DEMO_SPEC, demo_raw, register_two_step_target


def test_counts_match_the_matrix() -> None:
    spec = load_spec(DEMO_SPEC)
    plan = build_plan(spec)
    inter = [t for t in spec.intermediate.tasks if t != "none"]
    n_int, n_tgt, n_seed = len(spec.intermediate.tasks), len(spec.target.tasks), len(spec.seeds)
    caption_sets = {TASKS[t].source.name for t in inter if TASKS[t].kind == "image_text"}
    assert caption_sets == {"syn-shapes"}
    assert plan.counts() == {
        "prepare": 1 + len(caption_sets) + len(inter) + n_tgt,  # the model, image features, one data node per task
        "train-intermediate": len(inter) * n_seed,
        "train-target": n_int * n_tgt * n_seed,
        "evaluate": n_int * n_tgt * n_seed,
    }
    assert len({n.key for n in plan.nodes}) == len(plan.nodes)


def test_inputs_come_before_their_users() -> None:
    plan = build_plan(load_spec(DEMO_SPEC))
    seen: set[str] = set()
    for node in plan.nodes:
        assert all(dep.key in seen for dep in node.inputs.values()), node.label
        seen.add(node.key)


def test_baseline_trains_nothing_at_the_intermediate_stage() -> None:
    plan = build_plan(load_spec(DEMO_SPEC))
    model = next(n for n in plan.nodes if n.kind == "model")
    baseline_targets = [n for n in plan.nodes if n.stage == "train-target" and n.intermediate == "none"]
    assert baseline_targets and all(n.inputs["init"] is model for n in baseline_targets)
    assert not [n for n in plan.nodes if n.stage == "train-intermediate" and n.task == "none"]


def test_intermediate_checkpoint_is_shared_by_every_target() -> None:
    plan = build_plan(load_spec(DEMO_SPEC))
    users = Counter(
        n.inputs["init"].key for n in plan.nodes if n.stage == "train-target" and n.intermediate != "none"
    )
    assert set(users.values()) == {2}  # two targets per (intermediate, seed)


def test_target_hyperparameter_changes_only_target_and_evaluate_keys() -> None:
    before = {n.label: n.key for n in build_plan(load_spec(DEMO_SPEC)).nodes}
    after = {n.label: n.key for n in build_plan(load_spec(DEMO_SPEC, ["target.hparams.learning_rate=0.0005"])).nodes}
    assert before.keys() == after.keys()
    changed = {label.split()[0] for label in before if before[label] != after[label]}
    unchanged = {label.split()[0] for label in before if before[label] == after[label]}
    assert changed == {"train-target", "evaluate"}
    assert "train-target" not in unchanged and "evaluate" not in unchanged


def test_per_task_override_changes_only_that_task() -> None:
    before = {n.label: n.key for n in build_plan(load_spec(DEMO_SPEC)).nodes}
    after = {n.label: n.key for n in build_plan(load_spec(DEMO_SPEC, ["target.per_task.syn-pos.epochs=2"])).nodes}
    changed = [label for label in before if before[label] != after[label]]
    assert changed and all("syn-pos" in label for label in changed)


def test_keys_are_stable_across_runs() -> None:
    first = [n.key for n in build_plan(load_spec(DEMO_SPEC)).nodes]
    second = [n.key for n in build_plan(load_spec(DEMO_SPEC)).nodes]
    assert first == second


def test_extra_seed_adds_cells_and_keeps_old_keys() -> None:
    small = {n.key for n in build_plan(load_spec(DEMO_SPEC)).nodes}
    big = {n.key for n in build_plan(load_spec(DEMO_SPEC, ["seeds=[1, 2, 3]"])).nodes}
    assert small < big


def test_retrieval_targets_evaluate_straight_from_the_intermediate_encoder(monkeypatch) -> None:
    retrieval = Task(
        name="syn-retrieval", kind="retrieval", source=DataSource("synthetic", "syn-retrieval"),
        languages=("en", "qaa"), labels=(), metric="accuracy", roles=("target",),
    )
    monkeypatch.setitem(registry.TASKS, retrieval.name, retrieval)
    raw = demo_raw()
    raw["target"]["tasks"] = ["syn-retrieval"]
    plan = build_plan(validate(raw))
    assert "train-target" not in plan.counts()
    model = next(n for n in plan.nodes if n.kind == "model")
    for node in plan.evaluations():
        upstream = node.inputs["model"]
        if node.intermediate == "none":
            assert upstream is model
        else:
            assert upstream.stage == "train-intermediate" and upstream.task == node.intermediate


def test_mixture_trains_once_per_seed_on_every_member() -> None:
    raw = demo_raw()
    raw["intermediate"]["mixtures"] = {"rate+chunk": ["syn-rate", "syn-chunk"]}
    raw["intermediate"]["tasks"] = ["none", "rate+chunk"]
    plan = build_plan(validate(raw))
    mixtures = [n for n in plan.nodes if n.stage == "train-intermediate"]
    assert [n.task for n in mixtures] == ["rate+chunk", "rate+chunk"]  # two seeds
    node = mixtures[0]
    assert node.config.mixture == ["syn-rate", "syn-chunk"]
    assert {name: dep.task for name, dep in node.inputs.items() if name != "model"} == {
        "data.syn-rate": "syn-rate", "data.syn-chunk": "syn-chunk"}
    targets = [n for n in plan.nodes if n.stage == "train-target" and n.intermediate == "rate+chunk"]
    assert targets and all(n.inputs["init"].task == "rate+chunk" for n in targets)


def test_mixture_errors_name_the_problem() -> None:
    import pytest

    from xstilts.core.errors import UserError

    raw = demo_raw()
    raw["intermediate"]["mixtures"] = {"syn-rate": ["syn-rate"], "mix": ["syn-rate", "nosuch"]}
    with pytest.raises(UserError) as caught:
        validate(raw)
    message = str(caught.value)
    assert "already a task name" in message and "two or more distinct" in message and "nosuch" in message


def test_train_first_runs_before_the_target_with_its_head_kept(monkeypatch) -> None:
    """XCOPA's recipe: the first fine-tuning (SIQA) is its own node; the target's training
    continues from it (encoder and head) and is what gets evaluated."""
    register_two_step_target(monkeypatch)
    raw = demo_raw()
    raw["target"]["tasks"] = ["syn-two-step"]
    raw["intermediate"]["tasks"] = ["none"]
    raw["seeds"] = [1]
    plan = build_plan(validate(raw))
    trained = {n.task: n for n in plan.nodes if n.stage == "train-target"}
    assert set(trained) == {"syn-first", "syn-two-step"}
    assert trained["syn-two-step"].inputs["init"] is trained["syn-first"]
    assert trained["syn-two-step"].config.continue_head is True
    assert trained["syn-first"].config.hparams == trained["syn-two-step"].config.hparams
    evaluation = next(n for n in plan.nodes if n.stage == "evaluate")
    assert evaluation.inputs["model"] is trained["syn-two-step"]
