"""Stages `train-intermediate` and `train-target`: fine-tune an encoder on one task.

The two stages differ only in where the encoder comes from: an intermediate node starts
from the pretrained encoder (input `model`), a target node from `init`, which is either
the pretrained encoder (the `none` baseline) or an intermediate node's output. Either
way the task head is fresh (see `xstilts.jobs.modeling`), training uses the English train split
and model selection the English dev split; nothing of the other languages is seen.

Output: `<out_dir>/model/` (best encoder + head + tokenizer, HF format, safetensors) and
`<out_dir>/metrics.jsonl` (one line per log and evaluation event).

Checkpoints and preemption: in the node's folder in the store
(`ctx.node_url("checkpoints")`), the run resumes from the newest complete checkpoint
there (and from nothing else), saves every
`ctx.checkpoint.every_steps` steps, and when `ctx.stop` is set saves the current step
and raises `Preempted`. Several processes (RANK / WORLD_SIZE / MASTER_* set, or a
multi-task SLURM step) each call `run(ctx)`: the model is sharded with FSDP2, the process
group is created here unless the caller made it (and then destroyed here too), and only
rank 0 writes `metrics.jsonl` and the model export.

Live curves: rank 0 also writes TensorBoard event files into `<node folder>/tensorboard/`
as it trains (and a W&B run if the spec's `tracking` asks), see `xstilts.jobs.tracking`.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from xstilts.core.nodes import TrainIntermediateConfig, TrainingConfig, TrainTargetConfig
from xstilts.core.spec import Hyperparameters
from xstilts.jobs import data, tracking
from xstilts.jobs.checkpoint import CheckpointManager
from xstilts.jobs.acceleration import AccelerationPolicy, speedups_for
from xstilts.jobs.device import select_device
from xstilts.jobs.distributed import DistInfo, destroy, init_distributed
from xstilts.jobs.heads import head_for
from xstilts.jobs.heads.base import TaskHead
from xstilts.jobs.heads.mixture import MixtureData, MixtureHead
from xstilts.jobs.modeling import MODEL_SUBDIR, quiet_progress_bars
from xstilts.jobs.stages.base import CHECKPOINTS_DIR, StageContext
from xstilts.core.tasks import get_task
from xstilts.jobs.trainer import Trainer, TrainConfig


def encoder_input(config: TrainingConfig) -> str:
    """The input holding the encoder to train: the pretrained one for intermediate
    training, the cell's upstream (`init`) for target training."""
    return "model" if isinstance(config, TrainIntermediateConfig) else "init"


def run(ctx: StageContext[TrainingConfig]) -> dict[str, Any]:
    """Train one node; with several processes, every rank calls this."""
    import torch.distributed as tdist

    # A group the caller made (jobs.entry agrees on run/skip through one) is the caller's
    # to destroy; one made here is destroyed here, also when training fails.
    owns_group = not (tdist.is_available() and tdist.is_initialized())
    info = init_distributed()
    owns_group = owns_group and info.is_distributed
    try:
        if ctx.rank != info.rank:
            raise ValueError(f"ctx.rank is {ctx.rank} but this process is rank {info.rank} of {info.world_size}")
        return _train(ctx, info)
    finally:
        if owns_group:
            destroy()


