"""Multi-task intermediate training: several tasks, one shared encoder, one head each.

X-STILTs also trains on mixtures of intermediate tasks. A mixture presents itself to the
trainer as a single head over a single dataset:

- the training data is the concatenation of the member tasks' features, so the uniform
  shuffle of `ShuffledBatches` draws every task in proportion to its size (examples-
  proportional sampling), resumable from the same (seed, epoch, position) as any task;
- a batch is split by task, each part collated and scored by its own head, and the loss
  is the sum over the parts (the trainer divides by the total number of targets);
- the model (`MultiTaskModel`) registers the shared encoder once and, per task, only the
  head's own layers, so every weight has exactly one name in state dicts, checkpoints
  and FSDP2 sharding; each member's stock transformers model is kept unregistered and
  called through the parent, so FSDP's hooks on the parent run;
- model selection uses the mean of the members' primary English dev metrics;
- the export is the shared encoder alone: target stages load only encoder weights.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from xstilts.jobs.data import Batch, TokenizedData
from xstilts.jobs.heads.base import Example, TaskHead

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

    from xstilts.jobs.device import DeviceInfo
    from xstilts.core.tasks import Task


class MultiTaskModel(torch.nn.Module):
    """One encoder shared by several stock transformers task models (see module doc)."""

    def __init__(self, models: dict[str, torch.nn.Module]) -> None:
        """`models`: each member's stock transformers task model, as its head built it."""
        super().__init__()
        members = {name: cast("PreTrainedModel", model) for name, model in models.items()}
        first = next(iter(members.values()))
        self.prefix = first.base_model_prefix
        self.config = first.config
        # Multiple-choice heads read the pooler, others build their encoder without one:
        # share an encoder that has it whenever some member needs it.
        pooled = [m.base_model for m in members.values() if getattr(m.base_model, "pooler", None) is not None]
        # The base model of a stock task model is the bare transformers encoder.
        self.encoder = cast("PreTrainedModel", pooled[0] if pooled else first.base_model)
        self.heads = torch.nn.ModuleDict()
        self._models: dict[str, torch.nn.Module] = {}
        for name, model in members.items():
            setattr(model, self.prefix, self.encoder)
            self.heads[name] = torch.nn.ModuleDict(
                {child: module for child, module in model.named_children() if child != self.prefix}
            )
            self._models[name] = model

    @property
    def base_model(self) -> torch.nn.Module:
        """What `xstilts.jobs.distributed.shard_model` shards layer by layer."""
        return self.encoder

    def forward(self, task: str, **inputs: Any) -> Any:
        return self._models[task](**inputs)

    def for_task(self, task: str) -> torch.nn.Module:
        """A module that calls this model for `task` (what a member head predicts with)."""
        return _TaskView(self, task)

    def save_pretrained(self, out: Path) -> None:
        """The shared encoder in HF format (heads are intermediate-only)."""
        self.encoder.save_pretrained(out)


class _TaskView(torch.nn.Module):
    def __init__(self, parent: MultiTaskModel, task: str) -> None:
        super().__init__()
        self.parent = parent
        self.task = task

    def forward(self, **inputs: Any) -> Any:
        return self.parent(self.task, **inputs)


@dataclass
class MixtureBatch:
    """Per-task batches of one global batch, in a fixed task order."""

    parts: dict[str, Batch] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return sum(part.size for part in self.parts.values())

    def to(self, device: torch.device) -> MixtureBatch:
        return MixtureBatch({name: part.to(device) for name, part in self.parts.items()})


class MixtureData(TokenizedData):
    """The members' features concatenated; `owner[i]` is (task, index within that task)."""

    def __init__(self, members: dict[str, TokenizedData]) -> None:
        input_ids: list[Any] = []
        owner: list[tuple[str, int]] = []
        for name, data in members.items():
            input_ids.extend(data.input_ids)
            owner.extend((name, i) for i in range(len(data)))
        pad_id = next(iter(members.values())).pad_id
        super().__init__(input_ids, [], pad_id)
        self.members = members
        self.owner = owner

    def split(self, indices: Sequence[int]) -> dict[str, list[int]]:
        """Member -> its own indices, for the concatenated `indices`."""
        parts: dict[str, list[int]] = {name: [] for name in self.members}
        for i in indices:
            name, local = self.owner[i]
            parts[name].append(local)
        return {name: part for name, part in parts.items() if part}


