"""The fine-tuning loop, as a small class whose whole state is explicit.

`Trainer` owns the model, optimizer, scheduler, the resumable batch iterator and a
`TrainState` of plain numbers; nothing lives in local variables of `fit()`, so a
checkpoint taken between two optimizer steps (`save_checkpoint`, torch.distributed
checkpoint, see `xstilts.jobs.checkpoint`) lets `resume_latest` continue bit for bit.

With several processes the model is sharded with FSDP2 (`xstilts.jobs.distributed`); every rank
draws the same global batch and trains on its own contiguous slice of it, padded to the
global batch's width, with the loss normalised by the global number of targets. The
gradient is then that of the global batch whatever the world size (up to float
summation order). Every rank evaluates the whole dev set, so model selection and early
stopping decide the same on all ranks; only rank 0 writes `metrics.jsonl`.

The loop is the standard recipe of XTREME/X-STILTs fine-tuning: AdamW without decay on
biases and norms, linear warmup then linear decay, gradient accumulation, gradient
clipping, evaluation on the English dev set every `eval_interval` optimizer steps and at
the end, keep the best weights by the task's dev metric, and optional early stopping.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from xstilts.jobs.acceleration import Speedups, apply_to_model, speedups_for
from xstilts.jobs.checkpoint import METRICS, CheckpointManager
from xstilts.jobs.data import ShuffledBatches, TokenizedData, total_steps
from xstilts.jobs.device import DeviceInfo
from xstilts.jobs.distributed import SINGLE, DistInfo, all_agree, all_sum, shard_model
from xstilts.jobs.heads import head_for
from xstilts.jobs.stages.base import Preempted

if TYPE_CHECKING:
    from xstilts.core.spec import Hyperparameters
    from xstilts.jobs.heads.base import TaskHead

    from xstilts.core.tasks import Task


MIN_EVAL_BATCH_SIZE = 64


class MetricsSink(Protocol):
    """Where the records of metrics.jsonl also go, as they are written (`jobs.tracking.Tracker`)."""

    def record(self, record: Mapping[str, Any]) -> None: ...


@dataclass(frozen=True)
class TrainConfig:
    """Resolved hyperparameters of one run (steps, not epochs)."""

    learning_rate: float
    batch_size: int
    grad_accum_steps: int
    total_steps: int
    warmup_steps: int
    eval_interval: int
    patience: int | None
    weight_decay: float
    max_grad_norm: float
    seed: int
    eval_batch: int | None = None
    """Dev examples per forward pass (the spec's `acceleration.eval_batch_size`); None: the default."""

    @property
    def log_interval(self) -> int:
        """Steps between train-loss lines of metrics.jsonl: one per dev evaluation."""
        return self.eval_interval

    @property
    def eval_batch_size(self) -> int:
        """Dev examples per forward pass: as set, else twice the training batch (no
        gradients to keep), at least `MIN_EVAL_BATCH_SIZE`. Sized apart from the training
        batch because evaluation holds no activations for a backward pass: a GPU that
        trains 16 examples at a time predicts hundreds. Speed only, never scores."""
        if self.eval_batch is not None:
            return self.eval_batch
        return max(MIN_EVAL_BATCH_SIZE, 2 * self.batch_size)

    @classmethod
    def from_hparams(cls, hparams: Hyperparameters, n_train: int, seed: int,
                     eval_batch_size: int | None = None) -> TrainConfig:
        """Resolve the spec's hyperparameters against the size of the training set."""
        steps = total_steps(n_train, hparams.batch_size, hparams.grad_accum_steps, hparams.epochs, hparams.max_steps)
        return cls(
            learning_rate=hparams.learning_rate,
            batch_size=hparams.batch_size,
            grad_accum_steps=hparams.grad_accum_steps,
            total_steps=steps,
            warmup_steps=int(hparams.warmup_ratio * steps),
            eval_interval=hparams.eval_interval,
            patience=hparams.patience,
            weight_decay=hparams.weight_decay,
            max_grad_norm=hparams.max_grad_norm,
            seed=int(seed),
            eval_batch=eval_batch_size,
        )


@dataclass
class TrainState:
    """Progress counters; everything `fit()` needs to continue after a restore."""

    step: int = 0
    best_metric: float | None = None
    best_step: int = 0
    evals_since_best: int = 0
    stopped_early: bool = False
    examples_seen: int = 0
    train_seconds: float = 0.0
    dev_history: list[dict[str, float]] = field(default_factory=list)


def linear_schedule(warmup_steps: int, total: int) -> Callable[[int], float]:
    """Learning-rate factor: linear warmup to 1, then linear decay to 0 at `total`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total - step) / max(1, total - warmup_steps))

    return factor


def adamw(model: torch.nn.Module, learning_rate: float, weight_decay: float, fused: bool = False) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on biases and LayerNorm weights).

    `fused`: one kernel over all parameters (`Speedups.fused_adamw`, chosen on CUDA and
    CPU); otherwise torch's default multi-tensor (foreach) implementation.
    """
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=learning_rate, fused=fused or None)  # None: torch's default


