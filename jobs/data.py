"""Task data: loading examples, tokenizing them once, storing and batching them.

`prepare-data` tokenizes a task with the experiment's tokenizer once and stores the
result as Arrow datasets (`<out>/data/<split>/<lang>/`); every training and evaluation
node of that task reads those instead of re-tokenizing. Training batches are drawn by a
small iterator whose whole state is two integers (epoch, position), so a checkpoint can
record where in the data a run stopped and a resumed run continues with the same order.

Examples in memory are canonical dicts, whatever their source (`xstilts.jobs.tasks.sources`
documents one schema per kind of task); turning them into model inputs is the job of the
task's head (`xstilts.jobs.heads`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from datasets import Dataset

    from xstilts.core.tasks import Task
    from xstilts.jobs.tasks.sources import LoadedSplit

SPLITS: tuple[str, ...] = ("train", "dev", "test")
DATA_SUBDIR = "data"
IGNORE_INDEX = -100
"""Label of positions that carry no loss and no score (special tokens, non-first sub-words)."""

Examples = dict[str, dict[str, list[dict[str, Any]]]]
"""split -> language -> examples."""


# --------------------------------------------------------------------------------------
# loading examples


def load_examples(task: Task, data_dir: str | None = None, revision: str | None = None) -> Examples:
    """Every split and language `task` has, as canonical examples (`xstilts.jobs.tasks.sources`).

    `data_dir` selects local files (the official XTREME layout, jsonl or tsv) instead of
    the Hugging Face hub, for clusters without internet access; `revision` pins the hub
    datasets (the spec's `data_revision`).
    """
    from xstilts.jobs.tasks import sources

    return {
        split: {lang: sources.load_examples(task, split, lang, data_dir, revision)
                for lang in sources.split_languages(task, split)}
        for split in sources.task_splits(task)
    }


def load_splits(task: Task, data_dir: str | None = None,
                revision: str | None = None) -> dict[str, dict[str, LoadedSplit]]:
    """`load_examples` with what the loader says about each split (withheld gold, the files
    read, a choice such as TyDiQA's English holdout): what `prepare-data` records."""
    from xstilts.jobs.tasks import sources

    return {
        split: {lang: sources.load_split(task, split, lang, data_dir, revision)
                for lang in sources.split_languages(task, split)}
        for split in sources.task_splits(task)
    }


OPEN_TAGSET_MIN_COUNT = 10
"""Tags kept for a tagging task without a fixed tag set (CCG supertags): those seen this
often in training, the standard CCGbank setup (425 categories). Training sets of fewer
than `OPEN_TAGSET_SMALL` sentences (test fixtures) keep every tag they contain."""
OPEN_TAGSET_SMALL = 1000


def open_tagset(train_examples: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """The label set of an open-ended tagging task, most frequent tag first."""
    counts: dict[str, int] = {}
    for example in train_examples:
        for tag in example.get("tags") or ():
            counts[tag] = counts.get(tag, 0) + 1
    min_count = OPEN_TAGSET_MIN_COUNT if len(train_examples) >= OPEN_TAGSET_SMALL else 1
    return tuple(tag for tag, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])) if n >= min_count)


def with_prepared_labels(task: Task, meta: dict[str, Any]) -> Task:
    """`task` with the label set its data was prepared with, for tasks whose labels come
    from the data (the registry leaves them empty)."""
    from dataclasses import replace

    if task.labels or task.kind not in ("classification", "tagging"):
        return task
    return replace(task, labels=tuple(meta["labels"]))


# --------------------------------------------------------------------------------------
# storage
#
# data/<split>/<lang>/features/      Arrow dataset of the head's feature columns
# data/<split>/<lang>/examples.jsonl the canonical examples (predictions map back to them)
# data/meta.json                     task, kind, labels, max_seq_length, counts


def save_split(
    data_dir: Path, split: str, lang: str, columns: dict[str, list[Any]], examples: Sequence[dict[str, Any]]
) -> Path:
    """Store one tokenized split/language and the examples it was made from."""
    from datasets import Dataset

    path = data_dir / split / lang
    Dataset.from_dict(columns).save_to_disk(str(path / "features"))
    with (path / "examples.jsonl").open("w") as handle:
        for example in examples:
            handle.write(json.dumps(example, ensure_ascii=False) + "\n")
    return path


def load_split(data_dir: Path, split: str, lang: str) -> Dataset:
    """The features of one split/language written by `save_split`."""
    from datasets import load_from_disk

    path = data_dir / split / lang / "features"
    if not path.is_dir():
        raise FileNotFoundError(f"no prepared {split} data for language '{lang}' in {data_dir}")
    return load_from_disk(str(path))