class MixtureHead(TaskHead):
    """The head of a mixture task (kind "mixture"): delegates to its members' heads."""

    kind = "mixture"

    def __init__(self, task: Task, members: Sequence[Task]) -> None:
        super().__init__(task)
        from xstilts.jobs.heads import head_for

        if len(members) < 2:
            raise ValueError(f"mixture {task.name} needs at least two member tasks")
        self.heads: dict[str, TaskHead] = {member.name: head_for(member) for member in members}
        untrainable = [name for name, head in self.heads.items() if not head.trains]
        if untrainable:
            raise ValueError(f"mixture {task.name}: {untrainable} cannot be trained")

    # ------------------------------------------------------------------ data

    def encode(
        self, examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase, max_seq_length: int, split: str
    ) -> dict[str, list[Any]]:
        raise ValueError(f"mixture {self.task.name} is prepared per member task, not as one dataset")

    def collate(self, data: TokenizedData, indices: Sequence[int], width: int | None = None) -> MixtureBatch:  # type: ignore[override]
        assert isinstance(data, MixtureData)
        return MixtureBatch({
            name: self.heads[name].collate(data.members[name], part, width)
            for name, part in data.split(indices).items()
        })

    def count_targets(self, data: TokenizedData, indices: Sequence[int]) -> int:
        assert isinstance(data, MixtureData)
        return sum(self.heads[name].count_targets(data.members[name], part) for name, part in data.split(indices).items())

    # ------------------------------------------------------------------ model

    def build_model(self, encoder_dir: Path, seed: int) -> MultiTaskModel:
        return MultiTaskModel({
            name: head.build_model(encoder_dir, seed + index) for index, (name, head) in enumerate(self.heads.items())
        })

    def plain_model(self, config: PretrainedConfig) -> MultiTaskModel:
        models = {}
        for name, head in self.heads.items():
            member_config = config.__class__.from_dict(config.to_dict())
            if getattr(head.task, "labels", None):
                member_config.num_labels = len(head.task.labels)
            if head.task.kind == "span_qa":
                member_config.num_labels = 2
            models[name] = head.plain_model(member_config)
        return MultiTaskModel(models)

    def load_model(self, model_dir: Path) -> torch.nn.Module:
        from transformers import AutoModel

        return AutoModel.from_pretrained(model_dir)

    def loss_sum(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        assert isinstance(batch, MixtureBatch) and isinstance(model, MultiTaskModel)
        return sum(
            (self.heads[name].loss_sum(model.for_task(name), part) for name, part in batch.parts.items()),
            torch.zeros((), device=next(iter(batch.parts.values())).input_ids.device),
        )

    # ------------------------------------------------------------------ evaluation

    def predict(
        self, model: torch.nn.Module, data: TokenizedData, examples: Sequence[Example], device: DeviceInfo,
        batch_size: int,
    ) -> Any:
        raise ValueError(f"mixture {self.task.name} is only trained as an intermediate task, never evaluated")

    def references(self, examples: Sequence[Example]) -> Any:
        raise ValueError(f"mixture {self.task.name} has no references of its own")

    @torch.no_grad()
    def evaluate(  # type: ignore[override]
        self, model: torch.nn.Module, data: TokenizedData, examples: dict[str, Sequence[Example]],
        device: DeviceInfo, batch_size: int, lang: str = "en",
    ) -> dict[str, float]:
        """Every member on its own English dev set; `mean` is their primary values' mean."""
        assert isinstance(data, MixtureData) and isinstance(model, MultiTaskModel)
        result: dict[str, float] = {}
        primaries = []
        for name, head in self.heads.items():
            scores = head.evaluate(model.for_task(name), data.members[name], examples[name], device, batch_size, lang)
            primaries.append(head.primary(scores))
            result.update({f"{name}/{key}": value for key, value in scores.items()})
        result["mean"] = statistics.fmean(primaries)
        return result

    def primary(self, result: dict[str, float]) -> float:
        return float(result["mean"])
