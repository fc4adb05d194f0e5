"""The multiple-choice and span-QA heads on a tiny XLM-R.

What the rest of the system relies on: the features have the documented layout (nested
choices; QA windows whose labelled tokens cut exactly the answer out of the context,
and `<s>` where a window misses the answer), a few optimizer steps lower the loss on a
trivially learnable fixture, predictions come in the official submission shapes and
score 100 when they are the gold, and the three stages run end to end for one task of
each kind.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

from xstilts.jobs import data as jdata
from xstilts.jobs.device import select_device
from xstilts.jobs.heads import head_for
from xstilts.jobs.heads.multiple_choice import MultipleChoiceHead
from xstilts.jobs.heads.span_qa import SpanQAHead, unpack_offsets
from xstilts.jobs.stages import evaluate, prepare_data, prepare_model, train
from xstilts.jobs.tasks.sources import LoadedSplit
from xstilts.core import tasks as registry
from xstilts.core.spec import Hyperparameters
from xstilts.jobs.trainer import Trainer, TrainConfig
from tests.support.stages import TINY_MODEL, make_ctx

# Words the tiny tokenizer keeps as one piece each; two disjoint sets make the fixtures
# trivially learnable from token identity.
FILLER = ("no", "be", "fin", "go", "gen", "so", "fu", "dun", "fe", "fos", "gin", "ge", "domo", "gu", "bi")
ANSWERS = ("nantis", "penon", "damanu", "nagupus", "filinfo", "geges", "risbasmes", "lonli", "miba", "bekon")
MARKER = "togin"
NO_OFFSET = [-1, -1]


def mc_task(**changes: Any) -> registry.Task:
    base = dataclasses.replace(
        registry.get_task("syn-sent"), name="xcopa", kind="multiple_choice", metric="accuracy",
        labels=(), languages=("en", "qaa"),
    )
    return dataclasses.replace(base, **changes)


def qa_task(**changes: Any) -> registry.Task:
    base = dataclasses.replace(
        registry.get_task("syn-sent"), name="xquad", kind="span_qa", metric="squad_em_f1",
        labels=(), languages=("en", "qaa"),
    )
    return dataclasses.replace(base, **changes)


def mc_examples(n: int, seed: int, n_choices: int = 3) -> list[dict[str, Any]]:
    """The right choice repeats a word of the context; the others never occur in it."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        context_words = rng.sample(ANSWERS, 4)
        right = rng.choice(context_words)
        choices = rng.sample(FILLER, n_choices - 1)
        label = rng.randrange(n_choices)
        choices.insert(label, right)
        rows.append({"id": f"mc{seed}-{i}", "context": " ".join(context_words), "question": "which ?",
                     "choices": choices, "label": label})
    return rows


def qa_example(qid: str, rng: random.Random, n_words: int, answer_words: int = 1) -> dict[str, Any]:
    """The answer is the word(s) right after the marker, somewhere in a filler context."""
    words = [rng.choice(FILLER) for _ in range(n_words)]
    answer = " ".join(rng.choice(ANSWERS) for _ in range(answer_words))
    at = rng.randrange(n_words)
    context = " ".join(words[:at] + [MARKER, answer] + words[at:])
    start = len(" ".join(words[:at] + [MARKER])) + 1
    assert context[start : start + len(answer)] == answer
    return {"id": qid, "context": context, "question": f"what follows {MARKER} ?",
            "answers": {"text": [answer], "answer_start": [start]}}