def load_split_examples(data_dir: Path, split: str, lang: str) -> list[dict[str, Any]]:
    """The canonical examples of one split/language written by `save_split`."""
    path = data_dir / split / lang / "examples.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no prepared {split} examples for language '{lang}' in {data_dir}")
    with path.open() as handle:
        return [json.loads(line) for line in handle if line.strip()]


def english_train_dev(data_dir: Path, pad_id: int) -> tuple[TokenizedData, TokenizedData, list[dict[str, Any]]]:
    """What every training run reads: English train and dev features, and the dev examples."""
    train = TokenizedData.from_dataset(load_split(data_dir, "train", "en"), pad_id)
    dev = TokenizedData.from_dataset(load_split(data_dir, "dev", "en"), pad_id)
    return train, dev, load_split_examples(data_dir, "dev", "en")


def english_train_size(data_dir: Path) -> int:
    """Training features (what an epoch counts), without reading them (memory-mapped)."""
    return len(load_split(data_dir, "train", "en"))


def write_meta(data_dir: Path, meta: dict[str, Any]) -> None:
    (data_dir / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))


def read_meta(data_dir: Path) -> dict[str, Any]:
    """What `prepare-data` recorded: task, labels, max_seq_length, languages per split."""
    return json.loads((data_dir / "meta.json").read_text())


# --------------------------------------------------------------------------------------
# batching


