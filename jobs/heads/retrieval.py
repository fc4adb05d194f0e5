"""Zero-shot sentence retrieval straight from an encoder: Tatoeba and BUCC 2018.

Neither task is trained (`trains = False`): XTREME embeds every sentence with the
pretrained (or intermediate-task) encoder and compares embeddings by cosine similarity.
A sentence embedding is the mean of one layer's hidden states over the sentence's
non-padding tokens, `<s>` and `</s>` included (XTREME's `mean_pool_embedding` with the
default pool mask). The layer is the task's `retrieval_layer_for(depth)`, a 0-based
transformer layer whose output is `hidden_states[layer + 1]` in transformers (index 0 is
the embedding output); XTREME uses a middle layer because the top layers of an MLM
encoder are specialised for predicting tokens and align languages worse.

Rows are the canonical retrieval examples `{"id", "text", "role", "gold"}`; which rows
are queries is the loader's choice (`role`), the head only ranks candidates for them.

* Tatoeba (metric "accuracy"): each query's nearest candidate by cosine similarity.
  `predict` gives, per query in order, the 0-based position of that candidate among the
  candidate rows, as a string (one line of the official `test-<lang>.tsv`); the gold is
  the position of the query's gold candidate (XTREME's label files hold one 0-based
  position per line; XTREME sorts the English side to hide the alignment).
* BUCC (metric "bucc_f1"): bitext mining with the ratio margin of LASER, as XTREME's
  `utils_retrieve.mine_bitext`/`bucc_eval` do (see `margin_pairs`, `best_threshold`):
  candidate pairs are scored, and the score threshold that maximises F1 against the dev
  gold of the same language is applied to the test candidates (`evaluate_language`).
  `predict` gives `"src_id\\ttgt_id"` lines (query id, candidate id), the official
  submission lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F

from xstilts.jobs.data import TokenizedData
from xstilts.jobs.heads.base import Example, SplitLoader, TaskHead

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

    from xstilts.jobs.data import Batch
    from xstilts.jobs.device import DeviceInfo
    from xstilts.core.tasks import Task

DEFAULT_RETRIEVAL_LAYERS: tuple[tuple[int, int], ...] = ((12, 7), (24, 13))
"""Encoder depth -> 0-based layer, for tasks that do not name one: XTREME's Tatoeba choice
(`run_tatoeba.sh`: `--specific_layer 7` of mBERT's 12 layers, 13 of XLM-R large's 24)."""

BUCC_NEIGHBOURS = 4
"""k of the k-nearest-neighbour means in the ratio margin (LASER's and XTREME's default)."""

SIMILARITY_BLOCK = 2**26
"""Similarity-matrix elements computed at once: bounds memory when mining 400k x 400k."""

Pair = tuple[str, str, float]
"""A mined (source id, target id, margin score)."""


# --------------------------------------------------------------------------------------
# sentence embeddings (shared with the dual-encoder head)


def mean_pool(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of `states` (batch, tokens, hidden) over the tokens `attention_mask` keeps, in fp32."""
    mask = attention_mask.unsqueeze(-1).float()
    return (states.float() * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def pooled_states(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, hidden_state: int | None = None
) -> torch.Tensor:
    """Mean-pooled `hidden_states[hidden_state]` (None: the last layer's output)."""
    if hidden_state is None:
        states = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    else:
        outputs = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        states = outputs.hidden_states[hidden_state]
    return mean_pool(states, attention_mask)


@torch.no_grad()
def embed_sequences(
    model: torch.nn.Module, sequences: Sequence[list[int]], pad_id: int, device: DeviceInfo, batch_size: int,
    hidden_state: int | None = None, normalize: bool = True,
) -> torch.Tensor:
    """One embedding per token sequence (rows in input order, fp32, on the device).

    Sequences are batched longest first, so a batch holds similar lengths and the
    padding (which attention masks out anyway) costs little: BUCC embeds 800k sentences.
    """
    if not sequences:
        raise ValueError("nothing to embed")
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]), reverse=True)
    padder = TokenizedData([], [], pad_id)
    out: torch.Tensor | None = None
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            ids, mask = padder.pad([sequences[i] for i in rows], max(len(sequences[i]) for i in rows))
            ids, mask = ids.to(device.device), mask.to(device.device)
            with device.autocast():
                pooled = pooled_states(model, ids, mask, hidden_state)
            if out is None:
                out = torch.empty(len(sequences), pooled.shape[-1], dtype=torch.float32, device=device.device)
            out[torch.tensor(rows, device=device.device)] = pooled.float()
    finally:
        model.train(was_training)
    assert out is not None
    return F.normalize(out, dim=-1) if normalize else out