def _train(ctx: StageContext[TrainingConfig], info: DistInfo) -> dict[str, Any]:
    from transformers import AutoTokenizer

    quiet_progress_bars()
    cfg = ctx.config
    if not isinstance(cfg, (TrainIntermediateConfig, TrainTargetConfig)):
        raise ValueError(f"xstilts.jobs.stages.train runs train-intermediate and train-target, not '{ctx.node.stage}'")
    seed = cfg.seed
    tuned = _tuned(ctx)
    hparams = Hyperparameters.model_validate({**cfg.hparams.model_dump(), **tuned})
    device = select_device(info.local_world_size)
    encoder_dir = ctx.inputs[encoder_input(cfg)] / MODEL_SUBDIR
    tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
    pad_id = tokenizer.pad_token_id

    mixture = cfg.mixture if isinstance(cfg, TrainIntermediateConfig) else None
    if mixture:
        members = [
            data.with_prepared_labels(get_task(name), data.read_meta(ctx.inputs[f"data.{name}"] / data.DATA_SUBDIR))
            for name in mixture
        ]
        task = replace(members[0], name=cfg.task, kind="mixture", metric="mean")
        head: TaskHead = MixtureHead(task, members)
        parts = {m.name: _prepared(ctx, f"data.{m.name}", m.name, hparams, pad_id) for m in members}
        train_data: data.TokenizedData = MixtureData({name: part[0] for name, part in parts.items()})
        dev_data: data.TokenizedData = MixtureData({name: part[1] for name, part in parts.items()})
        dev_examples: Any = {name: part[2] for name, part in parts.items()}
    else:
        task = data.with_prepared_labels(get_task(cfg.task), data.read_meta(ctx.inputs["data"] / data.DATA_SUBDIR))
        head = head_for(task)
        # Only intermediate tasks can be image tasks (targets are text benchmarks).
        prefix_length = cfg.prefix_length if isinstance(cfg, TrainIntermediateConfig) else None
        head.configure(ctx.inputs["data"] / data.DATA_SUBDIR, prefix_length)
        if not head.trains:
            raise ValueError(f"task {task.name} ({task.kind}) is evaluated zero-shot from an encoder, never trained")
        train_data, dev_data, dev_examples = _prepared(ctx, "data", task.name, hparams, pad_id)

    if isinstance(cfg, TrainTargetConfig) and cfg.continue_head:
        # e.g. XCOPA after SIQA: the first fine-tuning's encoder *and* head go on training
        model = head.load_model(encoder_dir)
    else:
        model = head.build_model(encoder_dir, seed)
    acceleration = AccelerationPolicy.from_env(os.environ)
    config = TrainConfig.from_hparams(hparams, len(train_data), seed, acceleration.eval_batch_size)
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = None
    checkpoint_url = ctx.node_url(CHECKPOINTS_DIR)
    if checkpoint_url:
        checkpoints = CheckpointManager(checkpoint_url, ctx.checkpoint.keep, ctx.checkpoint.async_save, fence=ctx.fence)
    trainer = Trainer(
        model, task, train_data, dev_data, config, device, ctx.out_dir / "metrics.jsonl", ctx.log,
        dist=info, checkpoints=checkpoints, checkpoint_every=ctx.checkpoint.every_steps, stop=ctx.stop,
        dev_examples=dev_examples, head=head, speedups=speedups_for(device, info.world_size, acceleration),
    )
    resumed = trainer.resume_latest()
    with _tracker(ctx, info, resumed, tuned) as tracker:
        trainer.tracker = tracker
        state = trainer.fit()

    weights = trainer.full_state_dict() if info.is_distributed else {}  # collective under FSDP2
    if info.is_main:
        _export(trainer, weights, head, ctx.out_dir / MODEL_SUBDIR)
        tokenizer.save_pretrained(ctx.out_dir / MODEL_SUBDIR)

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
        "speedups": trainer.speedups.describe(),
    }
    if isinstance(cfg, TrainTargetConfig):
        result["intermediate"] = cfg.intermediate
    if mixture:
        result["mixture"] = list(mixture)
    if tuned:
        result["tuned"] = tuned
    return result


def _tracker(ctx: StageContext[TrainingConfig], info: DistInfo, resumed: int | None,
             tuned: dict[str, Any]) -> tracking.Tracker:
    """The live curves of this node (`xstilts.jobs.tracking`), on rank 0 only: event files
    in `<node>/tensorboard/`, and a W&B run when the spec asks for one."""
    if not info.is_main:
        return tracking.Tracker([], ctx.log)
    policy = tracking.TrackingPolicy.from_env(os.environ)
    run = tracking.node_run(ctx.node, extra_config={"tuned": tuned} if tuned else None)
    return tracking.open_tracker(policy, run, ctx.node_url(tracking.TENSORBOARD_DIR), ctx.out_dir, ctx.log,
                                 purge_step=resumed)


def _tuned(ctx: StageContext[TrainingConfig]) -> dict[str, Any]:
    """The hyperparameters a `tune` input chose ({} without one)."""
    if "tune" not in ctx.inputs:
        return {}
    result = json.loads((ctx.inputs["tune"] / "result.json").read_text())
    ctx.log.info("hyperparameters from the search: %s", result["best"])
    return dict(result["best"])


def _prepared(
    ctx: StageContext[TrainingConfig], input_name: str, task: str, hparams: Hyperparameters, pad_id: int
) -> tuple[data.TokenizedData, data.TokenizedData, list[dict[str, Any]]]:
    """English train and dev features, and the dev examples, of a prepare-data input."""
    data_dir = ctx.inputs[input_name] / data.DATA_SUBDIR
    meta = data.read_meta(data_dir)
    if meta["task"] != task:
        raise ValueError(f"data input '{input_name}' holds task '{meta['task']}', this node needs '{task}'")
    if meta["max_seq_length"] != hparams.max_seq_length:
        ctx.log.warning(
            "%s was prepared with max_seq_length %s, hparams say %s; the prepared length applies",
            task, meta["max_seq_length"], hparams.max_seq_length,
        )
    return data.english_train_dev(data_dir, pad_id)


def _export(trainer: Trainer, weights: dict[str, Any], head: TaskHead, out: Path) -> None:
    """Save the best weights as a stock HF model (safetensors).

    An FSDP2 model's class is a generated subclass holding DTensors; the export goes
    through a plain model of the task's head class so the files load anywhere.
    """
    model: Any = trainer.model  # an HF model (every head builds one), maybe sharded
    if not trainer.dist.is_distributed:
        model.to("cpu").save_pretrained(out)
        return
    plain: Any = head.plain_model(model.config)
    plain.load_state_dict(weights)
    plain.save_pretrained(out)
