"""Dual-encoder retrieval (LAReQA, Mewsli-X): one shared encoder embeds queries and
candidates, trained with in-batch negatives on English pairs.

Model: a bare encoder (`AutoModel`, no pooler, no extra parameters), so the export is a
plain encoder that `AutoModel.from_pretrained` reads back and that later stages can use
as any other encoder. Embedding: mean of the last layer's states over the non-padding
tokens, L2-normalised. XTREME-R's baselines (`third_party/bert.py` `BertForRetrieval`,
used by `run_retrieval_qa.py`/`run_retrieval_el.py`) take the L2-normalised *pooler*
output instead (tanh of a dense layer over `[CLS]`); we do not, because the pooler is
not part of every encoder checkpoint here (classification intermediate models have
none), so its weights would be random or depend on the intermediate task, while the
mean of the token states is defined for every encoder.

Training rows `{"id", "query", "positive"}`: the loss is softmax cross entropy over the
similarity of each query with every positive of the batch (the others are its
negatives), logits = `logit_scale` x cosine, summed over queries; XTREME-R uses the same
loss with a scale of 100 on pooler embeddings, we use a fixed 20 (the common choice for
mean-pooled embeddings). Under FSDP each rank's negatives are the positives of its own
share of the batch.

Evaluation rows `{"id", "text", "role", "gold"}`: every query ranks all candidate rows
of the same examples (for LAReQA the pooled answer sentences of every language, for
Mewsli-X the entity descriptions) and keeps the top `TOP_K`. `predict` gives
`{query_id: [candidate ids, best first]}` — the official Mewsli-X submission file
`test-<lang>.json` maps each example id to its top-20 entity ids — and `references`
`{query_id: [gold candidate ids]}` (Mewsli-X's gold file holds a singleton list). A dev
split of training pairs is evaluated the same way, its distinct positives being the pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F

from xstilts.jobs.data import Batch, TokenizedData
from xstilts.jobs.heads.base import Example, TaskHead
from xstilts.jobs.heads.retrieval import (
    bare_encoder_from_config,
    cosine_topk,
    embed_sequences,
    load_bare_encoder,
    pooled_states,
)
from xstilts.jobs.modeling import load_encoder_weights

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

    from xstilts.jobs.device import DeviceInfo

TOP_K = 20
"""Candidates kept per query: XTREME-R scores the top 20 (mAP@20)."""

POSITIVES = "positive_ids"
"""Feature column (training pairs) and `Batch.extra` key of the positives' token ids."""


def _is_pairs(examples: Sequence[Example]) -> bool:
    return bool(examples) and "query" in examples[0]