def cosine_topk(x: torch.Tensor, y: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `k` rows of `y` most similar to each row of `x` (both L2-normalised), best
    first: (similarities, indices), each (len(x), k). Computed in blocks of rows of `x`
    so that the similarity matrix never exceeds `SIMILARITY_BLOCK` elements."""
    k = min(k, y.shape[0])
    rows = max(1, SIMILARITY_BLOCK // max(1, y.shape[0]))
    sims, indices = [], []
    for start in range(0, x.shape[0], rows):
        block = x[start : start + rows] @ y.T
        # k = 1 (Tatoeba) breaks ties towards the first candidate, as faiss's flat index
        # does; topk's order among equal values is unspecified.
        top = block.max(dim=1, keepdim=True) if k == 1 else torch.topk(block, k, dim=1)
        sims.append(top.values)
        indices.append(top.indices)
    return torch.cat(sims), torch.cat(indices)


# --------------------------------------------------------------------------------------
# BUCC mining: LASER's ratio margin, XTREME's threshold selection


def margin_pairs(x: torch.Tensor, y: torch.Tensor, k: int = BUCC_NEIGHBOURS) -> list[tuple[int, int, float]]:
    """Candidate pairs (row of `x`, row of `y`, margin score), best first.

    `x`, `y` are the L2-normalised embeddings of the *distinct* source and target
    sentences. As in LASER's `mine_bitext` (mode "mine", retrieval "max", margin "ratio"),
    which XTREME runs:

    - `fwd_mean[i]` is the mean cosine of source i to its k nearest targets, `bwd_mean[j]`
      that of target j to its k nearest sources (k capped by the other side's size);
    - the score of (i, j) is `cos(i, j) / ((fwd_mean[i] + bwd_mean[j]) / 2)`;
    - every source proposes its best-scoring target among its k nearest, every target
      its best source; all proposals are taken in descending score order, keeping a
      pair only while neither side is used yet (a 1:1 matching), and only if its score
      is above 0 (the default `threshold=0` of `mine_bitext`).
    """
    if x.shape[0] == 0 or y.shape[0] == 0:
        return []
    fwd_sim, fwd_idx = cosine_topk(x, y, k)
    bwd_sim, bwd_idx = cosine_topk(y, x, k)
    fwd_mean, bwd_mean = fwd_sim.mean(dim=1), bwd_sim.mean(dim=1)
    fwd_scores = fwd_sim / ((fwd_mean.unsqueeze(1) + bwd_mean[fwd_idx]) / 2)
    bwd_scores = bwd_sim / ((bwd_mean.unsqueeze(1) + fwd_mean[bwd_idx]) / 2)
    fwd_best_score, fwd_best_at = fwd_scores.max(dim=1)
    bwd_best_score, bwd_best_at = bwd_scores.max(dim=1)
    fwd_best = fwd_idx.gather(1, fwd_best_at.unsqueeze(1)).squeeze(1)
    bwd_best = bwd_idx.gather(1, bwd_best_at.unsqueeze(1)).squeeze(1)
    sources = torch.cat([torch.arange(x.shape[0], device=x.device), bwd_best]).tolist()
    targets = torch.cat([fwd_best, torch.arange(y.shape[0], device=y.device)]).tolist()
    scores = torch.cat([fwd_best_score, bwd_best_score]).double()
    order = torch.sort(scores, descending=True, stable=True).indices.tolist()
    score_list = scores.tolist()
    seen_src: set[int] = set()
    seen_tgt: set[int] = set()
    pairs: list[tuple[int, int, float]] = []
    for n in order:
        i, j = sources[n], targets[n]
        if i in seen_src or j in seen_tgt:
            continue
        seen_src.add(i)
        seen_tgt.add(j)
        if score_list[n] > 0:
            pairs.append((i, j, score_list[n]))
    return pairs


def best_threshold(pairs: Sequence[Pair], gold: Iterable[tuple[str, str]]) -> float:
    """The score threshold with the best F1 of `pairs` against `gold` (XTREME's
    `bucc_optimize`).

    Pairs are walked best first; whenever the F1 of the top i+1 pairs beats the best so
    far, the threshold becomes the midpoint between the scores of pair i and pair i+1
    (our extension: the last pair's own score when it is the last one, where the
    official code would index past the end). With no correct pair at all it stays 0,
    i.e. everything is extracted. Gold pairs count once however often they are listed.
    """
    gold_set = set(gold)
    items = sorted(pairs, key=lambda pair: -pair[2])
    extracted = correct = 0
    threshold = 0.0
    best_f1 = 0.0
    for i, (src, tgt, score) in enumerate(items):
        extracted += 1
        if (src, tgt) in gold_set:
            correct += 1
        if correct:
            precision, recall = correct / extracted, correct / len(gold_set)
            f1 = 2 * precision * recall / (precision + recall)
            if f1 > best_f1:
                best_f1 = f1
                threshold = (score + items[i + 1][2]) / 2 if i + 1 < len(items) else score
    return threshold


def extract_pairs(pairs: Sequence[Pair], threshold: float) -> list[str]:
    """The submission lines `"src\\ttgt"` of the pairs scoring at least `threshold`
    (XTREME's `bucc_extract`), best first."""
    return [f"{src}\t{tgt}" for src, tgt, score in sorted(pairs, key=lambda p: -p[2]) if score >= threshold]


def gold_pairs(examples: Sequence[Example]) -> list[tuple[str, str]]:
    """(query id, candidate id) for every gold link of every query row, as listed."""
    return [(str(e["id"]), str(g)) for e in examples if e["role"] == "query" for g in e.get("gold") or ()]


# --------------------------------------------------------------------------------------
# the head


def _relative_layer(table: Sequence[tuple[int, int]], num_layers: int) -> int:
    known = dict(table)
    if num_layers in known:
        return known[num_layers]
    depth, layer = min(known.items())
    return max(0, min(num_layers - 1, round(layer * num_layers / depth)))


def _bare_encoder_kwargs() -> dict[str, Any]:
    # The pooler is never used here, and with-head checkpoints (classification heads on
    # XLM-R) do not have one: building without it avoids a randomly initialised module.
    return {"add_pooling_layer": False}


def load_bare_encoder(model_dir: Path) -> PreTrainedModel:
    """The encoder of the checkpoint in `model_dir` (bare, or under any task head).

    transformers strips the head model's prefix (`roberta.`) when a base model loads a
    with-head checkpoint; should a version not do so, every encoder weight would be
    reported missing, and the weights are then copied by name instead
    (`xstilts.jobs.modeling.load_encoder_weights`, which fails loudly on a real gap).
    """
    from transformers import AutoConfig, AutoModel

    from xstilts.jobs.modeling import load_encoder_weights

    try:
        model, info = AutoModel.from_pretrained(model_dir, output_loading_info=True, **_bare_encoder_kwargs())
    except TypeError:  # an architecture without a pooler switch
        model, info = AutoModel.from_pretrained(model_dir, output_loading_info=True)
    missing = [key for key in info.get("missing_keys", ()) if not key.startswith("pooler.")]
    if missing:
        model = bare_encoder_from_config(AutoConfig.from_pretrained(model_dir))
        load_encoder_weights(model, model_dir)
    return model


def bare_encoder_from_config(config: PretrainedConfig) -> PreTrainedModel:
    """A randomly initialised bare encoder (`AutoModel`) of `config`, without pooler."""
    from transformers import AutoModel

    try:
        return AutoModel.from_config(config, **_bare_encoder_kwargs())
    except TypeError:
        return AutoModel.from_config(config)


class RetrievalHead(TaskHead):
    """Tatoeba-style nearest neighbour (metric "accuracy") or BUCC-style mining ("bucc_f1")."""

    kind = "retrieval"
    trains = False

    def __init__(self, task: Task) -> None:
        super().__init__(task)
        if task.metric not in ("accuracy", "bucc_f1"):
            raise ValueError(
                f"retrieval task {task.name} has metric '{task.metric}'; the head serves 'accuracy' "
                "(Tatoeba-style nearest neighbour) and 'bucc_f1' (BUCC-style mining)"
            )
        self.mining = task.metric == "bucc_f1"

    # ------------------------------------------------------------------ data

    def encode(
        self, examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase, max_seq_length: int, split: str
    ) -> dict[str, list[Any]]:
        """One `<s> text </s>` row per example, queries and candidates alike."""
        for example in examples:
            if example.get("role") not in ("query", "candidate"):
                raise ValueError(f"{self.task.name}: example {example.get('id')} has role {example.get('role')!r}")
        texts = [str(e["text"]) for e in examples]
        encoded = tokenizer(texts, truncation=True, max_length=max_seq_length) if texts else {"input_ids": []}
        return {"input_ids": list(encoded["input_ids"])}

    # ------------------------------------------------------------------ model

    def build_model(self, encoder_dir: Path, seed: int) -> torch.nn.Module:
        raise ValueError(f"task {self.task.name} is zero-shot retrieval from an encoder: it is never trained")

    def plain_model(self, config: PretrainedConfig) -> torch.nn.Module:
        raise ValueError(f"task {self.task.name} is zero-shot retrieval from an encoder: it is never trained")

    def loss_sum(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        raise ValueError(f"task {self.task.name} is zero-shot retrieval from an encoder: it has no loss")

    def load_model(self, model_dir: Path) -> torch.nn.Module:
        return load_bare_encoder(model_dir)

    def hidden_state_index(self, model: torch.nn.Module) -> int:
        """Index into transformers' `hidden_states` of the layer this task embeds with:
        the task's `retrieval_layer_for(depth)` (0-based layer) + 1, the embedding output
        being index 0; tasks without a table use `DEFAULT_RETRIEVAL_LAYERS`."""
        config = cast("PretrainedConfig", model.config)  # the encoder is a transformers model
        num_layers = int(config.num_hidden_layers)
        layer = None
        if hasattr(self.task, "retrieval_layer_for"):
            layer = self.task.retrieval_layer_for(num_layers)
        if layer is None:
            layer = _relative_layer(DEFAULT_RETRIEVAL_LAYERS, num_layers)
        if not 0 <= layer < num_layers:
            raise ValueError(f"{self.task.name}: retrieval layer {layer} outside the encoder's {num_layers} layers")
        return layer + 1

    def embed(
        self, model: torch.nn.Module, data: TokenizedData, indices: Sequence[int], device: DeviceInfo,
        batch_size: int,
    ) -> torch.Tensor:
        """L2-normalised sentence embeddings of the rows at `indices`, in that order."""
        return embed_sequences(
            model, [data.input_ids[i] for i in indices], data.pad_id, device, batch_size,
            hidden_state=self.hidden_state_index(model),
        )

    # ------------------------------------------------------------------ evaluation

    @staticmethod
    def _roles(data: TokenizedData, examples: Sequence[Example]) -> tuple[list[int], list[int]]:
        if len(data) != len(examples):
            raise ValueError(f"{len(data)} prepared rows for {len(examples)} examples")
        queries = [i for i, e in enumerate(examples) if e["role"] == "query"]
        candidates = [i for i, e in enumerate(examples) if e["role"] == "candidate"]
        if not queries or not candidates:
            raise ValueError(f"retrieval needs queries and candidates, got {len(queries)} and {len(candidates)}")
        return queries, candidates

    def predict(
        self, model: torch.nn.Module, data: TokenizedData, examples: Sequence[Example], device: DeviceInfo,
        batch_size: int,
    ) -> list[str]:
        """Tatoeba: the nearest candidate's position per query. BUCC: the mined pairs
        above the threshold that is best on these examples' own gold (what XTREME's
        `bucc_eval` does on a split with gold; `evaluate_language` instead carries the
        dev threshold over to test)."""
        if self.mining:
            pairs = self.mine(model, data, examples, device, batch_size)
            return extract_pairs(pairs, best_threshold(pairs, gold_pairs(examples)))
        queries, candidates = self._roles(data, examples)
        q = self.embed(model, data, queries, device, batch_size)
        c = self.embed(model, data, candidates, device, batch_size)
        _, nearest = cosine_topk(q, c, 1)
        return [str(int(j)) for j in nearest[:, 0].tolist()]

    def references(self, examples: Sequence[Example]) -> list[str]:
        """Tatoeba: the gold candidate's position per query. BUCC: `"src\\ttgt"` per gold
        link, each pair once (as in the official gold files; the metric uses a set anyway)."""
        if self.mining:
            return list(dict.fromkeys(f"{src}\t{tgt}" for src, tgt in gold_pairs(examples)))
        position = {str(e["id"]): n for n, e in enumerate(e for e in examples if e["role"] == "candidate")}
        gold = []
        for example in examples:
            if example["role"] != "query":
                continue
            links = [str(g) for g in example.get("gold", [])]
            if len(links) != 1 or links[0] not in position:
                raise ValueError(
                    f"{self.task.name}: query {example['id']} needs exactly one gold candidate, has {links}"
                )
            gold.append(str(position[links[0]]))
        return gold

    def mine(
        self, model: torch.nn.Module, data: TokenizedData, examples: Sequence[Example], device: DeviceInfo,
        batch_size: int,
    ) -> list[Pair]:
        """Margin-scored (query id, candidate id, score) pairs, best first.

        As XTREME's files are mined, each side is first reduced to its distinct texts
        (LASER's `text_load_unify`), and a text that several ids share on one side is
        left out of the result, because `read_sent2id` cannot tell which id it is.
        """
        queries, candidates = self._roles(data, examples)
        src_rows, src_ids = self._distinct(examples, queries)
        tgt_rows, tgt_ids = self._distinct(examples, candidates)
        x = self.embed(model, data, src_rows, device, batch_size)
        y = self.embed(model, data, tgt_rows, device, batch_size)
        pairs: list[Pair] = []
        for i, j, score in margin_pairs(x, y):
            if len(src_ids[i]) == 1 and len(tgt_ids[j]) == 1:
                pairs.append((src_ids[i][0], tgt_ids[j][0], score))
        return pairs

    @staticmethod
    def _distinct(examples: Sequence[Example], rows: Sequence[int]) -> tuple[list[int], list[list[str]]]:
        """For each distinct text of `rows` (first-seen order): a row holding it, and the
        ids of all rows that carry it."""
        at: dict[str, int] = {}
        first_rows: list[int] = []
        ids: list[list[str]] = []
        for row in rows:
            text = str(examples[row]["text"])
            if text not in at:
                at[text] = len(first_rows)
                first_rows.append(row)
                ids.append([])
            ids[at[text]].append(str(examples[row]["id"]))
        return first_rows, ids

    @torch.no_grad()
    def evaluate_language(
        self, model: torch.nn.Module, load: SplitLoader, lang: str, device: DeviceInfo, batch_size: int
    ) -> tuple[Any, dict[str, float]]:
        """Tatoeba: predict the test split. BUCC: pick the threshold on the language's dev
        split (best F1 against dev gold), mine test and keep the pairs at or above it;
        the scores then carry `threshold` too."""
        if not self.mining:
            return super().evaluate_language(model, load, lang, device, batch_size)
        threshold = self.dev_threshold(model, load, lang, device, batch_size)
        test_data, test_examples = load("test", lang)
        predictions = extract_pairs(self.mine(model, test_data, test_examples, device, batch_size), threshold)
        scores = self.score(predictions, self.references(test_examples), lang)
        scores["threshold"] = threshold
        return predictions, scores

    @torch.no_grad()
    def predict_language(
        self, model: torch.nn.Module, load: SplitLoader, lang: str, device: DeviceInfo, batch_size: int
    ) -> Any:
        """As `evaluate_language` without scoring: BUCC's withheld test is mined at the
        dev threshold, as the official submission is."""
        if not self.mining:
            return super().predict_language(model, load, lang, device, batch_size)
        threshold = self.dev_threshold(model, load, lang, device, batch_size)
        test_data, test_examples = load("test", lang)
        return extract_pairs(self.mine(model, test_data, test_examples, device, batch_size), threshold)

    def dev_threshold(
        self, model: torch.nn.Module, load: SplitLoader, lang: str, device: DeviceInfo, batch_size: int
    ) -> float:
        """The mining threshold with the best F1 on the language's dev split."""
        dev_data, dev_examples = load("dev", lang)
        dev_pairs = self.mine(model, dev_data, dev_examples, device, batch_size)
        return best_threshold(dev_pairs, gold_pairs(dev_examples))
