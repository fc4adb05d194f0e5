"""Stage `evaluate`: zero-shot scores of a target-task model in every language.

Input `model` is a train-target node (encoder + head trained on English only) or, for
zero-shot retrieval tasks, the encoder itself (an intermediate node or the pretrained
model); `data` is the task's prepare-data node. Each language's test split is predicted
by the task's head and scored with the task's official metric; the result lists every
language and the plain mean over languages, English included, which is how XTREME
averages a task. Predictions are written in the official XTREME submission layout,
`<out_dir>/predictions/<task>/test-<lang>.<ext>`, so `xstilts score` and the public
leaderboard's scorer read them as they are.

A language whose test gold is withheld (the official layout's blanked test files, as the
data node recorded them) is predicted and written all the same, but not scored: it is
listed under `gold_withheld` instead of `languages`. `average` and `averages` are then
None: a mean over the scored languages only is a different number from XTREME's task
score (the mean over every language), and putting it where that score goes would make
it comparable in name only.
"""

from __future__ import annotations

import os
import time
from typing import Any

from xstilts.core.nodes import EvaluateConfig
from xstilts.jobs import data
from xstilts.jobs.acceleration import AccelerationPolicy
from xstilts.jobs.device import select_device
from xstilts.jobs.heads import head_for
from xstilts.jobs.heads.base import Example, suite_value
from xstilts.jobs.modeling import MODEL_SUBDIR, quiet_progress_bars
from xstilts.jobs.stages.base import StageContext
from xstilts.core.tasks import get_task

PREDICTIONS_SUBDIR = "predictions"
EVAL_BATCH_SIZE = 128
"""Test examples predicted per forward pass unless the spec's `acceleration.eval_batch_size`
says otherwise (speed and memory only, never scores)."""


def run(ctx: StageContext[EvaluateConfig]) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from xstilts.core.official import write_official

    quiet_progress_bars()
    device = select_device()
    batch_size = AccelerationPolicy.from_env(os.environ).eval_batch_size or EVAL_BATCH_SIZE
    model_dir = ctx.inputs["model"] / MODEL_SUBDIR
    data_dir = ctx.inputs["data"] / data.DATA_SUBDIR
    meta = data.read_meta(data_dir)
    task = data.with_prepared_labels(get_task(ctx.config.task), meta)
    head = head_for(task)
    if meta["task"] != task.name:
        raise ValueError(f"data input holds task '{meta['task']}', this node evaluates '{task.name}'")
    pad_id = AutoTokenizer.from_pretrained(model_dir).pad_token_id
    model = head.load_model(model_dir).to(device.device)

    def load(split: str, lang: str) -> tuple[data.TokenizedData, list[Example]]:
        features = head.features(data.load_split(data_dir, split, lang)[:], pad_id)
        return features, data.load_split_examples(data_dir, split, lang)

    started = time.perf_counter()
    withheld_test = set(meta.get("gold_withheld", {}).get("test", []))
    languages: dict[str, dict[str, float]] = {}
    withheld: list[str] = []
    for lang in task.eval_languages:
        if lang in withheld_test:
            predictions = head.predict_language(model, load, lang, device, batch_size)
            withheld.append(lang)
            ctx.log.info("%s %s: predicted, not scored (gold withheld)", task.name, lang)
        else:
            predictions, scores = head.evaluate_language(model, load, lang, device, batch_size)
            languages[lang] = scores
            ctx.log.info("%s %s: %s", task.name, lang, ", ".join(f"{k} {v:.2f}" for k, v in scores.items()))
        write_official(task.name, lang, predictions, ctx.out_dir / PREDICTIONS_SUBDIR)
    return {
        "task": task.name,
        "metric": task.metric,
        "languages": languages,
        "gold_withheld": withheld,
        **task_averages(task.metric, languages, withheld),
        "eval_seconds": round(time.perf_counter() - started, 3),
    }


def task_averages(metric: str, languages: dict[str, dict[str, float]], withheld: list[str]) -> dict[str, Any]:
    """`average`: XTREME's task score, the mean over languages of the suite value (QA: of
    the mean of EM and F1); `averages`: the mean of every score key. Both None when a
    language is withheld or none is scored (module docstring: no partial means)."""
    if withheld or not languages:
        return {"average": None, "averages": None}
    n = len(languages)
    return {
        "average": sum(suite_value(metric, scores) for scores in languages.values()) / n,
        "averages": {key: sum(scores[key] for scores in languages.values()) / n for key in next(iter(languages.values()))},
    }
