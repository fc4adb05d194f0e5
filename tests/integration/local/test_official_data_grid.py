"""A grid on a `data_dir` exactly as google-research/xtreme's download scripts leave it.

Every XTREME and XTREME-R target (twelve) and the English data their recipes train on,
written by `tests.support.official_tree` (the official preprocessing's transformations
applied to release-shaped records): `xstilts data check` passes and says which test
gold the official layout withholds; prepare, train and evaluate run end to end on the
tiny model, in this process through `run_node` (the code path of a SLURM job); the
evaluate nodes write predictions for every language and scores only where gold exists;
`xstilts analysis table` shows "gold withheld" for those cells, not a number.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

from xstilts.core.commit_record import parse_marker
from xstilts.core.index import snapshot
from xstilts.core.listing import list_stage
from xstilts.core.official import official_path
from xstilts.core.state import node_status
from xstilts.core.store import DONE
from xstilts.core.tasks import BASELINE, TASKS
from xstilts.jobs.entry import run_node
from xstilts.launcher.experiment import open_experiment
from tests.support.grid import cli_env, run_cli
from tests.support.specs import write_data_dir_spec
from tests.support.official_tree import OfficialTree, write_official_tree

TARGETS = ("xnli", "pawsx", "xcopa", "udpos", "panx", "xquad", "mlqa", "tydiqa", "bucc2018", "tatoeba", "mewslix",
           "lareqa")
HPARAMS: dict[str, Any] = {
    "learning_rate": 1e-3, "batch_size": 4, "max_steps": 2, "eval_interval": 2, "max_seq_length": 64,
}


def _spec(tmp: Path, data_dir: Path) -> Path:
    return write_data_dir_spec(tmp, "official-data", [BASELINE], list(TARGETS), data_dir, tmp / "store", HPARAMS)


def _withheld_languages(tree: OfficialTree, task: str) -> set[str]:
    return {lang for (name, split, lang), expected in tree.expected.items()
            if name == task and split == "test" and expected.gold_withheld}


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path, OfficialTree]:
    tmp = tmp_path_factory.mktemp("official-data")
    tree = write_official_tree(tmp / "download")
    spec = _spec(tmp, tree.root)
    check = run_cli("data", "check", str(spec), "--json")
    assert check.returncode == 0, check.stdout + check.stderr
    report = json.loads(check.stdout)
    assert report["ok"] and {task["task"] for task in report["tasks"]} >= set(TARGETS)
    for task in report["tasks"]:
        if task["task"] in TARGETS:
            withheld = {c["lang"] for c in task["checks"] if c["split"] == "test" and c["status"] == "withheld"}
            assert withheld == _withheld_languages(tree, task["task"]), task["task"]
    tydiqa_dev = next(c for t in report["tasks"] if t["task"] == "tydiqa" for c in t["checks"] if c["split"] == "dev")
    assert tydiqa_dev["status"] == "found" and "held out" in tydiqa_dev["note"]  # the user is told

    logging.getLogger().setLevel(logging.WARNING)
    experiment = open_experiment(str(spec))
    experiment.materialize()
    for node in experiment.plan.nodes:
        if not experiment.is_done(node):
            code = run_node(experiment.store.url, f"{node.stage}/{node.key}", job_id="test")
            assert code == 0, f"{node.stage} {node.task} exited {code}"
    return experiment, spec, tree


@pytest.mark.parametrize("target", TARGETS)
def test_every_language_is_predicted_and_scored_only_where_gold_exists(
        grid: tuple[Any, Path, OfficialTree], target: str) -> None:
    experiment, _, tree = grid
    evaluation = next(n for n in experiment.plan.evaluations() if n.task == target)
    result = experiment.result(evaluation)
    withheld = _withheld_languages(tree, target)
    assert set(result["gold_withheld"]) == withheld
    assert set(result["languages"]) == set(TASKS[target].eval_languages) - withheld
    if withheld:
        assert result["average"] is None  # a mean over some languages is not the task's score
    else:
        assert result["average"] is not None
    predictions = Path(experiment.node_dir(evaluation)) / "predictions"
    for lang in TASKS[target].eval_languages:
        assert official_path(predictions, target, lang).is_file(), lang
    gold = Path(experiment.node_dir(evaluation.inputs["data"])) / "gold"
    for lang in TASKS[target].eval_languages:
        assert official_path(gold, target, lang).is_file() == (lang not in withheld), lang


def test_tydiqa_records_its_english_dev_holdout(grid: tuple[Any, Path, OfficialTree]) -> None:
    experiment, _, _ = grid
    prepare = next(n for n in experiment.plan.nodes if n.stage == "prepare" and n.kind == "data" and n.task == "tydiqa")
    result = experiment.result(prepare)
    holdout = result["notes"]["dev"]["en"]["holdout"]
    assert holdout["instead_of"] == "tydiqa/tydiqa-goldp-v1.1-dev/tydiqa.goldp.en.dev.json"
    assert holdout["dev"] >= 1 and holdout["dev"] + holdout["train"] == result["counts"]["train"]["en"] + \
        result["counts"]["dev"]["en"]
    assert result["data_files"]  # the local files' signature is in the key and the result


def test_analysis_table_shows_gold_withheld_not_a_number(grid: tuple[Any, Path, OfficialTree]) -> None:
    _, spec, tree = grid
    table = run_cli("analysis", "table", str(spec), "--json")
    assert table.returncode == 0, table.stdout + table.stderr
    cells = {cell["target"]: cell for cell in json.loads(table.stdout)["cells"]}
    for target in TARGETS:
        if _withheld_languages(tree, target):
            assert cells[target]["gold_withheld"], target
            assert cells[target]["mean"] is None, target
        else:
            assert not cells[target]["gold_withheld"] and cells[target]["mean"] is not None, target
    # piped, as into a file or `less`, with no COLUMNS: rich's default 80 columns cut a
    # twelve-target table to ellipses; a pipe gets the whole table
    piped = {key: value for key, value in cli_env().items() if key != "COLUMNS"}
    text = run_cli("analysis", "table", str(spec), env=piped)
    assert text.returncode == 0
    row = next(line for line in text.stdout.splitlines() if line.startswith("│ none"))
    assert row.count("gold withheld") == len([t for t in TARGETS if _withheld_languages(tree, t)])


def test_every_committed_node_carries_a_done_record_of_its_files(grid: tuple[Any, Path, OfficialTree]) -> None:
    """`jobs.entry` writes DONE last with the node's state and result (`core.commit_record`),
    and the record describes the files as the listing finds them: a cold status reads one
    file per finished node, and sees the same as reading state.json and result.json."""
    experiment, _, _ = grid
    store = experiment.store
    for node in experiment.plan.nodes:
        node_dir = store.node_path(node.stage, node.key)
        record = parse_marker(store.read_text(f"{node_dir}/{DONE}"))
        assert record is not None, node.label
        assert record.matches(list_stage(store, node.stage, node.key)[node.key].files), node.label
        assert record.result == store.read_json(f"{node_dir}/result.json")
        assert record.state == store.read_json(f"{node_dir}/state.json")
    snap = snapshot(store, "other-experiment", experiment.plan.nodes, use_index=False)
    assert snap.reads == len(experiment.plan.nodes)
    assert snap.statuses == {n.key: node_status(store, store.node_path(n.stage, n.key)) for n in experiment.plan.nodes}
