"""The typed node contract (core/nodes.py): node.json <-> config model, and the errors a
torn or foreign node.json gives."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from xstilts.core.nodes import (
    NODE_CONFIGS, EvaluateConfig, NodeRecordError, PrepareDataConfig, PrepareImagesConfig, PrepareModelConfig,
    TrainIntermediateConfig, TrainTargetConfig, TuneConfig, parse_config, parse_node_record,
)
from xstilts.core.stages import STAGE_MODULES
from tests.support.paths import DATA

GOLDEN = DATA / "golden_records"
RECORDS = [record for path in sorted(GOLDEN.glob("*.json")) for record in json.loads(path.read_text())]


def _first(config_model: type, /, **where: bool) -> dict[str, Any]:
    """The first golden record whose config parses to `config_model` and has (True) or
    lacks (False) the keys `where` names; `tiny` looks into a prepare-model's section."""
    for record in RECORDS:
        name = record["stage"] if record["kind"] is None else f"{record['stage']}:{record['kind']}"
        keys = set(record["config"]) | ({"tiny"} if record["config"].get("model", {}).get("tiny") else set())
        if NODE_CONFIGS[name] is config_model and all((key in keys) == present for key, present in where.items()):
            return record
    raise AssertionError(f"no golden record of {config_model.__name__} with {where}")


SHAPES = {
    "prepare-model-tiny": (PrepareModelConfig, {"tiny": True}),
    "prepare-model-hub": (PrepareModelConfig, {"tiny": False}),
    "prepare-data": (PrepareDataConfig, {"data_dir": False, "prefix_length": False}),
    "prepare-data-local-image": (PrepareDataConfig, {"data_dir": True, "prefix_length": True}),
    "prepare-images": (PrepareImagesConfig, {"data_dir": True}),
    "tune-per-task": (TuneConfig, {"intermediate": False}),
    "tune-per-cell-continue-head": (TuneConfig, {"intermediate": True, "continue_head": True}),
    "train-intermediate-mixture": (TrainIntermediateConfig, {"mixture": True}),
    "train-intermediate-image": (TrainIntermediateConfig, {"prefix_length": True}),
    "train-target-first-of": (TrainTargetConfig, {"first_of": True}),
    "train-target-continue-head": (TrainTargetConfig, {"continue_head": True}),
    "evaluate": (EvaluateConfig, {}),
}


def test_every_stage_module_has_a_config_model() -> None:
    assert NODE_CONFIGS.keys() == STAGE_MODULES.keys()


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_round_trip_node_json_to_model_to_the_same_dict(shape: str) -> None:
    model, where = SHAPES[shape]
    record = _first(model, **where)
    parsed = parse_node_record(json.loads(json.dumps(record)))
    assert isinstance(parsed.config, model)
    assert parsed.as_json() == record
    assert parsed.config.as_json() == record["config"]


def test_every_golden_record_round_trips() -> None:
    assert RECORDS
    for record in RECORDS:
        assert parse_node_record(record).as_json() == record, record["key"]


def test_a_hub_model_has_no_tiny_settings() -> None:
    config = parse_config("prepare", "model", {"model": {"name": "xlm-roberta-base", "tiny": None}, "seed": 0})
    assert isinstance(config, PrepareModelConfig) and config.model.tiny_model() is None
    assert config.as_json() == {"model": {"name": "xlm-roberta-base", "tiny": None}, "seed": 0}
    with pytest.raises(NodeRecordError, match="only apply to tiny models"):
        parse_config("prepare", "model", {"model": {"name": "x", "tiny": None, "pretrain_steps": 3}, "seed": 0})


def test_a_wrong_key_is_named_with_the_valid_ones() -> None:
    config = {"task": "syn-sent", "max_seq_length": 128, "eval_batch_size": 64}
    with pytest.raises(NodeRecordError) as error:
        parse_config("prepare", "data", config)
    message = str(error.value)
    assert "invalid prepare:data node config" in message
    assert "eval_batch_size: unknown key; valid keys: task, max_seq_length, data_dir, prefix_length" in message


def test_a_wrong_nested_key_is_named_with_its_section() -> None:
    record = _first(TrainTargetConfig, continue_head=False, first_of=False)
    config = {**record["config"], "hparams": {**record["config"]["hparams"], "log_interval": 1}}
    with pytest.raises(NodeRecordError, match=r"hparams\.log_interval: unknown key; valid keys: learning_rate, "):
        parse_config("train-target", None, config)


def test_a_missing_field_is_named() -> None:
    with pytest.raises(NodeRecordError, match="invalid evaluate node config:\n  intermediate: required key is missing"):
        parse_config("evaluate", None, {"task": "syn-pos", "seed": 1})


@pytest.mark.parametrize("data, problem", [
    ([1, 2], "expected a JSON object, got list"),
    ({"stage": "evaluate", "key": "k"}, "not a node record of this version (missing kind, task"),
    ({**{f: None for f in ("kind", "task", "intermediate", "seed")}, "stage": "evaluate", "key": "k", "config": {},
      "inputs": {}, "owner": "someone"}, "unknown owner"),
    ({"stage": "shuffle", "kind": None, "task": None, "intermediate": None, "seed": None, "key": "k",
      "config": {}, "inputs": {}}, "unknown node type 'shuffle'; known: prepare:model, prepare:data"),
    ({"stage": "evaluate", "kind": None, "task": None, "intermediate": None, "seed": None, "key": "k",
      "config": [], "inputs": {}}, "must be a JSON object, got list"),
])
def test_a_torn_or_foreign_record_is_a_readable_error(data: Any, problem: str) -> None:
    with pytest.raises(NodeRecordError) as error:
        parse_node_record(data, where="nodes/evaluate/k/node.json")
    assert str(error.value).startswith("nodes/evaluate/k/node.json: ") and problem in str(error.value)


def test_the_entry_fails_a_node_with_a_torn_node_json(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A torn node.json used to escape `run_node` as a JSONDecodeError; it is a failed
    node with a message now, like a missing one."""
    from xstilts.core.store import Store
    from xstilts.jobs.entry import EXIT_FAILED, run_node

    store = Store(str(tmp_path / "store"))
    node_dir = store.node_path("evaluate", "0123456789abcdef")
    store.write_text(f"{node_dir}/node.json", '{"stage": "evaluate", "kind"')
    with caplog.at_level(logging.ERROR, logger="xstilts.entry"):
        assert run_node(store.url, "evaluate/0123456789abcdef") == EXIT_FAILED
    assert "node.json is torn (not valid JSON" in caplog.text
    store.write_text(f"{node_dir}/node.json", json.dumps({"stage": "evaluate", "key": "0123456789abcdef"}))
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="xstilts.entry"):
        assert run_node(store.url, "evaluate/0123456789abcdef") == EXIT_FAILED
    assert "not a node record of this version" in caplog.text