@dataclass
class Batch:
    """Padded tensors of one batch, ready for a HF model's forward.

    `extra` holds what some heads need besides the three standard tensors (QA start and
    end positions, ...); it moves to the device with the rest.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device),
            {name: tensor.to(device) for name, tensor in self.extra.items()},
        )

    def model_inputs(self) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}


def _length(seq: list[Any]) -> int:
    """Tokens of one feature: a sequence, or the longest of several (multiple choice)."""
    if seq and isinstance(seq[0], list):
        return max(len(choice) for choice in seq)
    return len(seq)


class TokenizedData:
    """Tokenized features of one split held as Python lists, for fast padding into batches.

    Arrow row access costs more per batch than the forward pass of a tiny model, so the
    columns are materialized once; XNLI-sized training sets fit in memory this way too.
    `input_ids` and `labels` are what every head batches; any other stored column (QA
    answer positions, example indices, offsets, ...) is kept in `columns` for the head
    that wrote it.
    """

    def __init__(
        self, input_ids: list[list[int]], labels: list[Any], pad_id: int, columns: dict[str, list[Any]] | None = None
    ) -> None:
        if labels and len(input_ids) != len(labels):
            raise ValueError("input_ids and labels differ in length")
        self.input_ids = input_ids
        self.labels = labels
        self.pad_id = pad_id
        self.columns = columns or {}
        self.token_level = bool(labels) and isinstance(labels[0], list)

    @classmethod
    def from_columns(cls, columns: dict[str, list[Any]], pad_id: int) -> TokenizedData:
        rest = {name: values for name, values in columns.items() if name not in ("input_ids", "labels")}
        return cls(columns["input_ids"], columns.get("labels", []), pad_id, rest)

    @classmethod
    def from_dataset(cls, dataset: Dataset, pad_id: int) -> TokenizedData:
        # `dataset[:]` materializes plain lists; `dataset["input_ids"]` would be a lazy
        # Column (datasets >= 4) that reads Arrow on every element access.
        return cls.from_columns(dataset[:], pad_id)

    def __len__(self) -> int:
        return len(self.input_ids)

    def length(self, index: int) -> int:
        return _length(self.input_ids[index])

    def batch(self, indices: Sequence[int], width: int | None = None) -> Batch:
        """Pad the examples at `indices` to their longest member, or to `width`.

        A rank's share of a global batch is padded to the width of the whole global
        batch, so every rank computes on the shapes a single process would see.
        """
        width = width if width is not None else self.width(indices)
        ids, mask = self.pad([self.input_ids[i] for i in indices], width)
        if self.token_level:
            labels = torch.full((len(indices), width), IGNORE_INDEX, dtype=torch.long)
            for row, i in enumerate(indices):
                labels[row, : len(self.labels[i])] = torch.tensor(self.labels[i], dtype=torch.long)
        elif self.labels:
            labels = torch.tensor([self.labels[i] for i in indices], dtype=torch.long)
        else:
            labels = torch.zeros(len(indices), dtype=torch.long)
        return Batch(ids, mask, labels)

    def pad(self, sequences: Sequence[list[int]], width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`input_ids` and `attention_mask` of `sequences` right-padded to `width`."""
        ids = torch.full((len(sequences), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        return ids, mask

    def width(self, indices: Sequence[int]) -> int:
        """Length of the longest example at `indices`."""
        return max(self.length(i) for i in indices)

    def count_targets(self, indices: Sequence[int]) -> int:
        """Positions that carry loss: examples, or labelled sub-words for tagging.

        The loss of a global batch is the sum over its targets divided by this count;
        each rank divides its share by the *global* count, so that the ranks' gradients
        add up to the gradient of the whole batch (a mean of per-rank means would weigh
        tagging sentences differently on different world sizes).
        """
        if not self.token_level:
            return len(indices)
        return sum(1 for i in indices for label in self.labels[i] if label != IGNORE_INDEX)

    def count_tokens(self, indices: Sequence[int]) -> int:
        """Real (unpadded) tokens of the examples at `indices`, for throughput."""
        total = 0
        for i in indices:
            seq = self.input_ids[i]
            total += sum(len(s) for s in seq) if seq and isinstance(seq[0], list) else len(seq)
        return total

    def ranges(self, batch_size: int) -> Iterator[range]:
        """Index ranges of consecutive batches in stored order (evaluation)."""
        for start in range(0, len(self), batch_size):
            yield range(start, min(start + batch_size, len(self)))

    def sequential(self, batch_size: int) -> Iterator[Batch]:
        """Batches in stored order (evaluation)."""
        for indices in self.ranges(batch_size):
            yield self.batch(indices)


class ShuffledBatches:
    """Endless shuffled batches with a resumable position.

    The order of epoch `e` is drawn from `seed` and `e` alone, so a run is reproducible
    from its seed and can resume mid-epoch from `state_dict()`. A trailing incomplete
    batch is dropped: every optimizer step sees the same number of examples.

    With `group_by_length`, each window of `GROUP_WINDOW` batches of the shuffled order is
    sorted by length before it is cut into batches, and the batches are then shuffled
    again (transformers' `group_by_length`). Batches then hold similar lengths and carry
    little padding: on the synthetic tasks an epoch computes 1.03-1.2x the real tokens
    instead of 1.8-2.1x, so training runs almost twice as fast, while every example is
    still seen once per epoch in an order that changes with seed and epoch.
    """

    GROUP_WINDOW = 32

    def __init__(self, data: TokenizedData, batch_size: int, seed: int, group_by_length: bool = True) -> None:
        if len(data) < batch_size:
            raise ValueError(f"{len(data)} training examples are fewer than one batch of {batch_size}")
        self.data = data
        self.batch_size = batch_size
        self.seed = seed
        self.group_by_length = group_by_length
        self.epoch = 0
        self.position = 0
        self._batches: list[list[int]] | None = None

    @property
    def batches_per_epoch(self) -> int:
        return len(self.data) // self.batch_size

    def _epoch_batches(self) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(self.data), generator=generator).tolist()
        order = order[: self.batches_per_epoch * self.batch_size]
        if not self.group_by_length:
            return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        window = self.GROUP_WINDOW * self.batch_size
        batches: list[list[int]] = []
        for start in range(0, len(order), window):
            chunk = sorted(order[start : start + window], key=self.data.length)
            batches.extend(chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        shuffled = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[i] for i in shuffled]

    def next_indices(self) -> list[int]:
        """Example indices of the next global batch (every rank draws the same ones and
        trains on its own slice of them)."""
        if self.position >= self.batches_per_epoch:
            self.epoch, self.position, self._batches = self.epoch + 1, 0, None
        if self._batches is None:
            self._batches = self._epoch_batches()
        indices = self._batches[self.position]
        self.position += 1
        return list(indices)

    def next(self) -> Batch:
        return self.data.batch(self.next_indices())

    def state_dict(self) -> dict[str, int]:
        """Data position: the order is a function of (seed, epoch), so these three
        numbers are enough to continue with the very next batch."""
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if "seed" in state and int(state["seed"]) != self.seed:
            raise ValueError(f"data position saved for seed {state['seed']}, this run shuffles with seed {self.seed}")
        self.epoch, self.position, self._batches = int(state["epoch"]), int(state["position"]), None


def total_steps(n_examples: int, batch_size: int, grad_accum_steps: int, epochs: float, max_steps: int | None) -> int:
    """Optimizer steps of a run: `max_steps` if set, else `epochs` passes over the data."""
    if max_steps is not None:
        return int(max_steps)
    per_epoch = max(1, (n_examples // batch_size) // grad_accum_steps)
    return max(1, math.ceil(per_epoch * epochs))