def _tensors(state: Mapping[str, object]) -> dict[str, torch.Tensor]:
    """A model state dict as what it is, name -> tensor (DCP's helpers type its values
    as anything a state dict may hold)."""
    tensors: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"model state {name} is a {type(value).__name__}, not a tensor")
        tensors[name] = value
    return tensors


RNG_SEED_STRIDE = 7919
"""Rank r seeds its torch RNG with `seed + r * RNG_SEED_STRIDE` (rank 0: the seed
itself), so ranks draw different dropout masks for their different examples."""


class Trainer:
    """Fine-tunes one model on one task; see the module docstring for the recipe."""

    def __init__(
        self,
        model: torch.nn.Module,
        task: Task,
        train_data: TokenizedData,
        dev_data: TokenizedData,
        config: TrainConfig,
        device: DeviceInfo,
        metrics_path: Path,
        log: logging.Logger,
        *,
        dist: DistInfo = SINGLE,
        checkpoints: CheckpointManager | None = None,
        checkpoint_every: int = 0,
        stop: threading.Event | None = None,
        dev_examples: Sequence[dict[str, Any]] | dict[str, Sequence[dict[str, Any]]] = (),
        head: TaskHead | None = None,
        on_eval: Callable[[int, float, dict[str, float]], None] | None = None,
        tracker: MetricsSink | None = None,
        speedups: Speedups | None = None,
    ) -> None:
        if config.batch_size % dist.world_size:
            raise ValueError(
                f"batch_size {config.batch_size} does not split evenly over {dist.world_size} processes"
            )
        self.task = task
        self.head = head if head is not None else head_for(task)
        self.on_eval = on_eval
        """Called after every dev evaluation with (step, primary value, scores): a
        hyperparameter search reports there, so its scheduler can stop bad trials early."""
        self.tracker = tracker
        """Receives every metrics.jsonl record as it is written (rank 0 only): the live
        curves (`xstilts.jobs.tracking`). Settable after a resume, which knows the step."""
        self.dev_examples = dev_examples
        self.config = config
        self.device = device
        self.log = log
        self.metrics_path = metrics_path
        self.train_data = train_data
        self.dev_data = dev_data
        self.dist = dist
        self.checkpoints = checkpoints
        self.checkpoint_every = checkpoint_every
        self.stop = stop if stop is not None else threading.Event()
        self.speedups = speedups if speedups is not None else speedups_for(device, dist.world_size)
        """What this run does to go fast on its device (`xstilts.jobs.acceleration`)."""
        model = apply_to_model(model.to(device.device), self.speedups, log)
        self.model = shard_model(model, dist, self.speedups)
        torch.manual_seed(config.seed + RNG_SEED_STRIDE * dist.rank)
        self.batches = ShuffledBatches(train_data, config.batch_size, config.seed)
        self.optimizer = adamw(self.model, config.learning_rate, config.weight_decay, fused=self.speedups.fused_adamw)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, linear_schedule(config.warmup_steps, config.total_steps)
        )
        self.state = TrainState()
        self._best_weights: dict[str, torch.Tensor] | None = None
        self._saved_step: int | None = None
        self._reset_window()
        self._segment_start = time.perf_counter()

    # ---------------------------------------------------------------- in-memory state

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly, in memory (one process).

        The same content as a checkpoint (`save_checkpoint`), without storage: handy to
        fork a run inside a process; multi-process runs use checkpoints.
        """
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "batches": self.batches.state_dict(),
            "rng": torch.get_rng_state(),
            "state": asdict(self.state),
            "best_weights": self._best_weights,
        }

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.batches.load_state_dict(saved["batches"])
        torch.set_rng_state(saved["rng"])
        self.state = TrainState(**saved["state"])
        self._best_weights = saved["best_weights"]

    # ---------------------------------------------------------------- checkpoints

    def _progress(self) -> dict[str, Any]:
        """The plain-number part of a checkpoint, identical on every rank (DCP stores
        one copy of replicated values)."""
        now = time.perf_counter()
        self.state.train_seconds += now - self._segment_start
        self._segment_start = now
        window_loss = all_sum([self._window_loss])[0]
        return {
            "state": asdict(self.state),
            "scheduler": self.scheduler.state_dict(),
            "batches": self.batches.state_dict(),
            "window": {"loss": window_loss, "steps": self._window_steps,
                       "examples": self._window_examples, "tokens": self._window_tokens},
            "has_best": self._best_weights is not None,
            "world_size": self.dist.world_size,
        }

    def _rng_state(self) -> dict[str, Any]:
        """This rank's random generators. Training draws from torch's (dropout); the
        Python and NumPy ones are saved too so that code using them resumes exactly."""
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "numpy": np.random.get_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state()
        return state

    def save_checkpoint(self) -> bool:
        """Checkpoint the current step (collective); False if it is already saved.

        Contents: model and optimizer (sharded DCP state dicts), the best weights so far
        (same layout as the model), scheduler, data position, counters and early-stopping
        state, the RNG states of every rank under `rng.rank<r>`, and rank 0's
        metrics.jsonl, written before the shards so that `.metadata` covers it.
        """
        if self.checkpoints is None or self._saved_step == self.state.step:
            return False
        model_state, optim_state = get_state_dict(self.model, self.optimizer)
        state = {
            "model": model_state,
            "optim": optim_state,
            "best": self._best_weights if self._best_weights is not None else model_state,
            "progress": json.dumps(self._progress()),
            "rng": {f"rank{self.dist.rank}": self._rng_state()},
        }
        files = {}
        if self.dist.is_main:
            files[METRICS] = self.metrics_path.read_text() if self.metrics_path.exists() else ""
        self.checkpoints.save(self.state.step, state, files)
        self._saved_step = self.state.step
        self.log.info("checkpoint at step %d -> %s", self.state.step, self.checkpoints.step_url(self.state.step))
        return True

    def resume_latest(self) -> int | None:
        """Continue from the newest complete checkpoint, if any; returns its step.

        Each rank restores its own RNG states. After a change of world size, rank r
        restores the saved rank r's states if that rank existed and otherwise keeps its
        fresh seeding (seed + r * RNG_SEED_STRIDE); the run is then reproducible but its
        dropout masks differ from those of an uninterrupted run (the slices of the
        global batch each rank draws masks for have changed anyway).
        """
        if self.checkpoints is None:
            return None
        step = self.checkpoints.latest()
        if step is None:
            return None
        keys = self.checkpoints.saved_keys(step)
        model_state, optim_state = get_state_dict(self.model, self.optimizer)
        best = {name: tensor.detach().clone() for name, tensor in _tensors(model_state).items()}
        state: dict[str, Any] = {"model": model_state, "optim": optim_state, "best": best, "progress": ""}
        own = f"rank{self.dist.rank}"
        rng = {name: placeholder for name, placeholder in self._rng_state().items() if f"rng.{own}.{name}" in keys}
        if rng:
            state["rng"] = {own: rng}
        self.checkpoints.load(step, state)
        set_state_dict(self.model, self.optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        progress = json.loads(state["progress"])
        self.scheduler.load_state_dict(progress["scheduler"])
        self.batches.load_state_dict(progress["batches"])
        self.state = TrainState(**progress["state"])
        self._best_weights = best if progress["has_best"] else None
        window = progress["window"]
        self._reset_window()
        # the saved loss window is the global sum: one rank carries it, all_sum restores it
        self._window_loss = window["loss"] if self.dist.is_main else 0.0
        self._window_steps, self._window_examples, self._window_tokens = (
            window["steps"], window["examples"], window["tokens"])
        self._restore_rng(state.get("rng", {}).get(own, {}))
        if self.dist.is_main:
            metrics_text = self.checkpoints.read_file(step, METRICS)
            self.metrics_path.write_text(metrics_text or "")
        else:
            self.checkpoints.read_file(step, METRICS)  # collective: rank 0 broadcasts it
        self._saved_step = step
        self.log.info("resumed from %s (saved by %d process(es))", self.checkpoints.step_url(step),
                      progress["world_size"])
        return step

    @staticmethod
    def _restore_rng(saved: dict[str, Any]) -> None:
        if "torch" in saved:
            torch.set_rng_state(saved["torch"])
        if "python" in saved:
            random.setstate(saved["python"])
        if "numpy" in saved:
            np.random.set_state(saved["numpy"])
        if "cuda" in saved and torch.cuda.is_available():
            torch.cuda.set_rng_state(saved["cuda"])

    # ---------------------------------------------------------------- loop

    def fit(self) -> TrainState:
        """Train until `total_steps` or early stopping; leave the best weights loaded.

        After every optimizer step: log, evaluate, checkpoint every `checkpoint_every`
        steps, and if `stop` is set on any rank, checkpoint this step on all ranks and
        raise `Preempted` (the next attempt resumes here and redoes no step).
        """
        self._segment_start = time.perf_counter()
        self._window_start = self._segment_start
        self.model.train()
        while self.state.step < self.config.total_steps and not self.state.stopped_early:
            self.step()
            if self.state.step % self.config.log_interval == 0:
                self._log_train()
            if self.state.step % self.config.eval_interval == 0 or self.state.step == self.config.total_steps:
                self.evaluate_dev()
            if self.checkpoint_every and self.state.step % self.checkpoint_every == 0:
                self.save_checkpoint()
            if all_agree(self.stop.is_set()):
                self._preempt()
        self.state.train_seconds += time.perf_counter() - self._segment_start
        if self.checkpoints is not None:
            self.checkpoints.close()
        self.restore_best()
        return self.state

    def _preempt(self) -> None:
        if self.checkpoints is None:
            raise Preempted(f"stopped at step {self.state.step} with no checkpoint location: the next attempt restarts")
        self.save_checkpoint()
        self.checkpoints.close()
        raise Preempted(f"stopped at step {self.state.step}; checkpoint {self.checkpoints.step_url(self.state.step)}")

    def _loss_share(self, indices: list[int]) -> tuple[torch.Tensor, int]:
        """This rank's part of the global batch's mean loss, and its token count.

        Summed over ranks the shares are the mean loss of the whole global batch.
        """
        per_rank = len(indices) // self.dist.world_size
        mine = indices[self.dist.rank * per_rank : (self.dist.rank + 1) * per_rank]
        batch = self.head.collate(self.train_data, mine, width=self.train_data.width(indices)).to(self.device.device)
        with self.device.autocast():
            loss_sum = self.head.loss_sum(self.model, batch)
        targets = self.head.count_targets(self.train_data, indices)
        return loss_sum / max(1, targets), self.train_data.count_tokens(indices)

    def step(self) -> float:
        """One optimizer step over `grad_accum_steps` global batches; returns this rank's
        share of the mean loss (the global mean loss on one process)."""
        total = 0.0
        for _ in range(self.config.grad_accum_steps):
            indices = self.batches.next_indices()
            share, tokens = self._loss_share(indices)
            # FSDP averages gradients over ranks; scaling by the world size makes that a sum.
            (share * self.dist.world_size / self.config.grad_accum_steps).backward()
            total += float(share.detach())
            self.state.examples_seen += len(indices)
            self._window_examples += len(indices)
            self._window_tokens += tokens
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        mean = total / self.config.grad_accum_steps
        self._window_loss += mean
        self._window_steps += 1
        return mean

    def evaluate_dev(self) -> dict[str, float]:
        """Score on the English dev set, track the best weights and early stopping.

        Every rank scores the whole dev set (FSDP needs every rank in every forward), so
        all ranks see the same result and take the same decisions.
        """
        examples: Any = self.dev_examples  # a mixture's head takes {member: examples}
        result = self.head.evaluate(self.model, self.dev_data, examples, self.device, self.config.eval_batch_size)
        value = self.head.primary(result)
        improved = self.state.best_metric is None or value > self.state.best_metric
        if improved:
            self.state.best_metric, self.state.best_step, self.state.evals_since_best = value, self.state.step, 0
            self._best_weights = self._copy_weights()
        else:
            self.state.evals_since_best += 1
            if self.config.patience is not None and self.state.evals_since_best >= self.config.patience:
                self.state.stopped_early = True
        self.state.dev_history.append({"step": self.state.step, **result})
        self._append({"event": "eval", "split": "dev", "step": self.state.step, **result, "best": improved})
        self.log.info("step %d dev %s %.2f%s", self.state.step, self.task.metric, value, " (best)" if improved else "")
        if self.on_eval is not None:
            self.on_eval(self.state.step, value, result)
        return result

    def _copy_weights(self) -> dict[str, torch.Tensor]:
        """A copy of the (local shards of the) weights; on one process, in CPU memory."""
        weights = _tensors(get_model_state_dict(self.model))
        if self.dist.is_distributed:
            return {name: tensor.detach().clone() for name, tensor in weights.items()}
        return {name: tensor.detach().to("cpu", copy=True) for name, tensor in weights.items()}

    def restore_best(self) -> None:
        if self._best_weights is not None:
            weights: dict[str, Any] = dict(self._best_weights)
            set_model_state_dict(self.model, weights)

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The whole model's weights in CPU memory on rank 0 (empty on other ranks).

        Collective under FSDP2: the shards are gathered to rank 0 for the HF export.
        """
        if not self.dist.is_distributed:
            return {name: tensor.detach().cpu() for name, tensor in self.model.state_dict().items()}
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return _tensors(get_model_state_dict(self.model, options=options))

    # ---------------------------------------------------------------- logging

    def _reset_window(self) -> None:
        self._window_loss = 0.0
        self._window_steps = 0
        self._window_examples = 0
        self._window_tokens = 0
        self._window_start = time.perf_counter()

    def _log_train(self) -> None:
        now = time.perf_counter()
        elapsed = max(now - self._window_start, 1e-9)
        window_loss = all_sum([self._window_loss])[0]
        self._append(
            {
                "event": "train",
                "step": self.state.step,
                "epoch": self.batches.epoch,
                "loss": window_loss / max(1, self._window_steps),
                "lr": self.scheduler.get_last_lr()[0],
                "examples_per_s": self._window_examples / elapsed,
                "tokens_per_s": self._window_tokens / elapsed,
            }
        )
        self._reset_window()

    def _append(self, record: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.tracker is not None:
            self.tracker.record(record)
