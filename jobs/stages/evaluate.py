"""Stage `evaluate`: zero-shot scores of a target-task model in every language.

Input `model` is a train-target node (encoder + head trained on English only) or, for
zero-shot retrieval tasks, the encoder itself (an intermediate node or the pretrained
model); `data` is the task's prepare-data node. Each language's test split is predicted
by the task's head and scored with the task's official metric; the result lists every
language and the plain mean over languages, English included, which is how XTREME
averages a task. Predictions are written in the official XTREME submission layout,
`<out_dir>/predictions/<task>/test-<lang>.<ext>`, so `xstilts score` and the public
leaderboard's scorer read them as they are.
"""

from __future__ import annotations

import time
from typing import Any

from xstilts.core.nodes import EvaluateConfig
from xstilts.jobs import data
from xstilts.jobs.device import select_device
from xstilts.jobs.heads import head_for
from xstilts.jobs.heads.base import Example, suite_value
from xstilts.jobs.modeling import MODEL_SUBDIR, quiet_progress_bars
from xstilts.jobs.stages.base import StageContext
from xstilts.core.tasks import get_task

PREDICTIONS_SUBDIR = "predictions"
EVAL_BATCH_SIZE = 128
"""Test examples predicted per forward pass (no spec setting: it changes speed, not scores)."""


def run(ctx: StageContext[EvaluateConfig]) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from xstilts.core.official import write_official

    quiet_progress_bars()
    device = select_device()
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
    languages: dict[str, dict[str, float]] = {}
    for lang in task.eval_languages:
        predictions, scores = head.evaluate_language(model, load, lang, device, EVAL_BATCH_SIZE)
        languages[lang] = scores
        write_official(task.name, lang, predictions, ctx.out_dir / PREDICTIONS_SUBDIR)
        ctx.log.info("%s %s: %s", task.name, lang, ", ".join(f"{k} {v:.2f}" for k, v in scores.items()))
    # XTREME's task score: the mean over languages (QA: of the mean of EM and F1)
    average = sum(suite_value(task.metric, scores) for scores in languages.values()) / len(languages)
    return {
        "task": task.name,
        "metric": task.metric,
        "languages": languages,
        "average": average,
        "averages": {
            key: sum(scores[key] for scores in languages.values()) / len(languages)
            for key in next(iter(languages.values()))
        },
        "eval_seconds": round(time.perf_counter() - started, 3),
    }
