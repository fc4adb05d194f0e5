"""Heads whose model is a stock transformers head class: sentence classification and
token tagging.

Classification labels are ids into `task.labels`; tagging labels sit on the first
sub-word of each word, -100 on the other sub-words and special tokens (the XTREME
convention), and predictions are read back at exactly those positions, so seqeval sees
one tag per word of the dataset. Words cut off by truncation lose their label;
`n_words` keeps the original length so that can be counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from xstilts.jobs.data import IGNORE_INDEX, Batch, TokenizedData
from xstilts.jobs.heads.base import Example, TaskHead
from xstilts.jobs.modeling import fresh_head_model, task_config

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase
    from transformers.models.auto.auto_factory import _BaseAutoModelClass

    from xstilts.jobs.device import DeviceInfo


class LabelHead(TaskHead):
    """Common part: a transformers Auto class with `num_labels = len(task.labels)`."""

    auto_class_name: str

    def _auto_class(self) -> type[_BaseAutoModelClass]:
        import transformers

        return getattr(transformers, self.auto_class_name)

    def build_model(self, encoder_dir: Path, seed: int) -> torch.nn.Module:
        return fresh_head_model(self._auto_class(), task_config(encoder_dir, self.task), encoder_dir, seed)

    def plain_model(self, config: PretrainedConfig) -> torch.nn.Module:
        return self._auto_class().from_config(config)

    def load_model(self, model_dir: Path) -> torch.nn.Module:
        model = self._auto_class().from_pretrained(model_dir)
        if model.config.num_labels != len(self.task.labels):
            raise ValueError(
                f"{model_dir}: head has {model.config.num_labels} labels, task {self.task.name} has {len(self.task.labels)}"
            )
        return model

    def loss_sum(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        logits = model(**batch.model_inputs()).logits
        return F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), batch.labels.reshape(-1),
            ignore_index=IGNORE_INDEX, reduction="sum",
        )

    def _argmax(
        self, model: torch.nn.Module, data: TokenizedData, device: DeviceInfo, batch_size: int
    ) -> list[tuple[Any, Any]]:
        """(predicted ids, gold ids) rows, batch by batch, in stored order: an id each for a
        classified sentence, a list of ids (one per position) each for a tagged one, as
        `Tensor.tolist` gives them."""
        was_training = model.training
        model.eval()
        rows: list[tuple[Any, Any]] = []
        for batch in data.sequential(batch_size):
            batch = batch.to(device.device)
            with device.autocast():
                logits = model(**batch.model_inputs()).logits
            rows.extend(zip(logits.argmax(dim=-1).cpu().tolist(), batch.labels.cpu().tolist()))
        model.train(was_training)
        return rows


class ClassificationHead(LabelHead):
    kind = "classification"
    auto_class_name = "AutoModelForSequenceClassification"

    def encode(
        self, examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase, max_seq_length: int, split: str
    ) -> dict[str, list[Any]]:
        label_ids = {label: index for index, label in enumerate(self.task.labels)}
        texts = [e["text"] for e in examples]
        pairs = [e["text_b"] for e in examples] if examples and "text_b" in examples[0] else None
        encoded = tokenizer(texts, pairs, truncation=True, max_length=max_seq_length)
        # withheld gold (label None, an official-layout test file) carries no label
        labels = [IGNORE_INDEX if e.get("label") is None else label_ids[e["label"]] for e in examples]
        return {"input_ids": encoded["input_ids"], "labels": labels}

    def predict(
        self, model: torch.nn.Module, data: TokenizedData, examples: Sequence[Example], device: DeviceInfo,
        batch_size: int,
    ) -> list[str]:
        return [self.task.labels[p] for p, _ in self._argmax(model, data, device, batch_size)]

    def references(self, examples: Sequence[Example]) -> list[str]:
        return [e["label"] for e in examples]


class TaggingHead(LabelHead):
    kind = "tagging"
    auto_class_name = "AutoModelForTokenClassification"

    def encode(
        self, examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase, max_seq_length: int, split: str
    ) -> dict[str, list[Any]]:
        label_ids = {label: index for index, label in enumerate(self.task.labels)}
        encoded = tokenizer(
            [e["tokens"] for e in examples], is_split_into_words=True, truncation=True, max_length=max_seq_length
        )
        all_labels = []
        for index, example in enumerate(examples):
            labels, previous = [], None
            tags = example.get("tags")  # None: withheld gold (official-layout test file), no labels
            for word in encoded.word_ids(index):
                if word is None or word == previous or tags is None:
                    labels.append(IGNORE_INDEX)
                else:
                    labels.append(label_ids.get(tags[word], IGNORE_INDEX))
                previous = word
            all_labels.append(labels)
        return {
            "input_ids": encoded["input_ids"],
            "labels": all_labels,
            "first_subword": [
                [i for i, (w, prev) in enumerate(zip(words, [None, *words])) if w is not None and w != prev]
                for words in (encoded.word_ids(i) for i in range(len(examples)))
            ],
            "n_words": [len(e["tokens"]) for e in examples],
        }

    def predict(
        self, model: torch.nn.Module, data: TokenizedData, examples: Sequence[Example], device: DeviceInfo,
        batch_size: int,
    ) -> list[list[str]]:
        """One tag per word of each sentence: the first sub-word's prediction, and the
        most frequent training tag ("O" for NER) for words truncation cut off, so that
        predictions always align with the gold words (as the official files require)."""
        names = self.task.labels
        fallback = "O" if "O" in names else names[0]
        predictions = []
        for index, (pred_row, _) in enumerate(self._argmax(model, data, device, batch_size)):
            firsts = data.columns["first_subword"][index]
            tags = [names[pred_row[position]] for position in firsts]
            n_words = data.columns["n_words"][index]
            predictions.append(tags + [fallback] * (n_words - len(tags)))
        return predictions

    def references(self, examples: Sequence[Example]) -> list[list[str]]:
        return [list(e["tags"]) for e in examples]