def qa_examples(n: int, seed: int, n_words: int = 12) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [qa_example(f"qa{seed}-{i}", rng, n_words, 1 + i % 2) for i in range(n)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("heads-mc-qa")


@pytest.fixture(scope="module")
def encoder(workdir: Path) -> Path:
    out = workdir / "prepare-model"
    prepare_model.run(make_ctx(out, "prepare", {"model": TINY_MODEL, "seed": 0}, kind="model"))
    return out


@pytest.fixture(scope="module")
def tokenizer(encoder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(encoder / "model")


def test_registry_maps_both_kinds() -> None:
    assert isinstance(head_for(mc_task()), MultipleChoiceHead)
    assert isinstance(head_for(qa_task()), SpanQAHead)
    with pytest.raises(ValueError, match="serves kind"):
        SpanQAHead(mc_task())


# ------------------------------------------------------------------ encode


def test_mc_encode_nests_choices_and_collate_pads(tokenizer: Any) -> None:
    head = MultipleChoiceHead(mc_task())
    examples = mc_examples(2, seed=1, n_choices=4) + mc_examples(1, seed=2, n_choices=2)
    columns = head.encode(examples, tokenizer, 64, "train")
    assert [len(row) for row in columns["input_ids"]] == [4, 4, 2]
    assert columns["labels"] == [e["label"] for e in examples]
    for example, row in zip(examples, columns["input_ids"]):
        first = f"{example['context']} {example['question']}"
        assert row == [tokenizer(first, choice)["input_ids"] for choice in example["choices"]]

    data = head.features(columns, tokenizer.pad_token_id)
    batch = head.collate(data, [0, 2], width=40)
    assert batch.input_ids.shape == batch.attention_mask.shape == (2, 4, 40)
    assert batch.extra["choice_mask"].tolist() == [[True] * 4, [True, True, False, False]]
    assert batch.labels.tolist() == [examples[0]["label"], examples[2]["label"]]
    second = columns["input_ids"][2][1]
    assert batch.input_ids[1, 1, : len(second)].tolist() == second
    assert batch.attention_mask[1, 1].sum() == len(second)

    # a long context is cut, the choice is kept whole
    long = dict(examples[0], context=" ".join(FILLER * 8))
    truncated = head.encode([long], tokenizer, 24, "train")["input_ids"][0]
    assert all(len(ids) == 24 for ids in truncated)
    for ids, choice in zip(truncated, long["choices"]):
        assert ids[-len(tokenizer(choice)["input_ids"]) + 1 :] == tokenizer(choice)["input_ids"][1:]


def test_qa_windows_offsets_and_labels(tokenizer: Any) -> None:
    head = SpanQAHead(qa_task())
    rng = random.Random(3)
    long = qa_example("long", rng, n_words=80, answer_words=2)
    short = qa_example("short", rng, n_words=5)
    max_len = 48
    columns = head.encode([long, short], tokenizer, max_len, "train")
    assert set(columns) == {"input_ids", "start_positions", "end_positions", "example_index", "offsets"}
    windows = [f for f, index in enumerate(columns["example_index"]) if index == 0]
    assert len(windows) >= 3 and columns["example_index"][windows[-1] + 1 :] == [1]
    answer = long["answers"]["text"][0]
    labelled = 0
    for f in range(len(columns["input_ids"])):
        ids, offsets = columns["input_ids"][f], unpack_offsets(columns["offsets"][f]).tolist()
        assert len(ids) <= max_len and len(offsets) == len(ids)
        assert offsets[0] == NO_OFFSET and offsets[-1] == NO_OFFSET  # <s> ... </s>
        sep = ids.index(tokenizer.sep_token_id)
        assert all(o == NO_OFFSET for o in offsets[: sep + 2])  # the question carries no offsets
        s, e = columns["start_positions"][f], columns["end_positions"][f]
        example = (long, short)[columns["example_index"][f]]
        if s == 0:
            # the window does not hold the whole answer
            assert e == 0 and columns["example_index"][f] == 0
            covered = [o for o in offsets if o != NO_OFFSET]
            start = example["answers"]["answer_start"][0]
            assert covered[0][0] > start or covered[-1][1] < start + len(answer)
        else:
            labelled += 1
            assert 0 < s <= e and offsets[s] != NO_OFFSET and offsets[e] != NO_OFFSET
            assert example["context"][offsets[s][0] : offsets[e][1]] == example["answers"]["text"][0]
    assert labelled >= 2  # the long answer in at least one window, the short one
    assert any(columns["start_positions"][f] == 0 for f in windows)
    # consecutive windows overlap by the stride
    first, second = (unpack_offsets(columns["offsets"][f]).tolist() for f in windows[:2])
    assert max(o[1] for o in first) > min(o[0] for o in second if o != NO_OFFSET)

    # unanswerable: every window points at <s>
    none = dict(short, id="none", answers={"text": [], "answer_start": []})
    assert head.encode([none], tokenizer, max_len, "train")["start_positions"] == [0]

    # a very long question is cut so that the context keeps most of the window
    question = dict(short, question=" ".join(FILLER * 10))
    ids = head.encode([question], tokenizer, max_len, "dev")["input_ids"][0]
    assert ids.index(tokenizer.sep_token_id) <= head.query_limit(max_len) + 1


def test_qa_encode_in_chunks_keeps_example_indices(tokenizer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from xstilts.jobs.heads import span_qa

    head = SpanQAHead(qa_task())
    examples = qa_examples(5, seed=13, n_words=40)
    whole = head.encode(examples, tokenizer, 40, "dev")
    monkeypatch.setattr(span_qa, "ENCODE_CHUNK", 2)
    assert head.encode(examples, tokenizer, 40, "dev") == whole
    assert sorted(set(whole["example_index"])) == list(range(5))


# ------------------------------------------------------------------ training


def _trainer(head_task: registry.Task, encoder: Path, tokenizer: Any, train_rows: list[dict[str, Any]],
             dev_rows: list[dict[str, Any]], max_len: int, workdir: Path) -> Trainer:
    head = head_for(head_task)
    pad = tokenizer.pad_token_id
    train_data = head.features(head.encode(train_rows, tokenizer, max_len, "train"), pad)
    dev_data = head.features(head.encode(dev_rows, tokenizer, max_len, "dev"), pad)
    hparams = {"learning_rate": 3e-3, "batch_size": 16, "grad_accum_steps": 1, "epochs": 1.0, "max_steps": 50,
               "warmup_ratio": 0.0, "eval_interval": 1000, "patience": None, "weight_decay": 0.0,
               "max_grad_norm": 1.0}
    config = TrainConfig.from_hparams(Hyperparameters.model_validate(hparams), len(train_data), seed=0)
    model = head.build_model(encoder / "model", seed=0)
    return Trainer(model, head_task, train_data, dev_data, config, select_device(),
                   workdir / f"{head_task.name}-metrics.jsonl", logging.getLogger("test"), dev_examples=dev_rows)


def _assert_learns(trainer: Trainer, steps: int) -> None:
    losses = [trainer.step() for _ in range(steps)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses


def test_mc_loss_decreases(encoder: Path, tokenizer: Any, workdir: Path) -> None:
    trainer = _trainer(mc_task(), encoder, tokenizer, mc_examples(160, seed=4), mc_examples(20, seed=5), 32,
                       workdir)
    _assert_learns(trainer, 50)
    result = trainer.evaluate_dev()
    assert set(result) == {"accuracy"} and 0 <= result["accuracy"] <= 100


def test_qa_loss_decreases(encoder: Path, tokenizer: Any, workdir: Path) -> None:
    trainer = _trainer(qa_task(), encoder, tokenizer, qa_examples(160, seed=6), qa_examples(20, seed=7), 48,
                       workdir)
    _assert_learns(trainer, 50)
    result = trainer.evaluate_dev()
    assert {"exact_match", "f1", "squad_em_f1"} <= set(result)


# ------------------------------------------------------------------ prediction


class OracleQA(torch.nn.Module):
    """Stands in for a QA model: high start/end logits at the labelled positions of
    each window it was told about (so at `<s>` for windows without the answer)."""

    def __init__(self, columns: dict[str, list[Any]]) -> None:
        super().__init__()
        self.gold = {
            tuple(ids): (s, e)
            for ids, s, e in zip(columns["input_ids"], columns["start_positions"], columns["end_positions"])
        }

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        starts = torch.zeros(input_ids.shape)
        ends = torch.zeros(input_ids.shape)
        for row in range(input_ids.shape[0]):
            length = int(attention_mask[row].sum())
            s, e = self.gold[tuple(input_ids[row, :length].tolist())]
            starts[row, s] = 10.0
            ends[row, e] = 10.0
        return SimpleNamespace(start_logits=starts, end_logits=ends)


def test_qa_predict_and_references_official_shapes(tokenizer: Any) -> None:
    head = SpanQAHead(qa_task())
    rng = random.Random(8)
    examples = [qa_example(f"q{i}", rng, n_words=60 if i % 2 else 6, answer_words=1 + i % 3) for i in range(6)]
    columns = head.encode(examples, tokenizer, 40, "test")
    assert len(columns["input_ids"]) > len(examples)  # some contexts need several windows
    data = head.features(columns, tokenizer.pad_token_id)
    predictions = head.predict(OracleQA(columns), data, examples, select_device(), batch_size=4)
    assert predictions == {e["id"]: e["answers"]["text"][0] for e in examples}

    references = head.references(examples)
    assert isinstance(references, list) and len(references) == 1
    paragraphs = references[0]["paragraphs"]
    assert [qa["id"] for p in paragraphs for qa in p["qas"]] == [e["id"] for e in examples]
    answer = examples[0]["answers"]
    assert paragraphs[0] == {"context": examples[0]["context"], "qas": [{
        "id": "q0", "question": examples[0]["question"],
        "answers": [{"text": answer["text"][0], "answer_start": answer["answer_start"][0]}],
    }]}
    scores = head.score(predictions, references, "en")
    assert scores["exact_match"] == pytest.approx(100.0) and scores["f1"] == pytest.approx(100.0)
    half = dict(predictions, q0="wrong words")
    assert head.score(half, references, "en")["exact_match"] == pytest.approx(500 / 6)


def test_qa_null_answer_only_where_allowed(tokenizer: Any) -> None:
    rng = random.Random(9)
    answerable = qa_example("a", rng, n_words=8)
    unanswerable = dict(qa_example("u", rng, n_words=8), answers={"text": [], "answer_start": []})
    examples = [answerable, unanswerable]
    for task, expect_null in ((qa_task(), False), (qa_task(name="squad_v2", metric="squad_v2_em_f1"), True)):
        head = SpanQAHead(task)
        columns = head.encode(examples, tokenizer, 48, "dev")
        data = head.features(columns, tokenizer.pad_token_id)
        predictions = head.predict(OracleQA(columns), data, examples, select_device(), batch_size=8)
        assert predictions["a"] == answerable["answers"]["text"][0]
        assert (predictions["u"] == "") is expect_null
    gold = SpanQAHead(qa_task(name="squad_v2", metric="squad_v2_em_f1")).references(examples)[0]["paragraphs"]
    assert gold[1]["qas"][0]["answers"] == [{"text": "", "answer_start": -1}]
    assert gold[1]["qas"][0]["is_impossible"] is True

    # gold withheld by the source (answers None): predictable, labelled <s>, no gold answer
    withheld = dict(answerable, id="w", answers=None)
    head = SpanQAHead(qa_task())
    assert head.encode([withheld], tokenizer, 48, "test")["start_positions"] == [0]
    assert head.references([withheld])[0]["paragraphs"][0]["qas"][0] == {
        "id": "w", "question": withheld["question"], "answers": []}


def test_mc_predict_and_references(encoder: Path, tokenizer: Any) -> None:
    head = MultipleChoiceHead(mc_task())
    examples = mc_examples(7, seed=10, n_choices=2)
    data = head.features(head.encode(examples, tokenizer, 32, "test"), tokenizer.pad_token_id)
    model = head.build_model(encoder / "model", seed=0)
    predictions = head.predict(model, data, examples, select_device(), batch_size=3)
    assert len(predictions) == 7 and set(predictions) <= {"0", "1"}
    references = head.references(examples)
    assert references == [str(e["label"]) for e in examples]
    assert head.score(references, references, "en") == {"accuracy": 100.0}

    # a masked padding choice is never predicted
    class Constant(torch.nn.Module):
        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
            logits = torch.zeros(input_ids.shape[:2])
            logits[:, -1] = 5.0  # prefers the last slot, which is padding for 2-choice rows
            return SimpleNamespace(logits=logits)

    ragged = mc_examples(2, seed=11, n_choices=3) + mc_examples(2, seed=12, n_choices=2)
    ragged_data = head.features(head.encode(ragged, tokenizer, 32, "test"), tokenizer.pad_token_id)
    assert head.predict(Constant(), ragged_data, ragged, select_device(), batch_size=4) == ["2", "2", "0", "0"]

    # gold withheld by the source (label None): no loss target, no reference
    withheld = [dict(examples[0], label=None), examples[1]]
    columns = head.encode(withheld, tokenizer, 32, "test")
    assert columns["labels"] == [jdata.IGNORE_INDEX, examples[1]["label"]]
    assert head.count_targets(head.features(columns, tokenizer.pad_token_id), [0, 1]) == 1
    assert head.references(withheld) == [None, str(examples[1]["label"])]


# ------------------------------------------------------------------ stages end to end


HPARAMS: dict[str, Any] = {
    "learning_rate": 3e-3, "batch_size": 16, "grad_accum_steps": 1, "epochs": 1.0, "max_steps": 6,
    "warmup_ratio": 0.0, "max_seq_length": 48, "eval_interval": 3, "patience": None, "weight_decay": 0.0,
    "max_grad_norm": 1.0,
}


@pytest.fixture(scope="module")
def stage_tasks() -> Iterator[dict[str, tuple[registry.Task, jdata.Examples]]]:
    """One task per kind, registered under official task names (so the official file
    layout applies) with fixture examples served in place of `xstilts.jobs.tasks.sources`."""
    tasks = {
        "xcopa": (mc_task(), {"train": {"en": mc_examples(48, 20, 2)}, "dev": {"en": mc_examples(16, 21, 2)},
                              "test": {"en": mc_examples(10, 22, 2), "qaa": mc_examples(12, 23, 2)}}),
        "xquad": (qa_task(), {"train": {"en": qa_examples(48, 24, 30)}, "dev": {"en": qa_examples(16, 25, 30)},
                              "test": {"en": qa_examples(10, 26, 30), "qaa": qa_examples(12, 27, 30)}}),
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, (task, _) in tasks.items():
            patch.setitem(registry.TASKS, name, task)
        patch.setattr(jdata, "load_splits", lambda task, data_dir=None, revision=None: {
            split: {lang: LoadedSplit(rows) for lang, rows in by_lang.items()}
            for split, by_lang in tasks[task.name][1].items()})
        yield tasks


@pytest.mark.parametrize("name", ["xcopa", "xquad"])
def test_stages_end_to_end(name: str, workdir: Path, encoder: Path, stage_tasks: Any) -> None:
    import json

    from xstilts.analysis.score import score_language
    from xstilts.core.official import official_path

    task, examples = stage_tasks[name]
    data_node = workdir / f"data-{name}"
    prepared = prepare_data.run(make_ctx(data_node, "prepare", {"task": name, "max_seq_length": 48},
                                         {"model": encoder}, kind="data", task=name))
    assert prepared["counts"]["test"] == {"en": 10, "qaa": 12}
    if name == "xquad":
        assert prepared["features"]["train"]["en"] > 48  # 30-word contexts need two windows at 48 tokens

    trained = workdir / f"target-{name}"
    result = train.run(make_ctx(trained, "train-target", {"task": name, "seed": 0, "hparams": HPARAMS,
                                                          "intermediate": "none"},
                                {"init": encoder, "data": data_node}, task=name, seed=0))
    assert result["steps"] == 6 and task.metric in result["dev"]

    out = workdir / f"eval-{name}"
    scores = evaluate.run(make_ctx(out, "evaluate", {"task": name, "seed": 0, "intermediate": "none"},
                                   {"model": trained, "data": data_node},
                                   task=name, seed=0))
    assert list(scores["languages"]) == ["en", "qaa"]
    for lang in ("en", "qaa"):
        predicted = official_path(out / "predictions", name, lang)
        gold = official_path(data_node / "gold", name, lang)
        rescored = score_language(name, predicted, gold, lang)
        for key, value in rescored.items():
            assert scores["languages"][lang][key] == pytest.approx(value)
    if name == "xquad":
        submission = json.loads(official_path(out / "predictions", name, "qaa").read_text())
        assert set(submission) == {e["id"] for e in examples["test"]["qaa"]}
        assert all(isinstance(text, str) for text in submission.values())
    else:
        lines = official_path(out / "predictions", name, "qaa").read_text().splitlines()
        assert len(lines) == 12 and all(json.loads(line)["label"] in (0, 1) for line in lines)
