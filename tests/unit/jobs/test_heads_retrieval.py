"""The zero-shot retrieval head (Tatoeba, BUCC) and the dual-encoder head (LAReQA,
Mewsli-X) on a tiny XLM-R.

What the rest of the system relies on: nearest-neighbour search is exact when the
candidates are copies of the queries, BUCC's margin scoring and threshold choice follow
LASER/XTREME on hand-computed numbers, the embedding comes from the layer the task
names, a few dual-encoder steps lower the in-batch loss, rankings come in the official
`{query id: [top-20 ids]}` shape and score mAP@20 = 100 when queries equal their gold,
and `evaluate_language` works from a `load(split, lang)` callable.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

from xstilts.core import metrics

from xstilts.jobs import synthetic
from xstilts.jobs.data import TokenizedData
from xstilts.jobs.device import DeviceInfo, select_device
from xstilts.jobs.heads import head_for
from xstilts.jobs.heads.dual_encoder import POSITIVES, TOP_K, DualEncoderHead
from xstilts.jobs.heads.retrieval import (
    RetrievalHead,
    best_threshold,
    embed_sequences,
    extract_pairs,
    margin_pairs,
    mean_pool,
)
from xstilts.jobs.stages import prepare_model
from xstilts.core import tasks as registry
from xstilts.core.spec import Hyperparameters
from xstilts.jobs.trainer import Trainer, TrainConfig
from tests.support.stages import TINY_MODEL, make_ctx

Rows = list[dict[str, Any]]


def retrieval_task(metric: str = "accuracy", **changes: Any) -> registry.Task:
    base = dataclasses.replace(
        registry.get_task("syn-sent"), name="tatoeba" if metric == "accuracy" else "bucc2018",
        kind="retrieval", metric=metric, labels=(), languages=("qaa", "qab"),
    )
    return dataclasses.replace(base, **changes)


def dual_task(**changes: Any) -> registry.Task:
    base = dataclasses.replace(
        registry.get_task("syn-sent"), name="lareqa", kind="dual_encoder", metric="map_at_20", labels=(),
        languages=("qaa", "qab"),
    )
    return dataclasses.replace(base, **changes)


def sentences(n: int, seed: int, languages: tuple[str, ...] = ("qaa",)) -> list[str]:
    """`n` distinct synthetic sentences."""
    out: list[str] = []
    for text in synthetic.corpus(list(languages), 4 * n, seed=seed):
        if text not in out:
            out.append(text)
    assert len(out) >= n
    return out[:n]


def row(rid: str, text: str, role: str, gold: list[str] | None = None) -> dict[str, Any]:
    return {"id": rid, "text": text, "role": role, "gold": gold or []}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("heads-retrieval") / "prepare-model"
    prepare_model.run(make_ctx(out, "prepare", {"model": TINY_MODEL, "seed": 0}, kind="model"))
    return out / "model"


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def device() -> DeviceInfo:
    return select_device()


@pytest.fixture(scope="module")
def encoder(model_dir: Path) -> torch.nn.Module:
    return RetrievalHead(retrieval_task()).load_model(model_dir)


def features(head: Any, rows: Rows, tokenizer: Any) -> TokenizedData:
    return head.features(head.encode(rows, tokenizer, 64, "test"), tokenizer.pad_token_id)


def loader(splits: dict[str, Rows], head: Any, tokenizer: Any) -> Callable[[str, str], tuple[TokenizedData, Rows]]:
    calls: list[tuple[str, str]] = []

    def load(split: str, lang: str) -> tuple[TokenizedData, Rows]:
        calls.append((split, lang))
        return features(head, splits[split], tokenizer), splits[split]

    load.calls = calls  # type: ignore[attr-defined]
    return load


def test_registry_maps_both_kinds() -> None:
    assert isinstance(head_for(retrieval_task()), RetrievalHead)
    assert isinstance(head_for(dual_task()), DualEncoderHead)
    assert not RetrievalHead.trains and DualEncoderHead.trains
    with pytest.raises(ValueError, match="serves"):
        RetrievalHead(retrieval_task(metric="map_at_20"))


# ------------------------------------------------------------------ model loading


def test_retrieval_never_trains_and_reads_encoders_under_any_head(model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from xstilts.jobs.modeling import load_encoder_weights

    head = RetrievalHead(retrieval_task())
    for method, args in (("build_model", (model_dir, 0)), ("plain_model", (None,)), ("loss_sum", (None, None))):
        with pytest.raises(ValueError, match="never trained|no loss"):
            getattr(head, method)(*args)

    config = AutoConfig.from_pretrained(model_dir)
    config.num_labels = 3
    classifier = AutoModelForSequenceClassification.from_config(config)
    load_encoder_weights(classifier, model_dir)
    with torch.no_grad():
        classifier.roberta.encoder.layer[1].output.dense.weight.add_(0.5)  # tell it apart from the encoder
    classifier.save_pretrained(tmp_path / "with-head")

    encoder = head.load_model(tmp_path / "with-head")
    assert type(encoder).__name__ == "XLMRobertaModel" and encoder.pooler is None
    expected = classifier.roberta.state_dict()
    for name, tensor in encoder.state_dict().items():
        assert torch.equal(tensor, expected[name]), name


# ------------------------------------------------------------------ layer selection


def test_embedding_uses_the_tasks_layer(model_dir: Path, encoder: torch.nn.Module, tokenizer: Any,
                                        device: DeviceInfo) -> None:
    texts = sentences(5, seed=3)
    seqs = [tokenizer(t)["input_ids"] for t in texts]
    data = TokenizedData(seqs, [], tokenizer.pad_token_id)
    ids, mask = data.pad(seqs, max(map(len, seqs)))
    with torch.no_grad():
        states = encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    assert len(states) == 3  # embeddings + 2 layers
    for k in range(3):
        manual = (states[k] * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
        assert torch.allclose(mean_pool(states[k], mask), manual, atol=1e-6)
        got = embed_sequences(encoder, seqs, tokenizer.pad_token_id, device, 2, hidden_state=k, normalize=False)
        assert torch.allclose(got, manual, atol=1e-5), k
    assert not torch.allclose(states[1], states[2])

    # registry convention: layer L (0-based transformer layer) is hidden_states[L + 1]
    for layer in (0, 1):
        head = RetrievalHead(retrieval_task(retrieval_layer=((2, layer),)))
        assert head.hidden_state_index(encoder) == layer + 1
        got = head.embed(encoder, data, range(len(seqs)), device, 3)
        manual = mean_pool(states[layer + 1], mask)
        assert torch.allclose(got, torch.nn.functional.normalize(manual, dim=-1), atol=1e-5)
    # a task without a table: XTREME's Tatoeba depth (7 of 12 -> relative) -> layer 1 of 2
    assert RetrievalHead(retrieval_task()).hidden_state_index(encoder) == 2
    with pytest.raises(ValueError, match="outside"):
        RetrievalHead(retrieval_task(retrieval_layer=((2, 5),))).hidden_state_index(encoder)


# ------------------------------------------------------------------ Tatoeba


def tatoeba_rows(seed: int, n: int = 12) -> Rows:
    """Queries, then their exact copies as candidates in shuffled order (plus distractors)."""
    texts = sentences(n + 4, seed=seed)
    queries, distractors = texts[:n], texts[n:]
    cand = [(f"en-{i}", t) for i, t in enumerate(queries)] + [(f"en-x{i}", t) for i, t in enumerate(distractors)]
    random.Random(seed).shuffle(cand)
    rows = [row(f"q-{i}", t, "query", [f"en-{i}"]) for i, t in enumerate(queries)]
    return rows + [row(cid, t, "candidate") for cid, t in cand]


def test_tatoeba_exact_copies_score_100(encoder: torch.nn.Module, tokenizer: Any, device: DeviceInfo) -> None:
    head = RetrievalHead(retrieval_task())
    rows = tatoeba_rows(seed=5)
    data = features(head, rows, tokenizer)
    assert data.input_ids == [tokenizer(r["text"])["input_ids"] for r in rows]

    predictions = head.predict(encoder, data, rows, device, batch_size=5)
    references = head.references(rows)
    candidates = [r["id"] for r in rows if r["role"] == "candidate"]
    assert references == [str(candidates.index(f"en-{i}")) for i in range(12)]
    assert predictions == references and all(isinstance(p, str) for p in predictions)
    assert head.score(predictions, references, "qaa") == {"accuracy": 100.0}

    load = loader({"test": rows}, head, tokenizer)
    official, scores = head.evaluate_language(encoder, load, "qaa", device, 7)
    assert official == predictions and scores["accuracy"] == 100.0 and load.calls == [("test", "qaa")]

    # a query whose gold is not a candidate cannot be scored
    with pytest.raises(ValueError, match="exactly one gold"):
        head.references([row("q", "a", "query", ["nowhere"]), row("c", "b", "candidate")])


# ------------------------------------------------------------------ BUCC


def test_margin_scores_on_hand_computed_embeddings() -> None:
    # sims: x1.y1 = 1, x1.y2 = .6, x2.y1 = 0, x2.y2 = .8; k = min(2, 4) = 2
    # fwd means: x1 .8, x2 .4; bwd means: y1 .5, y2 .7
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    pairs = margin_pairs(x, y)
    assert [(i, j) for i, j, _ in pairs] == [(0, 0), (1, 1)]
    assert pairs[0][2] == pytest.approx(1 / 0.65) and pairs[1][2] == pytest.approx(0.8 / 0.55)

    # the greedy 1:1 matching: y2's best source is x1 too, but x1 is taken by (x1, y1)
    y = torch.tensor([[1.0, 0.0], [0.8, 0.6]])
    assert [(i, j) for i, j, _ in margin_pairs(x, y)] == [(0, 0), (1, 1)]
    # only pairs scoring above 0 are candidates
    assert margin_pairs(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])) == []


def test_bucc_threshold_on_dev_gold() -> None:
    scored = [("s1", "t1", 1 / 0.65), ("s2", "t2", 0.8 / 0.55), ("s3", "t3", 0.5)]
    # best F1 after the first pair: the threshold is the midpoint to the next score
    threshold = best_threshold(scored, [("s1", "t1")])
    assert threshold == pytest.approx((1 / 0.65 + 0.8 / 0.55) / 2)
    assert extract_pairs(scored, threshold) == ["s1\tt1"]
    # duplicate gold pairs count once (precision 1, recall 1 after the first pair)
    assert best_threshold(scored, [("s1", "t1"), ("s1", "t1")]) == threshold
    # best F1 after the second pair
    threshold = best_threshold(scored, [("s1", "t1"), ("s2", "t2"), ("s9", "t9")])
    assert threshold == pytest.approx((0.8 / 0.55 + 0.5) / 2)
    assert extract_pairs(scored, threshold) == ["s1\tt1", "s2\tt2"]
    # the best prefix is everything: the last score itself keeps every pair
    assert best_threshold(scored, [("s3", "t3")]) == pytest.approx(0.5)
    # nothing right: threshold 0, every candidate is extracted
    assert best_threshold(scored, [("s8", "t8")]) == 0.0
    assert len(extract_pairs(scored, 0.0)) == 3


def bucc_rows(seed: int) -> Rows:
    """8 source sentences with an exact copy among 12 targets, 3 without; one source
    text occurs twice (two ids: left out of the mined pairs), gold listed twice once."""
    texts = sentences(20, seed=seed)
    paired, lonely, extra = texts[:8], texts[8:11], texts[11:15]
    rows = [row(f"src-{i}", t, "query", [f"tgt-{i}"]) for i, t in enumerate(paired)]
    rows[0]["gold"] = ["tgt-0", "tgt-0"]
    rows += [row(f"src-l{i}", t, "query") for i, t in enumerate(lonely)]
    rows.append(row("src-dup", paired[7], "query", ["tgt-7"]))
    targets = [row(f"tgt-{i}", t, "candidate") for i, t in enumerate(paired)]
    targets += [row(f"tgt-x{i}", t, "candidate") for i, t in enumerate(extra)]
    random.Random(seed).shuffle(targets)
    return rows + targets


def test_bucc_mining_end_to_end(encoder: torch.nn.Module, tokenizer: Any, device: DeviceInfo) -> None:
    head = RetrievalHead(retrieval_task(metric="bucc_f1"))
    dev, test = bucc_rows(seed=11), bucc_rows(seed=11)
    references = head.references(test)
    assert references.count("src-0\ttgt-0") == 1 and "src-dup\ttgt-7" in references  # listed twice
    assert len(references) == 9

    data = features(head, test, tokenizer)
    mined = head.mine(encoder, data, test, device, 4)
    assert mined == sorted(mined, key=lambda p: -p[2])
    assert not {src for src, _, _ in mined} & {"src-7", "src-dup"}  # a text shared by two ids
    assert len({src for src, _, _ in mined}) == len(mined) == len({tgt for _, tgt, _ in mined})
    true_pairs = {(f"src-{i}", f"tgt-{i}") for i in range(7)}
    assert true_pairs <= {(s, t) for s, t, _ in mined}

    load = loader({"dev": dev, "test": test}, head, tokenizer)
    predictions, scores = head.evaluate_language(encoder, load, "qaa", device, 4)
    assert load.calls == [("dev", "qaa"), ("test", "qaa")]
    assert all(line.count("\t") == 1 for line in predictions)
    assert scores["threshold"] == pytest.approx(best_threshold(mined, [tuple(r.split("\t")) for r in references]))
    # exact copies outscore everything else: all 7 minable gold pairs, nothing more
    assert set(predictions) == {f"{s}\t{t}" for s, t in true_pairs}
    expected = metrics.compute("bucc_f1", predictions, references)
    assert scores["f1"] == pytest.approx(expected["f1"]) and scores["precision"] == 100.0
    # 9 distinct gold pairs; src-7 and src-dup share one text, so neither can be mined
    assert scores["recall"] == pytest.approx(100 * 7 / 9)
    # predict() on a split with gold calibrates on that gold (XTREME's bucc_eval)
    assert head.predict(encoder, data, test, device, 4) == predictions


# ------------------------------------------------------------------ dual encoder


def pair_rows(n: int, seed: int) -> Rows:
    """Query: a sentence; positive: the same words in reverse order."""
    return [{"id": f"p{seed}-{i}", "query": t, "positive": " ".join(reversed(t.split()))}
            for i, t in enumerate(sentences(n, seed=seed, languages=("en",)))]


def test_dual_encoder_encode_collate(tokenizer: Any) -> None:
    head = DualEncoderHead(dual_task())
    rows = pair_rows(4, seed=2)
    columns = head.encode(rows, tokenizer, 64, "train")
    assert set(columns) == {"input_ids", POSITIVES}
    assert columns["input_ids"][1] == tokenizer(rows[1]["query"])["input_ids"]
    assert columns[POSITIVES][1] == tokenizer(rows[1]["positive"])["input_ids"]
    data = head.features(columns, tokenizer.pad_token_id)
    batch = head.collate(data, [0, 2, 3], width=40)
    longest = max(len(columns[POSITIVES][i]) for i in (0, 2, 3))
    width = max(40, longest)
    assert batch.input_ids.shape == batch.extra[POSITIVES].shape == batch.extra["positive_mask"].shape == (3, width)
    assert batch.labels.tolist() == [0, 1, 2] and head.count_targets(data, [0, 2, 3]) == 3
    assert batch.extra["positive_mask"][1].sum() == len(columns[POSITIVES][2])
    retrieval = head.encode([row("q", "a b", "query", ["c"]), row("c", "a b", "candidate")], tokenizer, 64, "test")
    assert set(retrieval) == {"input_ids"}
    with pytest.raises(ValueError, match="training pairs"):
        head.collate(head.features(retrieval, tokenizer.pad_token_id), [0, 1])


def test_dual_encoder_training_lowers_the_loss(model_dir: Path, tokenizer: Any, tmp_path: Path,
                                              device: DeviceInfo) -> None:
    """Through the real Trainer: global-width collation, shuffled batches, dev ranking
    of training pairs, and an export stock transformers reads back."""
    from transformers import AutoModel

    head = DualEncoderHead(dual_task())
    pad = tokenizer.pad_token_id
    train_data = TokenizedData.from_columns(head.encode(pair_rows(48, seed=4), tokenizer, 64, "train"), pad)
    dev_rows = pair_rows(12, seed=6)
    dev_data = TokenizedData.from_columns(head.encode(dev_rows, tokenizer, 64, "dev"), pad)
    model = head.build_model(model_dir, seed=0)
    assert type(model).__name__ == "XLMRobertaModel" and model.pooler is None
    hparams = {"learning_rate": 2e-3, "batch_size": 8, "grad_accum_steps": 1, "epochs": 1.0, "max_steps": 16,
               "warmup_ratio": 0.0, "eval_interval": 1000, "patience": None, "weight_decay": 0.0,
               "max_grad_norm": 1.0}
    trainer = Trainer(model, dual_task(), train_data, dev_data, TrainConfig.from_hparams(Hyperparameters.model_validate(hparams), 48, seed=0),
                      device, tmp_path / "metrics.jsonl", logging.getLogger("test"), dev_examples=dev_rows)
    losses = [trainer.step() for _ in range(16)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-4:]) / 4 < 0.5 * sum(losses[:4]) / 4, losses
    result = trainer.evaluate_dev()
    assert set(result) == {"map_at_20"} and result["map_at_20"] > 50.0

    # the export is a plain encoder that stock transformers reads back
    model.save_pretrained(tmp_path / "export")
    reloaded = AutoModel.from_pretrained(tmp_path / "export")
    for name, tensor in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name
    assert isinstance(head.load_model(tmp_path / "export"), type(model))
    assert type(head.plain_model(model.config)) is type(model)


def ranking_rows(seed: int) -> Rows:
    """Queries whose gold candidates are copies of them (one query has two, as LAReQA's
    pooled languages), among more than 20 candidates."""
    texts = sentences(30, seed=seed)
    queries, rest = texts[:6], texts[6:]
    rows = [row(f"q{i}", t, "query", [f"c{i}"]) for i, t in enumerate(queries)]
    rows[0]["gold"] = ["c0", "c0-copy"]
    cands = [row(f"c{i}", t, "candidate") for i, t in enumerate(queries)]
    cands += [row("c0-copy", queries[0], "candidate")]
    cands += [row(f"d{i}", t, "candidate") for i, t in enumerate(rest)]
    random.Random(seed).shuffle(cands)
    return rows + cands


def test_dual_encoder_rankings_and_map(encoder: torch.nn.Module, tokenizer: Any, device: DeviceInfo) -> None:
    head = DualEncoderHead(dual_task())
    rows = ranking_rows(seed=8)
    data = features(head, rows, tokenizer)
    predictions = head.predict(encoder, data, rows, device, batch_size=6)
    references = head.references(rows)
    assert list(predictions) == [f"q{i}" for i in range(6)] == list(references)
    assert references["q0"] == ["c0", "c0-copy"] and references["q3"] == ["c3"]
    candidate_ids = {r["id"] for r in rows if r["role"] == "candidate"}
    assert len(candidate_ids) > TOP_K
    for ranked in predictions.values():
        assert len(ranked) == TOP_K and len(set(ranked)) == TOP_K and set(ranked) <= candidate_ids
    assert set(predictions["q0"][:2]) == {"c0", "c0-copy"}
    assert head.score(predictions, references, "qaa") == {"map_at_20": 100.0}

    load = loader({"test": rows}, head, tokenizer)
    official, scores = head.evaluate_language(encoder, load, "qab", device, 4)
    assert official == predictions and scores["map_at_20"] == 100.0


def test_dual_encoder_dev_pairs_rank_their_distinct_positives(encoder: torch.nn.Module, tokenizer: Any,
                                                              device: DeviceInfo) -> None:
    head = DualEncoderHead(dual_task())
    texts = sentences(5, seed=9)
    # queries equal their positive; q1 and q2 share one positive (SQuAD-style)
    rows = [{"id": f"d{i}", "query": texts[min(i, 4)], "positive": texts[min(i, 4)]} for i in range(5)]
    rows[2] = {"id": "d2", "query": texts[1], "positive": texts[1]}
    data = head.features(head.encode(rows, tokenizer, 64, "dev"), tokenizer.pad_token_id)
    references = head.references(rows)
    assert references == {"d0": ["positive-0"], "d1": ["positive-1"], "d2": ["positive-1"],
                          "d3": ["positive-2"], "d4": ["positive-3"]}
    predictions = head.predict(encoder, data, rows, device, 2)
    assert all(len(r) == 4 for r in predictions.values())  # fewer candidates than 20: all of them
    assert head.evaluate(encoder, data, rows, device, 2) == {"map_at_20": 100.0}
