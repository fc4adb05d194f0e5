"""Score a submission in the official XTREME / XTREME-R layout, as the leaderboard does.

Why: a number is only comparable with the XTREME leaderboard and with published
tables when it comes from the same files, read the same way, averaged the same way.
This module reads `<dir>/<task>/test-<lang>.<suffix>` for predictions and gold exactly
as google-research/xtreme `evaluate.py` does (each line stripped, blank lines between
tagged sentences, QA JSON with or without a "data" wrapper), scores every language
with `xstilts.core.metrics`, and returns the structure the official scorer writes as JSON:

    {"all_task": ..., "<group>": ..., "<task>": {"<metric>": {lang: value},
                                                 "avg_<metric>": ..., "avg_metric": ...}}

`all_task` appears only when every task of the suite was scored, a group only when all
its tasks were; the QA `avg_metric` is the mean of `avg_exact_match` and `avg_f1`, any
other task's is its first of `avg_f1`, `avg_accuracy`, `avg_map@20`.

The output matches `evaluate.py` at google-research/xtreme 838c13b key for key: its
groups (XTREME-R: `retrieval` is tatoeba and mewslix, `multi_choice` is xcopa) and its
metric spelling (`map@20`). The tables, and the one extension (LAReQA, which that scorer
cannot score), are documented in `xstilts.core.official`.

The layout itself (formats, readers, writers) is `xstilts.core.official`.

Torch-free: runs on a login node.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xstilts.core import metrics
from xstilts.core.official import (
    AVG_METRIC_KEYS, OFFICIAL_KEYS, QA_TASKS, READERS, ScoreError, official_key, official_path, suite_tables,
    task_format, task_metric,
)


# --------------------------------------------------------------------------------------
# scoring

PREDICTION_OBJECTS = {"qa": "{question_id: answer text}", "rankings": "{query_id: [candidate ids, best first]}"}
"""Formats whose predictions file is one JSON object, and the object's shape."""


def score_language(task: str, prediction_file: str | Path, gold_file: str | Path, lang: str) -> dict[str, float]:
    """The official metrics of one task in one language, from its two files, keyed as the
    official scorer spells them (`map@20`, not our `map_at_20`)."""
    pred_path, gold_path = Path(prediction_file), Path(gold_file)
    fmt = task_format(task)
    for path in (pred_path, gold_path):
        if not path.is_file():
            raise ScoreError(f"{task}/{lang}: missing file {path}")
    predictions = READERS[fmt](pred_path)
    gold = READERS[fmt](gold_path)
    if fmt in PREDICTION_OBJECTS and not isinstance(predictions, dict):
        # The official scorer looks every question up in the file's object; a list
        # (or a number) held no question, so a submission in the wrong shape scored 0.
        raise ScoreError(f"{pred_path}: expected a JSON object {PREDICTION_OBJECTS[fmt]}, "
                         f"got {type(predictions).__name__}")
    if fmt in ("labels", "tags", "xcopa") and len(predictions) != len(gold):
        unit = "sentences" if fmt == "tags" else "examples"
        raise ScoreError(f"{task}/{lang}: {len(predictions)} {unit} in {pred_path} but {len(gold)} in {gold_path}")
    if task == "mewslix":
        # Mewsli-X gold is a singleton list per mention; its scorer uses the stripped first id.
        try:
            gold = {qid: [ids[0].strip()] for qid, ids in gold.items()}
        except (AttributeError, IndexError, TypeError):
            raise ScoreError(f"{gold_path}: expected {{mention_id: [entity_id]}}") from None
    metric = task_metric(task)
    try:
        result = metrics.compute(metric, predictions, gold, language=lang)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ScoreError(f"{task}/{lang}: cannot score {pred_path} against {gold_path}: {exc}") from None
    return {official_key(key): result[key] for key in OFFICIAL_KEYS[metric]}


def score_task(task: str, predictions_dir: str | Path, gold_dir: str | Path, languages: Sequence[str]) -> dict[str, Any]:
    """`{metric: {lang: value}, "avg_<metric>": ..., "avg_metric": ...}` for one task."""
    score: dict[str, Any] = {}
    for lang in languages:
        per_lang = score_language(task, official_path(predictions_dir, task, lang), official_path(gold_dir, task, lang), lang)
        for key, value in per_lang.items():
            score.setdefault(key, {})[lang] = value
    averages = {f"avg_{key}": sum(values.values()) / len(values) for key, values in score.items()}
    score.update(averages)
    score["avg_metric"] = _avg_metric(task, score)
    return score


def _avg_metric(task: str, averages: dict[str, Any]) -> float:
    """The task's one number, which groups and `all_task` average: the official rule."""
    if task in QA_TASKS:
        return float((averages["avg_exact_match"] + averages["avg_f1"]) / 2)
    for key in AVG_METRIC_KEYS:
        if key in averages:
            return float(averages[key])
    raise ScoreError(f"{task}: none of {', '.join(AVG_METRIC_KEYS)} to take as its avg_metric")


def _subdirs(folder: Path, what: str) -> set[str]:
    if not folder.is_dir():
        raise ScoreError(f"{what} directory not found: {folder}")
    return {p.name for p in folder.iterdir() if p.is_dir()}


def available_tasks(predictions_dir: str | Path, gold_dir: str | Path, suite: str) -> tuple[list[str], list[str]]:
    """(tasks to score, suite tasks skipped): a task is scored when both trees have its folder."""
    task_langs, _ = suite_tables(suite)
    predicted = _subdirs(Path(predictions_dir), "predictions")
    golden = _subdirs(Path(gold_dir), "gold")
    present = [t for t in task_langs if t in predicted and t in golden]
    return present, [t for t in task_langs if t not in present]


def score_submission(predictions_dir: str | Path, gold_dir: str | Path, suite: str = "xtreme") -> dict[str, Any]:
    """The official JSON structure for every task of `suite` found in both trees."""
    task_langs, groups = suite_tables(suite)
    present, _ = available_tasks(predictions_dir, gold_dir, suite)
    detailed = {task: score_task(task, predictions_dir, gold_dir, task_langs[task]) for task in present}
    result: dict[str, Any] = {}
    if set(detailed) == set(task_langs):
        result["all_task"] = sum(detailed[t]["avg_metric"] for t in task_langs) / len(task_langs)
    for group, tasks in groups.items():
        if all(t in detailed for t in tasks):
            result[group] = sum(detailed[t]["avg_metric"] for t in tasks) / len(tasks)
    result.update(detailed)
    return result


