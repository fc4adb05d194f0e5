"""Extractive QA (XQuAD, MLQA, TyDiQA-GoldP as targets; SQuAD as intermediate task):
start/end logits over the context tokens, answers read back from the original context.

A context longer than one window becomes several features (`<s> question </s></s>
context window </s>`, windows overlapping by `doc_stride` tokens), as in XTREME's
`run_squad.py`. Every feature stores the index of its example and the character offsets
of its context tokens ([-1, -1] for question and special tokens), so that `predict` can
choose the best span of an example over all its windows and cut the answer text out of
the original context, whitespace and case untouched. The offsets are stored packed, as
the bytes of an int32 array of shape [tokens, 2] (`pack_offsets`/`unpack_offsets`): as
nested lists they would cost two Python objects per token once a split is loaded into
memory, gigabytes for SQuAD's 88k training windows; packed they are one object per
window.

Training labels are token positions of the first gold answer; a window that does not
contain the whole answer, and every window of an unanswerable question (SQuAD v2.0),
points at `<s>` (index 0). Prediction follows XTREME's defaults: the 20 best starts and
ends of each window, spans of at most 30 tokens inside the context, highest start +
end logit wins. Only a task that allows unanswerable questions may answer "" (when the
`<s>` "null" score beats every span).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from xstilts.jobs.data import Batch, TokenizedData
from xstilts.jobs.heads.base import Example, TaskHead
from xstilts.jobs.modeling import fresh_head_model

if TYPE_CHECKING:
    import numpy.typing as npt
    from transformers import PretrainedConfig, PreTrainedTokenizerBase
    from transformers.models.auto.auto_factory import _BaseAutoModelClass

    from xstilts.jobs.device import DeviceInfo
    from xstilts.core.tasks import Task

NO_OFFSET = (-1, -1)
"""Offsets of a token outside the context."""
OFFSET_DTYPE = np.dtype("<i4")
ENCODE_CHUNK = 1000
"""Examples tokenized at once: the tokenizer's offset lists of a whole SQuAD training set
would take several gigabytes of Python objects."""

UNANSWERABLE_METRICS = frozenset({"squad_v2_em_f1"})
"""Metrics of tasks with unanswerable questions: only those may predict "" (no answer)."""

MASKED_LOGIT = -1e4
"""Logit of a padding position in the loss: the loss then does not depend on how much
padding a batch carries (the global batch width varies with its longest member)."""


def pack_offsets(offsets: npt.ArrayLike) -> bytes:
    """[tokens, 2] character offsets as the bytes of a little-endian int32 array."""
    return np.asarray(offsets, dtype=OFFSET_DTYPE).reshape(-1, 2).tobytes()


def unpack_offsets(packed: bytes) -> np.ndarray:
    """The [tokens, 2] int32 offsets `pack_offsets` stored (rows of -1: not context)."""
    return np.frombuffer(packed, dtype=OFFSET_DTYPE).reshape(-1, 2)


def allows_unanswerable(task: Task) -> bool:
    """Whether `task` has questions without answer (SQuAD v2.0 style): its metric says so."""
    return task.metric in UNANSWERABLE_METRICS


class SpanQAHead(TaskHead):
    kind = "span_qa"

    doc_stride: ClassVar[int | None] = None
    """Overlap of consecutive windows in tokens; None: `min(128, max_seq_length // 4)`,
    XTREME's 128 at length 384 and proportionally less for the short test models."""
    max_query_length: ClassVar[int | None] = None
    """Question tokens kept; None: `min(64, max_seq_length // 4)` (XTREME: 64 at 384)."""
    max_answer_length: ClassVar[int] = 30
    n_best: ClassVar[int] = 20

    def __init__(self, task: Task) -> None:
        super().__init__(task)
        self.unanswerable = allows_unanswerable(task)

    def stride(self, max_seq_length: int) -> int:
        return self.doc_stride if self.doc_stride is not None else min(128, max_seq_length // 4)

    def query_limit(self, max_seq_length: int) -> int:
        return self.max_query_length if self.max_query_length is not None else min(64, max_seq_length // 4)

    # ------------------------------------------------------------------ data

    def _questions(
        self, examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase, max_seq_length: int
    ) -> list[str]:
        """Questions cut to `query_limit` tokens (at a token's end in the text), so that
        every window keeps room for more context than the stride."""
        questions = [str(e["question"]).lstrip() for e in examples]  # leading blanks only waste tokens
        limit = self.query_limit(max_seq_length)
        encoded = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
        for index, offsets in enumerate(encoded["offset_mapping"]):
            if len(offsets) > limit:
                questions[index] = questions[index][: offsets[limit - 1][1]]
        return questions

    def encode(
        self, examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase, max_seq_length: int, split: str
    ) -> dict[str, list[Any]]:
        """Columns `input_ids`, `start_positions`, `end_positions`, `example_index`,
        `offsets` (packed, see `pack_offsets`), one row per window."""
        columns: dict[str, list[Any]] = {
            "input_ids": [], "start_positions": [], "end_positions": [], "example_index": [], "offsets": [],
        }
        for first in range(0, len(examples), ENCODE_CHUNK):
            self._encode_chunk(examples, first, tokenizer, max_seq_length, columns)
        return columns

    def _encode_chunk(
        self, examples: Sequence[Example], first: int, tokenizer: PreTrainedTokenizerBase, max_seq_length: int,
        columns: dict[str, list[Any]],
    ) -> None:
        chunk = examples[first : first + ENCODE_CHUNK]
        encoded = tokenizer(
            self._questions(chunk, tokenizer, max_seq_length),
            [str(e["context"]) for e in chunk],
            truncation="only_second",
            max_length=max_seq_length,
            stride=self.stride(max_seq_length),
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        for feature, local in enumerate(encoded["overflow_to_sample_mapping"]):
            offsets = np.asarray(encoded["offset_mapping"][feature], dtype=OFFSET_DTYPE).reshape(-1, 2)
            is_context = np.array([sequence == 1 for sequence in encoded.sequence_ids(feature)], dtype=bool)
            offsets[~is_context] = NO_OFFSET
            start, end = self.answer_tokens(chunk[local], offsets)
            columns["input_ids"].append(encoded["input_ids"][feature])
            columns["start_positions"].append(start)
            columns["end_positions"].append(end)
            columns["example_index"].append(first + int(local))
            columns["offsets"].append(pack_offsets(offsets))

    @staticmethod
    def answer_tokens(example: Example, offsets: np.ndarray) -> tuple[int, int]:
        """Token positions of the first gold answer in a window with these [tokens, 2]
        offsets, or (0, 0) (`<s>`) when there is none or the window misses part of it."""
        answers = example.get("answers") or {}
        texts, starts = answers.get("text") or [], answers.get("answer_start") or []
        if not texts or not starts or not texts[0]:
            return 0, 0
        first_char = int(starts[0])
        end_char = first_char + len(texts[0])  # exclusive
        context = np.flatnonzero((offsets[:, 0] >= 0) & (offsets[:, 1] > offsets[:, 0]))
        if len(context) == 0 or offsets[context[0], 0] > first_char or offsets[context[-1], 1] < end_char:
            return 0, 0
        start = int(context[offsets[context, 1] > first_char][0])  # first token ending after the start
        end = int(context[offsets[context, 0] < end_char][-1])  # last token starting before the end
        return start, end

    def collate(self, data: TokenizedData, indices: Sequence[int], width: int | None = None) -> Batch:
        batch = data.batch(indices, width)
        for name in ("start_positions", "end_positions"):
            batch.extra[name] = torch.tensor([data.columns[name][i] for i in indices], dtype=torch.long)
        return batch

    # ------------------------------------------------------------------ model

    @staticmethod
    def _auto_class() -> type[_BaseAutoModelClass]:
        from transformers import AutoModelForQuestionAnswering

        return AutoModelForQuestionAnswering

    def build_model(self, encoder_dir: Path, seed: int) -> torch.nn.Module:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(encoder_dir)
        config.num_labels = 2  # start and end logit per token
        return fresh_head_model(self._auto_class(), config, encoder_dir, seed)

    def load_model(self, model_dir: Path) -> torch.nn.Module:
        model = self._auto_class().from_pretrained(model_dir)
        if model.config.num_labels != 2:
            raise ValueError(f"{model_dir}: a span QA head has 2 outputs per token, this one {model.config.num_labels}")
        return model

    def plain_model(self, config: PretrainedConfig) -> torch.nn.Module:
        return self._auto_class().from_config(config)

    def loss_sum(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """(CE(start) + CE(end)) / 2 per window, summed over windows; padding excluded."""
        outputs = model(**batch.model_inputs())
        padding = batch.attention_mask == 0
        start = outputs.start_logits.float().masked_fill(padding, MASKED_LOGIT)
        end = outputs.end_logits.float().masked_fill(padding, MASKED_LOGIT)
        loss = F.cross_entropy(start, batch.extra["start_positions"], reduction="sum")
        loss = loss + F.cross_entropy(end, batch.extra["end_positions"], reduction="sum")
        return loss / 2

    def count_targets(self, data: TokenizedData, indices: Sequence[int]) -> int:
        return len(indices)

    # ------------------------------------------------------------------ evaluation

    def best_span(
        self, start_logits: np.ndarray, end_logits: np.ndarray, offsets: np.ndarray
    ) -> tuple[float, int, int] | None:
        """(score, start token, end token) of the best span of one window: among the
        `n_best` highest start and end logits, both tokens in the context, end not
        before start, at most `max_answer_length` tokens; score = start + end logit."""
        n = len(offsets)
        starts = np.argsort(-start_logits[:n], kind="stable")[: self.n_best]
        ends = np.argsort(-end_logits[:n], kind="stable")[: self.n_best]
        s, e = starts[:, None], ends[None, :]
        valid = (offsets[s, 0] >= 0) & (offsets[e, 0] >= 0) & (e >= s) & (e - s + 1 <= self.max_answer_length)
        if not valid.any():
            return None
        scores = np.where(valid, start_logits[s] + end_logits[e], -np.inf)
        i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
        return float(scores[i, j]), int(starts[i]), int(ends[j])

    def predict(
        self, model: torch.nn.Module, data: TokenizedData, examples: Sequence[Example], device: DeviceInfo,
        batch_size: int,
    ) -> dict[str, str]:
        """`{example id: answer text}` over all examples (the official QA submission)."""
        was_training = model.training
        model.eval()
        # example index -> (best span score, text); and the lowest null score of its windows
        spans: dict[int, tuple[float, str]] = {}
        nulls: dict[int, float] = {}
        with torch.no_grad():
            for indices in data.ranges(batch_size):
                batch = self.collate(data, indices).to(device.device)
                with device.autocast():
                    outputs = model(**batch.model_inputs())
                starts = outputs.start_logits.float().cpu().numpy()
                ends = outputs.end_logits.float().cpu().numpy()
                for row, feature in enumerate(indices):
                    example_index = data.columns["example_index"][feature]
                    offsets = unpack_offsets(data.columns["offsets"][feature])
                    null = float(starts[row, 0] + ends[row, 0])
                    nulls[example_index] = min(null, nulls.get(example_index, null))
                    best = self.best_span(starts[row], ends[row], offsets)
                    if best is None or (example_index in spans and spans[example_index][0] >= best[0]):
                        continue
                    context = str(examples[example_index]["context"])
                    text = context[int(offsets[best[1], 0]) : int(offsets[best[2], 1])].strip()
                    spans[example_index] = (best[0], text)
        model.train(was_training)
        predictions: dict[str, str] = {}
        for index, example in enumerate(examples):
            score, text = spans.get(index, (float("-inf"), ""))
            if self.unanswerable and index in nulls and nulls[index] > score:
                text = ""
            predictions[str(example["id"])] = text
        return predictions

    def references(self, examples: Sequence[Example]) -> list[dict[str, Any]]:
        """SQuAD-format gold: one article whose paragraphs are the examples' contexts
        (consecutive questions on the same context share a paragraph, as in the files).

        An unanswerable question (empty answer lists) gets the single gold answer "" and
        `is_impossible`, which is how the SQuAD v2.0 evaluation reads such questions. A
        question whose gold the source withholds (`answers` None) gets no answers: it can
        be predicted and written, not scored.
        """
        paragraphs: list[dict[str, Any]] = []
        for example in examples:
            answers = example.get("answers")
            qa: dict[str, Any] = {"id": str(example["id"]), "question": example["question"], "answers": []}
            if answers is not None:
                qa["answers"] = [
                    {"text": text, "answer_start": int(start)}
                    for text, start in zip(answers.get("text") or [], answers.get("answer_start") or [])
                ]
                if not qa["answers"]:
                    qa["answers"] = [{"text": "", "answer_start": -1}]
                    qa["is_impossible"] = True
            if not paragraphs or paragraphs[-1]["context"] != example["context"]:
                paragraphs.append({"context": example["context"], "qas": []})
            paragraphs[-1]["qas"].append(qa)
        return [{"title": "", "paragraphs": paragraphs}]
