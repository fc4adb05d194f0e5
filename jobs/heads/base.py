"""The contract every task head implements, whatever the kind of task.

A head owns everything that differs between kinds of task: how canonical examples become
model inputs (`encode`), how stored features become a padded batch (`collate`), which
model class sits on the encoder (`build_model`, `load_model`), the training loss
(`loss_sum`), and how a model's outputs become predictions in the official XTREME
submission shape (`predict`) to be scored against the examples' gold (`references`).
The trainer, the training stage and the evaluate stage only talk to this interface, so a
new kind of task is one new module in `xstilts.jobs.heads` and nothing else.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from xstilts.core import metrics
from xstilts.core.metrics import primary_value
from xstilts.jobs.data import Batch, TokenizedData

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

    from xstilts.jobs.device import DeviceInfo
    from xstilts.core.tasks import Task

Example = dict[str, Any]
SplitLoader = Callable[[str, str], "tuple[TokenizedData, list[Example]]"]
"""(split, lang) -> that split's prepared features and canonical examples."""

def suite_value(metric: str, result: dict[str, float]) -> float:
    """A language's contribution to the XTREME suite score: `xstilts.core.metrics` names it after
    the metric (QA: the mean of exact match and F1, the official `avg_metric`)."""
    return float(result[metric])


class TaskHead(ABC):
    """Kind-specific behaviour for one task (see the module docstring)."""

    kind: ClassVar[str]
    trains: ClassVar[bool] = True
    """False for zero-shot retrieval: evaluated straight from an encoder, never trained."""

    def __init__(self, task: Task) -> None:
        if task.kind != self.kind:
            raise ValueError(f"{type(self).__name__} serves kind '{self.kind}', task {task.name} is '{task.kind}'")
        self.task = task

    # ------------------------------------------------------------------ data

    def expand(self, examples: Sequence[Example], split: str) -> list[Example]:
        """The rows a split is prepared from, made from its canonical examples (image-text
        matching pairs each caption with a matching and a mismatching image); by default
        the examples themselves."""
        return list(examples)

    def configure(self, data_dir: Path, prefix_length: int | None) -> None:
        """Before training: read what the head needs besides the features, from the
        prepared data folder (image features), and the node's image prefix length (image
        tasks that read images). Nothing by default."""

    @abstractmethod
    def encode(
        self, examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase, max_seq_length: int, split: str
    ) -> dict[str, list[Any]]:
        """Feature columns (Arrow-storable lists, one row per feature) for `examples`.

        Must contain `input_ids`. A head may make several features of one example (QA
        windows over a long context) as long as `predict` can map them back.
        """

    def features(self, columns: dict[str, list[Any]], pad_id: int) -> TokenizedData:
        """Stored feature columns as an in-memory, batchable set."""
        return TokenizedData.from_columns(columns, pad_id)

    def collate(self, data: TokenizedData, indices: Sequence[int], width: int | None = None) -> Batch:
        """A padded batch of the features at `indices` (to `width` if given)."""
        return data.batch(indices, width)

    def count_targets(self, data: TokenizedData, indices: Sequence[int]) -> int:
        """How many loss terms the features at `indices` contribute (the loss divisor)."""
        return data.count_targets(indices)

    # ------------------------------------------------------------------ model

    @abstractmethod
    def build_model(self, encoder_dir: Path, seed: int) -> torch.nn.Module:
        """The encoder in `encoder_dir` under a fresh head seeded by `seed`."""

    @abstractmethod
    def load_model(self, model_dir: Path) -> torch.nn.Module:
        """A model this head's training stage saved (or, for `trains=False`, an encoder)."""

    @abstractmethod
    def plain_model(self, config: PretrainedConfig) -> torch.nn.Module:
        """An unsharded, randomly initialised model of the trained class (FSDP export)."""

    @abstractmethod
    def loss_sum(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """Sum of the per-target losses of `batch` (the trainer divides by the global
        target count, so that ranks and accumulation steps add up exactly)."""

    # ------------------------------------------------------------------ evaluation

    @abstractmethod
    def predict(
        self, model: torch.nn.Module, data: TokenizedData, examples: Sequence[Example], device: DeviceInfo,
        batch_size: int,
    ) -> Any:
        """Predictions for `examples` in the shape of the official submission files."""

    @abstractmethod
    def references(self, examples: Sequence[Example]) -> Any:
        """The gold of `examples`, in the shape `metrics.compute` expects with `predict`'s output."""

    def score(self, predictions: Any, references: Any, lang: str) -> dict[str, float]:
        """The task's official metric in percent."""
        return metrics.compute(self.task.metric, predictions, references, language=lang)

    def primary(self, result: dict[str, float]) -> float:
        return primary_value(self.task.metric, result)

    @torch.no_grad()
    def evaluate(
        self, model: torch.nn.Module, data: TokenizedData, examples: Sequence[Example], device: DeviceInfo,
        batch_size: int, lang: str = "en",
    ) -> dict[str, float]:
        """Predict and score one split of one language."""
        predictions = self.predict(model, data, examples, device, batch_size)
        return self.score(predictions, self.references(examples), lang)

    @torch.no_grad()
    def evaluate_language(
        self, model: torch.nn.Module, load: SplitLoader, lang: str, device: DeviceInfo, batch_size: int
    ) -> tuple[Any, dict[str, float]]:
        """Test predictions (official shape) and scores of one language.

        Heads that calibrate on the dev split of the language first (BUCC's mining
        threshold) override this and use `load("dev", lang)` as well.
        """
        data, examples = load("test", lang)
        predictions = self.predict(model, data, examples, device, batch_size)
        return predictions, self.score(predictions, self.references(examples), lang)

    @torch.no_grad()
    def predict_language(
        self, model: torch.nn.Module, load: SplitLoader, lang: str, device: DeviceInfo, batch_size: int
    ) -> Any:
        """Test predictions (official shape) of a language whose test gold is withheld:
        what `evaluate_language` predicts, without reading any test gold (there is none
        to score against; the predictions are for a leaderboard submission)."""
        data, examples = load("test", lang)
        return self.predict(model, data, examples, device, batch_size)
