"""Multiple choice (XCOPA as target; SIQA, COPA, HellaSwag, CommonsenseQA as
intermediate tasks): one score per (context + question, choice) pair, softmax over the
choices of an example.

Each example becomes one feature whose `input_ids` are nested, one token sequence per
choice. The number of choices differs between datasets (COPA 2, SIQA 3, HellaSwag 4,
CommonsenseQA 5) and is normally constant within a split; `collate` nevertheless pads
to the largest count in the batch and masks the missing choices' logits, so a dataset
with a ragged choice count trains and predicts correctly instead of failing on a shape.

Predictions are the chosen index as a string per example, in example order; the XCOPA
submission writer turns them into its JSON lines `{"label": <int>}`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F

from xstilts.jobs.data import IGNORE_INDEX, Batch, TokenizedData
from xstilts.jobs.heads.base import Example, TaskHead
from xstilts.jobs.modeling import fresh_head_model

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase
    from transformers.models.auto.auto_factory import _BaseAutoModelClass

    from xstilts.jobs.device import DeviceInfo

MASKED_LOGIT = -1e4
"""Logit of a padding choice: far below any real score, finite in bf16 and fp32."""


def first_segment(example: Example) -> str:
    """What the choices are paired with: the context, then the question (either may be
    empty: COPA has no separate question text in some sources, HellaSwag no question)."""
    return f"{example.get('context', '')} {example.get('question', '')}".strip()


class MultipleChoiceHead(TaskHead):
    kind = "multiple_choice"

    # ------------------------------------------------------------------ data

    def encode(
        self, examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase, max_seq_length: int, split: str
    ) -> dict[str, list[Any]]:
        """`input_ids[i][c]`: `<s> context question </s></s> choice c </s>`.

        Truncation cuts the context first (`only_first`): the choice is what is scored
        and is short. A pair whose choice alone does not fit falls back to cutting both.
        """
        firsts: list[str] = []
        seconds: list[str] = []
        counts: list[int] = []
        for example in examples:
            choices = list(example["choices"])
            if not choices:
                raise ValueError(f"{self.task.name}: example {example.get('id')} has no choices")
            firsts.extend([first_segment(example)] * len(choices))
            seconds.extend(str(c) for c in choices)
            counts.append(len(choices))
        flat = self._pairs(tokenizer, firsts, seconds, max_seq_length)
        input_ids: list[list[list[int]]] = []
        position = 0
        for count in counts:
            input_ids.append(flat[position : position + count])
            position += count
        # withheld gold (label None) carries no loss
        labels = [IGNORE_INDEX if e.get("label") is None else int(e["label"]) for e in examples]
        return {"input_ids": input_ids, "labels": labels}

    @staticmethod
    def _pairs(
        tokenizer: PreTrainedTokenizerBase, firsts: list[str], seconds: list[str], max_seq_length: int
    ) -> list[list[int]]:
        if not firsts:
            return []
        try:
            return tokenizer(firsts, seconds, truncation="only_first", max_length=max_seq_length)["input_ids"]
        except Exception:  # a choice longer than max_seq_length on its own: encode pair by pair
            rows = []
            for first, second in zip(firsts, seconds):
                try:
                    encoded = tokenizer(first, second, truncation="only_first", max_length=max_seq_length)
                except Exception:
                    encoded = tokenizer(first, second, truncation="longest_first", max_length=max_seq_length)
                rows.append(encoded["input_ids"])
            return rows

    def collate(self, data: TokenizedData, indices: Sequence[int], width: int | None = None) -> Batch:
        """`input_ids`/`attention_mask` of shape [batch, choices, width].

        An example with fewer choices than the widest of the batch repeats its first
        choice in the empty slots (a real input, so no all-padding rows go through the
        encoder) and `extra["choice_mask"]` marks those slots for masking.
        """
        width = width if width is not None else data.width(indices)
        n_choices = max(len(data.input_ids[i]) for i in indices)
        mask = torch.zeros((len(indices), n_choices), dtype=torch.bool)
        rows: list[list[int]] = []
        for row, i in enumerate(indices):
            # A multiple-choice feature nests one token list per choice (see the module doc).
            choices = cast("list[list[int]]", data.input_ids[i])
            mask[row, : len(choices)] = True
            rows.extend(list(choices) + [choices[0]] * (n_choices - len(choices)))
        ids, attention = data.pad(rows, width)
        shape = (len(indices), n_choices, width)
        if data.labels:
            labels = torch.tensor([data.labels[i] for i in indices], dtype=torch.long)
        else:
            labels = torch.zeros(len(indices), dtype=torch.long)
        return Batch(ids.view(shape), attention.view(shape), labels, {"choice_mask": mask})

    # ------------------------------------------------------------------ model

    @staticmethod
    def _auto_class() -> type[_BaseAutoModelClass]:
        from transformers import AutoModelForMultipleChoice

        return AutoModelForMultipleChoice

    def build_model(self, encoder_dir: Path, seed: int) -> torch.nn.Module:
        from transformers import AutoConfig

        # The choice scorer is a single output unit whatever the task's labels are, so the
        # encoder's config is used as it is.
        return fresh_head_model(self._auto_class(), AutoConfig.from_pretrained(encoder_dir), encoder_dir, seed)

    def load_model(self, model_dir: Path) -> torch.nn.Module:
        model = self._auto_class().from_pretrained(model_dir)
        if not type(model).__name__.endswith("ForMultipleChoice"):
            raise ValueError(f"{model_dir}: {type(model).__name__} is not a multiple-choice model")
        return model

    def plain_model(self, config: PretrainedConfig) -> torch.nn.Module:
        return self._auto_class().from_config(config)

    @staticmethod
    def _logits(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        logits = model(**batch.model_inputs()).logits.float()
        mask = batch.extra.get("choice_mask")
        if mask is not None:
            logits = logits.masked_fill(~mask, MASKED_LOGIT)
        return logits

    def loss_sum(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """Cross entropy over each example's choices, summed over examples."""
        return F.cross_entropy(self._logits(model, batch), batch.labels, ignore_index=IGNORE_INDEX, reduction="sum")

    def count_targets(self, data: TokenizedData, indices: Sequence[int]) -> int:
        """Examples with a gold choice (all of them in any real training split)."""
        if not data.labels:
            return len(indices)
        return sum(1 for i in indices if data.labels[i] != IGNORE_INDEX)

    # ------------------------------------------------------------------ evaluation

    def predict(
        self, model: torch.nn.Module, data: TokenizedData, examples: Sequence[Example], device: DeviceInfo,
        batch_size: int,
    ) -> list[str]:
        """The chosen choice index of every example, as a string, in example order."""
        if len(data) != len(examples):
            raise ValueError(f"{len(data)} features for {len(examples)} examples: one feature per example expected")
        was_training = model.training
        model.eval()
        predictions: list[str] = []
        with torch.no_grad():
            for indices in data.ranges(batch_size):
                batch = self.collate(data, indices).to(device.device)
                with device.autocast():
                    logits = self._logits(model, batch)
                predictions.extend(str(i) for i in logits.argmax(dim=-1).cpu().tolist())
        model.train(was_training)
        return predictions

    def references(self, examples: Sequence[Example]) -> list[str | None]:
        """The gold choice index of every example, as a string (compared as text);
        None where the source withholds the gold (such a split can be predicted, not scored)."""
        return [None if e.get("label") is None else str(int(e["label"])) for e in examples]
