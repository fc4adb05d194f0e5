"""Stage `prepare` (kind `data`): tokenize one task once for the whole grid.

Input `model` is the prepare-model node (its tokenizer decides the token ids). Output
`<out_dir>/data/<split>/<lang>/` Arrow datasets with `input_ids` and `labels` (plus
`n_words` for tagging) and `data/meta.json`. Training and evaluation nodes of this task,
for every intermediate task and seed, read these files instead of re-tokenizing.
"""

from __future__ import annotations

import time
from typing import Any

from jobs import data
from jobs.modeling import MODEL_SUBDIR, quiet_progress_bars
from jobs.stages.base import StageContext
from jobs.tasks.registry import get_task


def run(ctx: StageContext) -> dict[str, Any]:
    from transformers import AutoConfig, AutoTokenizer

    quiet_progress_bars()
    task = get_task(ctx.config["task"])
    max_seq_length = int(ctx.config["max_seq_length"])
    model_dir = ctx.inputs["model"] / MODEL_SUBDIR
    positions = AutoConfig.from_pretrained(model_dir).max_position_embeddings
    # XLM-R numbers positions from pad_token_id + 1, so two embeddings are never used.
    if max_seq_length > positions - 2:
        raise ValueError(
            f"max_seq_length {max_seq_length} exceeds what the encoder can embed ({positions - 2} tokens)"
        )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    started = time.perf_counter()
    examples = data.load_examples(task)
    out = ctx.out_dir / data.DATA_SUBDIR
    counts: dict[str, dict[str, int]] = {}
    truncated: dict[str, dict[str, int]] = {}
    for split, by_lang in examples.items():
        for lang, rows in by_lang.items():
            if not rows:
                raise ValueError(f"task {task.name}: no {split} examples for language '{lang}'")
            columns = data.tokenize(task, rows, tokenizer, max_seq_length)
            data.save_split(out, split, lang, columns)
            counts.setdefault(split, {})[lang] = len(rows)
            if task.kind == "tagging":
                # words cut off by truncation or carrying a tag outside the label set
                labelled = sum(1 for labels in columns["labels"] for label in labels if label != data.IGNORE_INDEX)
                truncated.setdefault(split, {})[lang] = sum(columns["n_words"]) - labelled
    data.write_meta(
        out,
        {
            "task": task.name,
            "kind": task.kind,
            "labels": list(task.labels),
            "metric": task.metric,
            "max_seq_length": max_seq_length,
            "counts": counts,
        },
    )
    ctx.log.info("prepared %s: %s in %.1fs", task.name, counts, time.perf_counter() - started)
    result: dict[str, Any] = {"task": task.name, "counts": counts}
    if truncated:
        result["unlabelled_words"] = truncated
    return result
