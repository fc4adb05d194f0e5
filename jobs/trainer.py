"""The fine-tuning loop, as a small class whose whole state is explicit.

`Trainer` owns the model, optimizer, scheduler, the resumable batch iterator and a
`TrainState` of plain numbers. `state_dict()` / `load_state_dict()` cover all of them,
so checkpointing (torch.distributed.checkpoint under FSDP2, in a later step) only has to
save and restore that dict between two calls of `step()`; nothing lives in local
variables of `fit()`.

The loop is the standard recipe of XTREME/X-STILTs fine-tuning: AdamW without decay on
biases and norms, linear warmup then linear decay, gradient accumulation, gradient
clipping, evaluation on the English dev set every `eval_interval` optimizer steps and at
the end, keep the best weights by the task's dev metric, and optional early stopping.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from jobs import metrics
from jobs.data import IGNORE_INDEX, ShuffledBatches, TokenizedData, total_steps
from jobs.device import DeviceInfo

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from jobs.tasks.registry import Task


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
    log_interval: int
    eval_batch_size: int

    @classmethod
    def from_hparams(cls, hparams: dict[str, Any], n_train: int, seed: int) -> TrainConfig:
        """Resolve the spec's hyperparameters against the size of the training set."""
        steps = total_steps(
            n_train, hparams["batch_size"], hparams["grad_accum_steps"], hparams["epochs"], hparams.get("max_steps")
        )
        eval_interval = int(hparams["eval_interval"])
        return cls(
            learning_rate=float(hparams["learning_rate"]),
            batch_size=int(hparams["batch_size"]),
            grad_accum_steps=int(hparams["grad_accum_steps"]),
            total_steps=steps,
            warmup_steps=int(float(hparams["warmup_ratio"]) * steps),
            eval_interval=eval_interval,
            patience=hparams.get("patience"),
            weight_decay=float(hparams["weight_decay"]),
            max_grad_norm=float(hparams["max_grad_norm"]),
            seed=int(seed),
            log_interval=int(hparams.get("log_interval") or eval_interval),
            eval_batch_size=int(hparams.get("eval_batch_size") or max(64, 2 * int(hparams["batch_size"]))),
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


def adamw(model: torch.nn.Module, learning_rate: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on biases and LayerNorm weights)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=learning_rate)


@torch.inference_mode()
def predict(
    model: PreTrainedModel, data: TokenizedData, task: Task, device: DeviceInfo, batch_size: int = 128
) -> tuple[list[Any], list[Any]]:
    """Predicted and gold label names, per example (classification) or per sentence of
    labelled words (tagging: the first sub-word of each word, where labels != -100)."""
    was_training = model.training
    model.eval()
    predictions: list[Any] = []
    references: list[Any] = []
    names = task.labels
    for batch in data.sequential(batch_size):
        batch = batch.to(device.device)
        with device.autocast():
            logits = model(**batch.model_inputs()).logits
        best = logits.argmax(dim=-1).cpu()
        gold = batch.labels.cpu()
        if data.token_level:
            for pred_row, gold_row in zip(best.tolist(), gold.tolist()):
                keep = [i for i, g in enumerate(gold_row) if g != IGNORE_INDEX]
                predictions.append([names[pred_row[i]] for i in keep])
                references.append([names[gold_row[i]] for i in keep])
        else:
            predictions.extend(names[p] for p in best.tolist())
            references.extend(names[g] for g in gold.tolist())
    model.train(was_training)
    return predictions, references


def score(model: PreTrainedModel, data: TokenizedData, task: Task, device: DeviceInfo, batch_size: int = 128) -> dict[str, float]:
    """The task's metric(s) of `model` on `data`, in percent."""
    predictions, references = predict(model, data, task, device, batch_size)
    return metrics.compute(task.metric, predictions, references)


class Trainer:
    """Fine-tunes one model on one task; see the module docstring for the recipe."""

    def __init__(
        self,
        model: PreTrainedModel,
        task: Task,
        train_data: TokenizedData,
        dev_data: TokenizedData,
        config: TrainConfig,
        device: DeviceInfo,
        metrics_path: Path,
        log: logging.Logger,
    ) -> None:
        self.task = task
        self.config = config
        self.device = device
        self.log = log
        self.metrics_path = metrics_path
        self.dev_data = dev_data
        self.model = model.to(device.device)
        torch.manual_seed(config.seed)
        self.batches = ShuffledBatches(train_data, config.batch_size, config.seed)
        self.optimizer = adamw(self.model, config.learning_rate, config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, linear_schedule(config.warmup_steps, config.total_steps)
        )
        self.state = TrainState()
        self._best_weights: dict[str, torch.Tensor] | None = None
        self._window_loss = 0.0
        self._window_steps = 0
        self._window_examples = 0
        self._window_start = time.perf_counter()

    # ---------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly (model, optimizer, schedule,
        data position, RNG, counters and the best weights so far)."""
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

    # ---------------------------------------------------------------- loop

    def fit(self) -> TrainState:
        """Train until `total_steps` or early stopping; leave the best weights loaded."""
        started = time.perf_counter()
        self.model.train()
        while self.state.step < self.config.total_steps and not self.state.stopped_early:
            self.step()
            if self.state.step % self.config.log_interval == 0:
                self._log_train()
            if self.state.step % self.config.eval_interval == 0 or self.state.step == self.config.total_steps:
                self.evaluate_dev()
        self.state.train_seconds += time.perf_counter() - started
        self.restore_best()
        return self.state

    def step(self) -> float:
        """One optimizer step over `grad_accum_steps` micro-batches; returns the mean loss."""
        total = 0.0
        for _ in range(self.config.grad_accum_steps):
            batch = self.batches.next().to(self.device.device)
            with self.device.autocast():
                loss = self.model(**batch.model_inputs(), labels=batch.labels).loss
            (loss / self.config.grad_accum_steps).backward()
            total += float(loss.detach())
            self.state.examples_seen += batch.size
            self._window_examples += batch.size
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
        """Score on the English dev set, track the best weights and early stopping."""
        result = score(self.model, self.dev_data, self.task, self.device, self.config.eval_batch_size)
        value = result[self.task.metric]
        improved = self.state.best_metric is None or value > self.state.best_metric
        if improved:
            self.state.best_metric, self.state.best_step, self.state.evals_since_best = value, self.state.step, 0
            self._best_weights = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        else:
            self.state.evals_since_best += 1
            if self.config.patience is not None and self.state.evals_since_best >= self.config.patience:
                self.state.stopped_early = True
        self.state.dev_history.append({"step": self.state.step, **result})
        self._append({"event": "eval", "split": "dev", "step": self.state.step, **result, "best": improved})
        self.log.info("step %d dev %s %.2f%s", self.state.step, self.task.metric, value, " (best)" if improved else "")
        return result

    def restore_best(self) -> None:
        if self._best_weights is not None:
            self.model.load_state_dict(self._best_weights)

    # ---------------------------------------------------------------- logging

    def _log_train(self) -> None:
        now = time.perf_counter()
        elapsed = max(now - self._window_start, 1e-9)
        self._append(
            {
                "event": "train",
                "step": self.state.step,
                "epoch": self.batches.epoch,
                "loss": self._window_loss / max(1, self._window_steps),
                "lr": self.scheduler.get_last_lr()[0],
                "examples_per_s": self._window_examples / elapsed,
            }
        )
        self._window_loss, self._window_steps, self._window_examples = 0.0, 0, 0
        self._window_start = now

    def _append(self, record: dict[str, Any]) -> None:
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