class DualEncoderHead(TaskHead):
    kind = "dual_encoder"
    logit_scale: ClassVar[float] = 20.0
    """Fixed temperature of the in-batch softmax: logits are 20 x cosine."""

    # ------------------------------------------------------------------ data

    def encode(
        self, examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase, max_seq_length: int, split: str
    ) -> dict[str, list[Any]]:
        """Training pairs: queries in `input_ids`, positives in `positive_ids`.
        Retrieval rows: one `<s> text </s>` row per query or candidate."""
        if not examples:
            return {"input_ids": []}

        def ids(texts: list[str]) -> list[list[int]]:
            return list(tokenizer(texts, truncation=True, max_length=max_seq_length)["input_ids"])

        if _is_pairs(examples):
            return {
                "input_ids": ids([str(e["query"]) for e in examples]),
                POSITIVES: ids([str(e["positive"]) for e in examples]),
            }
        for example in examples:
            if example.get("role") not in ("query", "candidate"):
                raise ValueError(f"{self.task.name}: example {example.get('id')} has role {example.get('role')!r}")
        return {"input_ids": ids([str(e["text"]) for e in examples])}

    def collate(self, data: TokenizedData, indices: Sequence[int], width: int | None = None) -> Batch:
        """Queries as `input_ids`, their positives as `extra["positive_ids"]` (mask in
        `extra["positive_mask"]`), both padded to one width so that `loss_sum` encodes
        them in one forward pass; `labels[i] = i`, the column of query i's positive."""
        if POSITIVES not in data.columns:
            raise ValueError(f"{self.task.name}: only training pairs (query, positive) can be batched for the loss")
        positives = [data.columns[POSITIVES][i] for i in indices]
        queries = [data.input_ids[i] for i in indices]
        common = max(width if width is not None else max(len(q) for q in queries), max(len(p) for p in positives))
        q_ids, q_mask = data.pad(queries, common)
        p_ids, p_mask = data.pad(positives, common)
        labels = torch.arange(len(indices), dtype=torch.long)
        return Batch(q_ids, q_mask, labels, {POSITIVES: p_ids, "positive_mask": p_mask})

    def count_targets(self, data: TokenizedData, indices: Sequence[int]) -> int:
        """One loss term per query."""
        return len(indices)

    # ------------------------------------------------------------------ model

    def build_model(self, encoder_dir: Path, seed: int) -> torch.nn.Module:
        from transformers import AutoConfig

        torch.manual_seed(seed)
        model = bare_encoder_from_config(AutoConfig.from_pretrained(encoder_dir))
        load_encoder_weights(model, encoder_dir)
        return model

    def plain_model(self, config: PretrainedConfig) -> torch.nn.Module:
        return bare_encoder_from_config(config)

    def load_model(self, model_dir: Path) -> torch.nn.Module:
        return load_bare_encoder(model_dir)

    def loss_sum(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """Summed in-batch softmax cross entropy of the queries over the positives."""
        n = batch.size
        ids = torch.cat([batch.input_ids, batch.extra[POSITIVES]])
        mask = torch.cat([batch.attention_mask, batch.extra["positive_mask"]])
        pooled = pooled_states(model, ids, mask)
        # Similarities and softmax in fp32 even under bf16 autocast: 20 x cosine needs
        # more than bf16's 3 significant digits to rank close candidates.
        with torch.autocast(device_type=pooled.device.type, enabled=False):
            embeddings = F.normalize(pooled.float(), dim=-1)
            logits = self.logit_scale * embeddings[:n] @ embeddings[n:].T
            return F.cross_entropy(logits, batch.labels, reduction="sum")

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def predict(
        self, model: torch.nn.Module, data: TokenizedData, examples: Sequence[Example], device: DeviceInfo,
        batch_size: int,
    ) -> dict[str, list[str]]:
        """`{query id: [top-20 candidate ids, best first]}` by cosine similarity."""
        if len(data) != len(examples):
            raise ValueError(f"{len(data)} prepared rows for {len(examples)} examples")
        pool = candidate_pool(examples)
        if not pool.query_ids or not pool.candidate_ids:
            raise ValueError(
                f"{self.task.name}: ranking needs queries and candidates, "
                f"got {len(pool.query_ids)} and {len(pool.candidate_ids)}"
            )
        candidate_column = data.columns[POSITIVES] if pool.from_positives else data.input_ids
        q = embed_sequences(model, [data.input_ids[r] for r in pool.query_rows], data.pad_id, device, batch_size)
        c = embed_sequences(model, [candidate_column[r] for r in pool.candidate_rows], data.pad_id, device, batch_size)
        _, ranked = cosine_topk(q, c, TOP_K)
        return {qid: [pool.candidate_ids[j] for j in row] for qid, row in zip(pool.query_ids, ranked.tolist())}

    def references(self, examples: Sequence[Example]) -> dict[str, list[str]]:
        """`{query id: [gold candidate ids]}`."""
        return candidate_pool(examples).gold


@dataclass(frozen=True)
class CandidatePool:
    """Who ranks what in one split: query ids and their rows, candidate ids and their
    rows (in `input_ids`, or in `positive_ids` when the split is training pairs), gold."""

    query_ids: list[str]
    query_rows: list[int]
    candidate_ids: list[str]
    candidate_rows: list[int]
    gold: dict[str, list[str]]
    from_positives: bool


def candidate_pool(examples: Sequence[Example]) -> CandidatePool:
    """The ranking problem `examples` pose.

    Retrieval rows are used as they are. Training pairs (a dev split during training)
    become a pool of their distinct positives (SQuAD questions share answer sentences),
    named `positive-<n>` in first-seen order, each held by the first row that has it; a
    query's gold is the positive of its own pair.
    """
    if not _is_pairs(examples):
        queries = [(row, e) for row, e in enumerate(examples) if e["role"] == "query"]
        candidates = [(row, e) for row, e in enumerate(examples) if e["role"] == "candidate"]
        return CandidatePool(
            query_ids=[str(e["id"]) for _, e in queries],
            query_rows=[row for row, _ in queries],
            candidate_ids=[str(e["id"]) for _, e in candidates],
            candidate_rows=[row for row, _ in candidates],
            # gold None (withheld): ranked all the same, scored nowhere
            gold={str(e["id"]): [str(g) for g in e.get("gold") or ()] for _, e in queries},
            from_positives=False,
        )
    named: dict[str, str] = {}
    candidate_rows: list[int] = []
    gold: dict[str, list[str]] = {}
    for row, example in enumerate(examples):
        text = str(example["positive"])
        if text not in named:
            named[text] = f"positive-{len(named)}"
            candidate_rows.append(row)
        gold[str(example["id"])] = [named[text]]
    return CandidatePool(
        query_ids=[str(e["id"]) for e in examples],
        query_rows=list(range(len(examples))),
        candidate_ids=list(named.values()),
        candidate_rows=candidate_rows,
        gold=gold,
        from_positives=True,
    )
