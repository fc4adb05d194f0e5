"""Spec validation: every problem named by key path, with valid choices."""

from __future__ import annotations

import pytest

from xstilts.core.errors import UserError
from xstilts.core.spec import apply_overrides, load_spec, validate
from tests.support.specs import DEMO_SPEC, demo_raw


def test_demo_spec_is_valid() -> None:
    spec = load_spec(DEMO_SPEC)
    assert spec.intermediate.tasks[0] == "none"
    assert spec.seeds == [1, 2]


def test_override_sets_nested_value_with_yaml_typing() -> None:
    spec = load_spec(DEMO_SPEC, ["target.hparams.learning_rate=3e-5", "seeds=[7]"])
    assert spec.target.hparams.learning_rate == pytest.approx(3e-5)
    assert spec.seeds == [7]


def test_override_into_a_value_is_an_error() -> None:
    with pytest.raises(UserError, match="'seeds' is a value, not a section"):
        apply_overrides(demo_raw(), ["seeds.x=1"])


def test_override_without_equals_is_an_error() -> None:
    with pytest.raises(UserError, match="key.path=value"):
        apply_overrides(demo_raw(), ["seeds"])


@pytest.mark.parametrize(
    ("dotted", "value", "expected"),
    [
        ("intermediate.tasks", ["none", "syn-rat"], "unknown intermediate task 'syn-rat' (did you mean 'syn-rate'?)"),
        ("target.tasks", ["syn-rate"], "'syn-rate' is a intermediate task"),
        ("target.hparams.lr", 1e-3, "target.hparams.lr: unknown key 'lr'"),
        ("target.hparams.batch_size", "many", "target.hparams.batch_size"),
        ("seeds", [], "seeds: needs at least one seed"),
        ("target.tasks", ["syn-sent", "syn-sent"], "duplicate task names: syn-sent"),
        ("resources.train-target.gpuz", 1, "resources.train-target.gpuz: unknown key 'gpuz' (did you mean 'gpus'?)"),
        ("target.per_task.syn-pos", {"learning_rte": 1.0}, "target.per_task.syn-pos.learning_rte: unknown key"),
        ("target.per_task.syn-poz", {"learning_rate": 1.0}, "'syn-poz' is not in target.tasks (did you mean 'syn-pos'?)"),
        ("model.name", "xlm-roberta-base", "exactly one of 'name'"),
    ],
)
def test_bad_values_are_named(dotted: str, value: object, expected: str) -> None:
    raw = demo_raw()
    node = raw
    keys = dotted.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    with pytest.raises(UserError) as info:
        validate(raw)
    assert expected in str(info.value)


def test_unknown_top_level_key_lists_valid_keys() -> None:
    raw = demo_raw()
    raw["sedes"] = raw.pop("seeds")
    with pytest.raises(UserError) as info:
        validate(raw)
    message = str(info.value)
    assert "sedes: unknown key 'sedes' (did you mean 'seeds'?)" in message
    assert ("valid keys: acceleration, checkpointing, cluster, data_dir, data_revision, gpu_hours, intermediate, model, name, "
            "rerun_on_code_change, resources, seeds, storage, target, tracking, vision") in message
    assert "seeds: required key is missing" in message


def test_per_task_override_applies_to_one_task_only() -> None:
    raw = demo_raw()
    raw["target"]["per_task"] = {"syn-pos": {"learning_rate": 0.5}}
    spec = validate(raw)
    assert spec.hparams_for("target", "syn-pos").learning_rate == 0.5
    assert spec.hparams_for("target", "syn-sent").learning_rate == spec.target.hparams.learning_rate


def test_data_dir_must_exist_and_is_made_absolute(tmp_path) -> None:
    raw = demo_raw()
    raw["data_dir"] = str(tmp_path / "missing")
    with pytest.raises(UserError) as info:
        validate(raw)
    assert "data_dir" in str(info.value) and "is not a directory" in str(info.value)
    (tmp_path / "xtreme").mkdir()
    raw["data_dir"] = str(tmp_path / "xtreme")
    assert validate(raw).data_dir == str((tmp_path / "xtreme").resolve())
