"""Every registered task end to end, on a fixture in its real local format.

For each non-synthetic task of the registry a small fixture is written in the format an
offline cluster would have (the official XTREME layout, or jsonl/tsv), a spec points
`data_dir` at it, and the plan's nodes run in this process through `xstilts.jobs.entry.run_node`
(the code path a SLURM job takes): prepare the tiny model and the data, train a few
steps, evaluate every listed language. Each node must finish with `result.json`, and
evaluate nodes must write predictions in the official submission layout, one file per
language, that `xstilts score` reads back to the same numbers.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

from xstilts.jobs.entry import run_node
from xstilts.core.tasks import BASELINE, TASKS, task_names
from xstilts.launcher.experiment import open_experiment
from tests.support.specs import write_data_dir_spec
from tests.support.task_fixtures import write_fixture

REAL_TARGETS = [name for name in task_names("target") if TASKS[name].source.kind not in ("synthetic", "captions")]
REAL_INTERMEDIATES = [name for name in task_names("intermediate") if TASKS[name].source.kind not in ("synthetic", "captions")]

HPARAMS: dict[str, Any] = {
    "learning_rate": 1e-3, "batch_size": 4, "max_steps": 2, "eval_interval": 2, "max_seq_length": 64,
}


MIXTURE = {"nli+qa+mc": ["mnli", "squad", "hellaswag"]}


def _spec(tmp: Path, name: str, intermediates: list[str], targets: list[str], data_dir: Path, store: Path,
          mixtures: dict[str, list[str]] | None = None) -> Path:
    return write_data_dir_spec(tmp, name, intermediates, targets, data_dir, store, HPARAMS, mixtures)


def _run_all(spec: Path, stages: set[str]) -> Any:
    experiment = open_experiment(str(spec))
    experiment.materialize()
    for node in experiment.plan.nodes:
        if node.stage in stages and not experiment.is_done(node):
            code = run_node(experiment.store.url, f"{node.stage}/{node.key}", job_id="test")
            if code != 0:
                log = experiment.store.read_text(f"{experiment.node_dir(node)}/state.json")
                pytest.fail(f"{node.stage} {node.task} exited {code}: {log}")
    return experiment


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("task-data")
    for name in [*REAL_TARGETS, *REAL_INTERMEDIATES]:
        write_fixture(name, root)
    return root


@pytest.fixture(scope="module")
def targets_run(tmp_path_factory: pytest.TempPathFactory, fixtures: Path) -> Any:
    tmp = tmp_path_factory.mktemp("targets")
    logging.getLogger().setLevel(logging.WARNING)
    spec = _spec(tmp, "targets", [BASELINE], REAL_TARGETS, fixtures, tmp_path_factory.getbasetemp() / "store")
    return _run_all(spec, {"prepare", "train-target", "evaluate"})


@pytest.mark.parametrize("target", REAL_TARGETS)
def test_target_trains_and_evaluates_every_language(targets_run: Any, target: str, tmp_path: Path) -> None:
    from xstilts.analysis.score import score_language
    from xstilts.core.official import official_key, official_path

    experiment = targets_run
    task = TASKS[target]
    evaluation = next(n for n in experiment.plan.evaluations() if n.task == target)
    result = experiment.result(evaluation)
    assert result is not None and result["task"] == target
    assert sorted(result["languages"]) == sorted(task.eval_languages)
    predictions = Path(experiment.node_dir(evaluation)) / "predictions"  # a local store
    files = sorted(p.name.split(".")[0] for p in (predictions / target).iterdir())
    assert files == sorted(f"test-{lang}" for lang in task.eval_languages)
    # the official-layout files score back to the numbers in result.json
    data_node = evaluation.inputs["data"]
    gold = Path(experiment.node_dir(data_node)) / "gold"
    for lang in task.eval_languages:
        rescored = score_language(target, official_path(predictions, target, lang), official_path(gold, target, lang), lang)
        recorded = {official_key(metric): value for metric, value in result["languages"][lang].items()}
        for metric, value in rescored.items():
            assert value == pytest.approx(recorded[metric], abs=1e-6), (lang, metric)
    if task.kind != "retrieval":
        trained = evaluation.inputs["model"]
        train_result = experiment.result(trained)
        assert train_result is not None and train_result["steps"] == HPARAMS["max_steps"]


@pytest.fixture(scope="module")
def intermediates_run(tmp_path_factory: pytest.TempPathFactory, fixtures: Path) -> Any:
    tmp = tmp_path_factory.mktemp("intermediates")
    spec = _spec(tmp, "intermediates", [BASELINE, *REAL_INTERMEDIATES, *MIXTURE], ["pawsx"], fixtures,
                 tmp_path_factory.getbasetemp() / "store", mixtures=MIXTURE)
    return _run_all(spec, {"prepare", "train-intermediate"})


@pytest.mark.parametrize("intermediate", REAL_INTERMEDIATES)
def test_intermediate_trains_and_scores_english_dev(intermediates_run: Any, intermediate: str) -> None:
    experiment = intermediates_run
    node = next(n for n in experiment.plan.nodes if n.stage == "train-intermediate" and n.task == intermediate)
    result = experiment.result(node)
    assert result is not None and result["task"] == intermediate
    assert result["steps"] == HPARAMS["max_steps"] and result["dev"]
    assert all(0.0 <= value <= 100.0 for value in result["dev"].values())
    assert json.loads(json.dumps(result))  # plain JSON


def test_mixture_trains_every_member_on_one_encoder(intermediates_run: Any) -> None:
    """Multi-task intermediate training: dev scores of every member, selection on their
    mean, and an exported bare encoder that a target stage can start from."""
    from transformers import AutoModel

    experiment = intermediates_run
    name, members = next(iter(MIXTURE.items()))
    node = next(n for n in experiment.plan.nodes if n.stage == "train-intermediate" and n.task == name)
    result = experiment.result(node)
    assert result is not None and result["mixture"] == members
    assert {key.split("/")[0] for key in result["dev"] if "/" in key} == set(members)
    primaries = [result["dev"]["mnli/accuracy"], result["dev"]["squad/f1"], result["dev"]["hellaswag/accuracy"]]
    assert result["dev"]["mean"] == pytest.approx(sum(primaries) / 3)
    encoder = AutoModel.from_pretrained(Path(experiment.node_dir(node)) / "model")
    assert encoder.config.hidden_size == 32


def test_xcopa_trains_on_siqa_first_then_copa(targets_run: Any) -> None:
    experiment = targets_run
    copa = next(n for n in experiment.plan.nodes if n.stage == "train-target" and n.task == "xcopa")
    first = copa.inputs["init"]
    assert first.stage == "train-target" and first.task == TASKS["xcopa"].train_first == "socialiqa"
    assert copa.config.continue_head is True
    assert experiment.result(first)["steps"] == HPARAMS["max_steps"]
    assert experiment.result(copa)["steps"] == HPARAMS["max_steps"]
