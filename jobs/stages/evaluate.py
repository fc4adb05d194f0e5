"""Stage `evaluate`: zero-shot scores of a target-task model in every language.

Input `model` is a train-target node (encoder + head trained on English only), `data`
the task's prepare-data node. Each language's test split is scored with the task's
metric; the result lists every language and the plain mean over languages, English
included, which is how XTREME averages a task. Predictions are written to
`<out_dir>/predictions/<lang>.jsonl` so the analysis can re-score or export them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from jobs import data, metrics
from jobs.device import select_device
from jobs.modeling import MODEL_SUBDIR, load_trained_model, quiet_progress_bars
from jobs.stages.base import StageContext
from jobs.tasks.registry import get_task
from jobs.trainer import predict


def run(ctx: StageContext) -> dict[str, Any]:
    from transformers import AutoTokenizer

    quiet_progress_bars()
    task = get_task(ctx.config["task"])
    device = select_device()
    model_dir = ctx.inputs["model"] / MODEL_SUBDIR
    data_dir = ctx.inputs["data"] / data.DATA_SUBDIR
    meta = data.read_meta(data_dir)
    if meta["task"] != task.name:
        raise ValueError(f"data input holds task '{meta['task']}', this node evaluates '{task.name}'")
    pad_id = AutoTokenizer.from_pretrained(model_dir).pad_token_id
    model = load_trained_model(model_dir, task).to(device.device)

    started = time.perf_counter()
    languages: dict[str, dict[str, float]] = {}
    predictions_dir = ctx.out_dir / "predictions"
    predictions_dir.mkdir(parents=True, exist_ok=True)
    for lang in task.eval_languages:
        test = data.TokenizedData.from_dataset(data.load_split(data_dir, "test", lang), pad_id)
        predicted, gold = predict(model, test, task, device)
        languages[lang] = metrics.compute(task.metric, predicted, gold)
        _write_predictions(predictions_dir / f"{lang}.jsonl", predicted, gold)
        ctx.log.info("%s %s: %s %.2f", task.name, lang, task.metric, languages[lang][task.metric])
    average = sum(scores[task.metric] for scores in languages.values()) / len(languages)
    return {
        "task": task.name,
        "metric": task.metric,
        "languages": languages,
        "average": average,
        "eval_seconds": round(time.perf_counter() - started, 3),
    }


def _write_predictions(path: Path, predicted: list[Any], gold: list[Any]) -> None:
    with path.open("w") as handle:
        for p, g in zip(predicted, gold):
            handle.write(json.dumps({"prediction": p, "gold": g}) + "\n")
