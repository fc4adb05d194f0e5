"""Withheld gold is explicit, from the official layout's files to the evaluate result.

Fixtures are what google-research/xtreme's download and preprocessing leave on disk
(`tests.support.official_transforms` re-does those steps on raw-shaped records):
XCOPA's blanked test labels, TyDiQA's blanked dev files (English included) and UD-POS's
tagless test files must come out as gold None, never as a gold of zeros or a crash; the
TyDiQA English dev split is then a seeded slice held out of English train; every head
encodes and predicts such splits; prepare writes no gold for them and evaluate writes
predictions but no score.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

# tests.support.stages sets the environment (offline hub, threads) before these imports
from tests.support.stages import make_ctx, model_node, run_train, workdir  # noqa: F401 (fixtures)
from tests.support import official_transforms as official

import pytest

from xstilts.core.tasks import get_task
from xstilts.jobs import data as jdata
from xstilts.jobs.device import select_device
from xstilts.jobs.heads import head_for
from xstilts.jobs.stages import evaluate, prepare_data
from xstilts.jobs.tasks import sources
from xstilts.jobs.tasks.sources import load_examples, load_split

# ----------------------------------------------------------------------------- fixtures


def xcopa_layout(root: Path) -> Path:
    """`$DIR/xcopa` after `download_xcopa`, every XCOPA test language, labels 1 and 0."""
    english = {split: [official.xcopa_raw_row(f"en {split} {i}", "cause" if i % 2 else "effect", i % 2, i)
                       for i in range(4)] for split in ("train", "val")}
    english["test"] = [{k: v for k, v in row.items() if k != "label"} for row in english["val"]]  # SuperGLUE: no label
    langs = get_task("xcopa").split_languages("test")
    test = {lang: [official.xcopa_raw_row(f"{lang} premisa {i}", "effect", 1 - i % 2, i) for i in range(3)]
            for lang in langs}
    val = {lang: [official.xcopa_raw_row(f"{lang} val {i}", "cause", i % 2, i) for i in range(2)] for lang in langs}
    official.xcopa_official(root / "xcopa", english, test, val)
    return root


def tydiqa_layout(root: Path, n_train: int = 30) -> Path:
    """`$DIR/tydiqa` after `download_tydiqa`: English and two other training languages,
    a dev file for every TyDiQA language."""
    train = [official.tydiqa_raw_qa(language, i, f"{language} context number {i} with answer{i} inside.", f"answer{i}")
             for language in ("english", "arabic", "finnish") for i in range(n_train)]
    dev = {language: [official.tydiqa_raw_qa(language, i, f"{language} dev {i} says yes{i}.", f"yes{i}") for i in range(3)]
           for language in official.TYDIQA_LANG2ISO}
    official.tydiqa_official(root / "tydiqa", train, dev)
    return root


UDPOS_SENTENCES = [(["Das", "ist", "gut"], ["PRON", "AUX", "ADJ"]), (["Ja"], ["INTJ"]), (["fu", "mi", "be"], ["NOUN", "VERB", "NOUN"])]


def udpos_layout(root: Path, tagged_test: tuple[str, ...] = ()) -> Path:
    """`$DIR/udpos` after `download_udpos`: English train/dev/test, test for every
    language; `tagged_test` languages get a test file with tags (an unblanked copy)."""
    task = get_task("udpos")
    official.udpos_official(root / "udpos", "en", {"train": UDPOS_SENTENCES * 12, "dev": UDPOS_SENTENCES,
                                                    "test": UDPOS_SENTENCES})
    for lang in task.split_languages("test"):
        official.udpos_official(root / "udpos", lang, {"test": UDPOS_SENTENCES})
        if lang in tagged_test:  # the tagged writer's file under test's name
            official.udpos_official(root / "tagged", lang, {"train": UDPOS_SENTENCES})
            (root / "tagged" / f"train-{lang}.tsv").replace(root / "udpos" / f"test-{lang}.tsv")
    return root


# ----------------------------------------------------------------------------- XCOPA


def test_xcopa_blanked_test_labels_are_withheld(tmp_path: Path) -> None:
    root = xcopa_layout(tmp_path)
    assert {json.loads(line)["label"] for line in (root / "xcopa" / "test-et.jsonl").read_text().splitlines()} == {0}
    loaded = load_split("xcopa", "test", "et", root)
    assert loaded.gold_withheld and loaded.files == ("xcopa/test-et.jsonl",)
    assert [e["label"] for e in loaded.examples] == [None, None, None]
    assert [e["context"] for e in loaded.examples] == ["et premisa 0", "et premisa 1", "et premisa 2"]
    # English train and dev keep their labels
    assert [e["label"] for e in load_examples("xcopa", "dev", "en", root)] == [0, 1, 0, 1]
    assert not load_split("xcopa", "train", "en", root).gold_withheld


def test_xcopa_original_release_keeps_its_labels(tmp_path: Path) -> None:
    """cambridgeltl's `test.<l>.jsonl` (read first) and an unprocessed dash-named copy
    carry gold: only the all-zero file xcopa_preprocess writes is withheld."""
    rows = [official.xcopa_raw_row(f"p{i}", "cause", i % 2, i) for i in range(4)]
    official.write_jsonl(tmp_path / "xcopa" / "test.et.jsonl", rows)
    official.write_jsonl(tmp_path / "xcopa" / "test-ht.jsonl", rows)
    for lang in ("et", "ht"):
        loaded = load_split("xcopa", "test", lang, tmp_path)
        assert not loaded.gold_withheld and [e["label"] for e in loaded.examples] == [0, 1, 0, 1]


# ----------------------------------------------------------------------------- TyDiQA


def test_tydiqa_english_dev_is_a_seeded_holdout_of_train(tmp_path: Path) -> None:
    root = tydiqa_layout(tmp_path)
    dev_file = root / "tydiqa" / "tydiqa-goldp-v1.1-dev" / "tydiqa.goldp.en.dev.json"
    assert json.loads(dev_file.read_text())["data"][0]["paragraphs"][0]["qas"][0]["answers"] == [
        {"answer_start": 0, "text": ""}]
    dev, train = load_split("tydiqa", "dev", "en", root), load_split("tydiqa", "train", "en", root)
    assert len(dev.examples) == 3 and len(train.examples) == 27  # 10% of 30
    assert not dev.gold_withheld and all(e["answers"]["text"] for e in dev.examples)
    key = [(e["question"], e["context"]) for e in dev.examples]
    assert not set(key) & {(e["question"], e["context"]) for e in train.examples}  # no leakage
    assert dev.extra["holdout"] == {
        "from": "tydiqa/tydiqa-goldp-v1.1-train/tydiqa-goldp-v1.1-train.json",
        "instead_of": "tydiqa/tydiqa-goldp-v1.1-dev/tydiqa.goldp.en.dev.json",
        "seed": sources.TYDIQA_HOLDOUT_SEED, "fraction": sources.TYDIQA_HOLDOUT_FRACTION, "dev": 3, "train": 27}
    assert "held out" in dev.note and "held out" in train.note
    ids = [e["id"] for e in train.examples + dev.examples]
    assert len(set(ids)) == len(ids) and all(i.startswith("english-") for i in ids)  # the release's full ids
    assert load_examples("tydiqa", "dev", "en", root) == dev.examples
    assert load_examples("tydiqa", "train", "en", root) == train.examples
    # test languages, English included, stay withheld
    assert load_split("tydiqa", "test", "en", root).gold_withheld
    assert load_split("tydiqa", "test", "fi", root).gold_withheld


def test_tydiqa_holdout_does_not_depend_on_hash_seed_or_order(tmp_path: Path) -> None:
    root = tydiqa_layout(tmp_path)
    script = ("import json, sys; from xstilts.jobs.tasks.sources import load_examples; "
              "print(json.dumps([e['question'] for e in load_examples('tydiqa', 'dev', 'en', sys.argv[1])]))")
    picked = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", script, str(root)], env=env, check=True, capture_output=True,
                             text=True).stdout
        picked.append(json.loads(out))
    assert picked[0] == picked[1] == [e["question"] for e in load_examples("tydiqa", "dev", "en", root)]
    # the same questions in another file order: the same slice
    train_file = root / "tydiqa" / "tydiqa-goldp-v1.1-train" / "tydiqa.goldp.en.train.json"
    data = json.loads(train_file.read_text())
    data["data"].reverse()
    train_file.write_text(json.dumps(data))
    assert sorted(e["question"] for e in load_examples("tydiqa", "dev", "en", root)) == sorted(picked[0])


def test_tydiqa_dev_file_with_gold_is_used_as_it_is(tmp_path: Path) -> None:
    """A `tydiqa.goldp.en.dev.json` that kept its answers (renamed, not blanked): no holdout."""
    root = tydiqa_layout(tmp_path)
    context, qa = official.tydiqa_raw_qa("english", 0, "a context with gold inside", "gold")
    dev_file = root / "tydiqa" / "tydiqa-goldp-v1.1-dev" / "tydiqa.goldp.en.dev.json"
    dev_file.write_text(json.dumps({"version": "1.1", "data": [{"paragraphs": [{"context": context, "qas": [qa]}]}]}))
    dev = load_split("tydiqa", "dev", "en", root)
    assert dev.note == "" and dev.extra == {} and [e["answers"]["text"] for e in dev.examples] == [["gold"]]
    assert len(load_examples("tydiqa", "train", "en", root)) == 30


# ----------------------------------------------------------------------------- UD-POS


def test_udpos_tagless_test_file_reads_as_withheld(tmp_path: Path) -> None:
    root = udpos_layout(tmp_path)
    assert (root / "udpos" / "test-de.tsv").read_text() == "Das\nist\ngut\n\nJa\n\nfu\nmi\nbe\n"
    loaded = load_split("udpos", "test", "de", root)
    assert loaded.gold_withheld and [e["tags"] for e in loaded.examples] == [None, None, None]
    assert [e["tags"] for e in load_examples("udpos", "dev", "en", root)] == [t for _, t in UDPOS_SENTENCES]


# ----------------------------------------------------------------------------- every head


def _withheld_examples() -> dict[str, list[dict[str, Any]]]:
    """Canonical test examples with gold None, one task per head kind."""
    return {
        "xnli": [{"id": "a", "text": "fu mi", "text_b": "be", "label": None}],
        "udpos": [{"id": "a", "tokens": ["fu", "mi"], "tags": None}],
        "xcopa": [{"id": "a", "context": "fu", "question": "What was the cause?", "choices": ["mi", "be"],
                   "label": None}],
        "xquad": [{"id": "a", "context": "fu mi be", "question": "mi?", "answers": None}],
        "tatoeba": [{"id": "q0", "text": "fu mi", "role": "query", "gold": None},
                    {"id": "c0", "text": "mi fu", "role": "candidate", "gold": []}],
        "bucc2018": [{"id": "q0", "text": "fu mi", "role": "query", "gold": None},
                     {"id": "c0", "text": "fu mi", "role": "candidate", "gold": []}],
        "mewslix": [{"id": "q0", "text": "fu mi", "role": "query", "gold": None},
                    {"id": "c0", "text": "mi fu", "role": "candidate", "gold": []}],
    }


@pytest.mark.parametrize("name", list(_withheld_examples()))
def test_every_head_encodes_and_predicts_withheld_gold(name: str, model_node: Any) -> None:
    from transformers import AutoTokenizer

    encoder = model_node[0] / "model"
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    task = get_task(name)
    head = head_for(task)
    examples = _withheld_examples()[name]
    assert sources.gold_withheld(task, "test", examples)
    columns = head.encode(head.expand(examples, "test"), tokenizer, 64, "test")
    model = head.load_model(encoder) if not head.trains else head.build_model(encoder, seed=0)
    predictions = head.predict(model, head.features(columns, tokenizer.pad_token_id), examples, select_device(), 8)
    assert predictions is not None


# ----------------------------------------------------------------------------- prepare and evaluate


def _prepare(workdir: Path, model_node: Any, task: str, root: Path) -> tuple[Path, dict[str, Any]]:
    out = workdir / f"data-{task}-{root.name}"
    ctx = make_ctx(out, "prepare", {"task": task, "max_seq_length": 64, "data_dir": str(root)},
                   {"model": model_node[0]}, kind="data", task=task)
    return out, prepare_data.run(ctx)


def test_prepare_writes_no_gold_for_blanked_xcopa(tmp_path: Path, workdir: Path, model_node: Any) -> None:
    out, result = _prepare(workdir, model_node, "xcopa", xcopa_layout(tmp_path))
    langs = list(get_task("xcopa").split_languages("test"))
    assert result["gold_withheld"] == {"test": langs}
    assert jdata.read_meta(out / "data")["gold_withheld"] == {"test": langs}
    assert not (out / prepare_data.GOLD_SUBDIR).exists()  # no file of zeros to score against
    assert [e["label"] for e in jdata.load_split_examples(out / "data", "test", "et")] == [None] * 3


def test_prepare_records_the_tydiqa_holdout(tmp_path: Path, workdir: Path, model_node: Any) -> None:
    out, result = _prepare(workdir, model_node, "tydiqa", tydiqa_layout(tmp_path))
    assert result["counts"]["train"] == {"en": 27}
    assert result["notes"]["dev"]["en"]["holdout"]["dev"] == 3
    assert "held out" in result["notes"]["train"]["en"]["note"]
    assert jdata.read_meta(out / "data")["notes"] == result["notes"]
    assert result["gold_withheld"] == {"test": list(get_task("tydiqa").split_languages("test"))}
    assert all(e["answers"] for e in jdata.load_split_examples(out / "data", "dev", "en"))


def test_udpos_official_layout_prepares_and_evaluates(tmp_path: Path, workdir: Path, model_node: Any) -> None:
    """Blanked test tags: prepare succeeds, evaluate writes every language's predictions,
    scores English only (its test file has tags here) and gives no partial average."""
    data_node, prepared = _prepare(workdir, model_node, "udpos", udpos_layout(tmp_path, tagged_test=("en",)))
    langs = list(get_task("udpos").split_languages("test"))
    withheld = [lang for lang in langs if lang != "en"]
    assert prepared["gold_withheld"] == {"test": withheld}
    gold = sorted(path.name for path in (data_node / prepare_data.GOLD_SUBDIR / "udpos").iterdir())
    assert gold == ["test-en.tsv"]
    trained = workdir / "udpos-target"
    run_train(trained, "train-target", "udpos", 0, model_node[0], data_node,
              {**HPARAMS_SHORT})
    out = workdir / "udpos-eval"
    result = evaluate.run(make_ctx(out, "evaluate", {"task": "udpos", "seed": 0, "intermediate": "test"},
                                   {"model": trained, "data": data_node}, task="udpos", seed=0))
    assert list(result["languages"]) == ["en"] and result["gold_withheld"] == withheld
    assert result["average"] is None and result["averages"] is None
    written = sorted(path.name for path in (out / evaluate.PREDICTIONS_SUBDIR / "udpos").iterdir())
    assert written == sorted(f"test-{lang}.tsv" for lang in langs)
    sentences = (out / evaluate.PREDICTIONS_SUBDIR / "udpos" / "test-de.tsv").read_text().strip("\n").split("\n\n")
    assert [len(s.split("\n")) for s in sentences] == [3, 1, 3]


HPARAMS_SHORT: dict[str, Any] = {
    "learning_rate": 2e-3, "batch_size": 8, "grad_accum_steps": 1, "epochs": 1.0, "max_steps": 3, "warmup_ratio": 0.1,
    "max_seq_length": 64, "eval_interval": 3, "patience": None, "weight_decay": 0.01, "max_grad_norm": 1.0,
}


def test_tydiqa_per_language_train_file_gets_unique_ids(tmp_path: Path) -> None:
    """Without the original release beside it, the per-language file's cut ids (the
    last "-" part of each, so "0"/"1" repeat) are made unique: predictions and the dev
    holdout are keyed by id."""
    train = []
    for i in range(30):  # real ids: <language>-<document hash>-<question index>, the index mostly 0 or 1
        context, qa = official.tydiqa_raw_qa("english", i, f"english context {i} with answer{i} inside.", f"answer{i}")
        train.append((context, {**qa, "id": f"english-{9000 + i}-{i % 2}"}))
    dev = {language: [official.tydiqa_raw_qa(language, 0, f"{language} dev says yes.", "yes")]
           for language in official.TYDIQA_LANG2ISO}
    root = tmp_path
    official.tydiqa_official(root / "tydiqa", train, dev)
    (root / "tydiqa" / "tydiqa-goldp-v1.1-train" / sources.TYDIQA_TRAIN_RELEASE).unlink()
    per_language = json.loads((root / "tydiqa" / "tydiqa-goldp-v1.1-train" / "tydiqa.goldp.en.train.json").read_text())
    raw_ids = [qa["id"] for article in per_language["data"] for p in article["paragraphs"] for qa in p["qas"]]
    assert len(set(raw_ids)) < len(raw_ids)  # the official cut really repeats ids
    train, dev = load_split("tydiqa", "train", "en", root), load_split("tydiqa", "dev", "en", root)
    ids = [e["id"] for e in train.examples + dev.examples]
    assert len(ids) == len(raw_ids) and len(set(ids)) == len(ids)


def test_prepare_logs_its_progress_part_by_part(tmp_path: Path, workdir: Path, model_node: Any,
                                                caplog: pytest.LogCaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A job's log says how far tokenizing is: a line per (split, language) part with the
    count, rate and ETA (`XSTILTS_PROGRESS_EVERY=0`: every update), then the total time."""
    import logging

    monkeypatch.setenv("XSTILTS_PROGRESS_EVERY", "0")
    with caplog.at_level(logging.INFO):
        _, result = _prepare(workdir, model_node, "xcopa", xcopa_layout(tmp_path))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("prepare xcopa: examples tokenized:")]
    parts = sum(len(by_lang) for by_lang in result["counts"].values())
    total = sum(n for by_lang in result["counts"].values() for n in by_lang.values())
    assert parts > 2 and len(lines) == parts  # a line per part but the last, then the closing line
    assert all(", ETA " in line for line in lines[:-1])
    assert lines[-1].startswith(f"prepare xcopa: examples tokenized: {total:,}/{total:,} (100.0%)") and ", in " in lines[-1]
