"""Stages `train-intermediate` and `train-target`: fine-tune an encoder on one task.

The two stages differ only in where the encoder comes from: an intermediate node starts
from the pretrained encoder (input `model`), a target node from `init`, which is either
the pretrained encoder (the `none` baseline) or an intermediate node's output. Either
way the task head is fresh (see `jobs.modeling`), training uses the English train split
and model selection the English dev split; nothing of the other languages is seen.

Output: `<out_dir>/model/` (best encoder + head + tokenizer, HF format, safetensors) and
`<out_dir>/metrics.jsonl` (one line per log and evaluation event).
"""

from __future__ import annotations

from typing import Any

from jobs import data
from jobs.device import select_device
from jobs.modeling import MODEL_SUBDIR, build_task_model, quiet_progress_bars
from jobs.stages.base import StageContext
from jobs.tasks.registry import get_task
from jobs.trainer import Trainer, TrainConfig

ENCODER_INPUT = {"train-intermediate": "model", "train-target": "init"}


def run(ctx: StageContext) -> dict[str, Any]:
    from transformers import AutoTokenizer

    quiet_progress_bars()
    stage = ctx.node["stage"]
    if stage not in ENCODER_INPUT:
        raise ValueError(f"jobs.stages.train runs train-intermediate and train-target, not '{stage}'")
    cfg = ctx.config
    task = get_task(cfg["task"])
    seed = int(cfg["seed"])
    hparams = cfg["hparams"]
    device = select_device()

    encoder_dir = ctx.inputs[ENCODER_INPUT[stage]] / MODEL_SUBDIR
    data_dir = ctx.inputs["data"] / data.DATA_SUBDIR
    meta = data.read_meta(data_dir)
    if meta["task"] != task.name:
        raise ValueError(f"data input holds task '{meta['task']}', this node trains '{task.name}'")
    if meta["max_seq_length"] != int(hparams["max_seq_length"]):
        ctx.log.warning(
            "data was prepared with max_seq_length %s, hparams say %s; the prepared length applies",
            meta["max_seq_length"], hparams["max_seq_length"],
        )

    tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
    train_data = data.TokenizedData.from_dataset(data.load_split(data_dir, "train", "en"), tokenizer.pad_token_id)
    dev_data = data.TokenizedData.from_dataset(data.load_split(data_dir, "dev", "en"), tokenizer.pad_token_id)

    model = build_task_model(encoder_dir, task, seed)
    config = TrainConfig.from_hparams(hparams, len(train_data), seed)
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(
        model, task, train_data, dev_data, config, device, ctx.out_dir / "metrics.jsonl", ctx.log
    )
    state = trainer.fit()

    out = ctx.out_dir / MODEL_SUBDIR
    trainer.model.to("cpu").save_pretrained(out)
    tokenizer.save_pretrained(out)

    best = next(h for h in state.dev_history if h["step"] == state.best_step)
    result: dict[str, Any] = {
        "task": task.name,
        "seed": seed,
        "dev": {k: v for k, v in best.items() if k != "step"},
        "best_step": state.best_step,
        "steps": state.step,
        "total_steps": config.total_steps,
        "stopped_early": state.stopped_early,
        "train_seconds": round(state.train_seconds, 3),
        "examples_per_s": round(state.examples_seen / max(state.train_seconds, 1e-9), 1),
    }
    if stage == "train-target":
        result["intermediate"] = cfg.get("intermediate")
    return result
