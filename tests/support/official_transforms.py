"""What google-research/xtreme's `scripts/download_data.sh` + `utils_preprocess.py` (at
838c13b) leave on disk, re-done on small raw-shaped records, for loader fixtures.

Each function writes the files one official step writes, with the same transformation
and the same serialisation (json.dumps defaults, tsv line breaks), so a loader tested on
them reads what a researcher's download holds:

* `xcopa_official`: `download_xcopa` renames `test.<l>.jsonl` to `test-<l>.jsonl` (and
  COPA's splits to `<split>-en.jsonl`), then `xcopa_preprocess` rewrites every file
  starting with `test` with `label` set to 0;
* `tydiqa_official`: `tydiqa_preprocess` splits the training file per language
  (`tydiqa.goldp.<iso>.train.json`, question ids cut to their last `-` part), renames
  each `tydiqa-goldp-dev-<language>.json` in place to `tydiqa.goldp.<iso>.dev.json` and
  blanks every dev file (`remove_qa_test_annotations`: one paragraph per question, the
  answers `[{"answer_start": 0, "text": ""}]`);
* `udpos_official`: `udpos_preprocess`'s `_write_files` with suffix `tsv`: word<TAB>tag
  per line for train/dev, the word alone for test, a blank line after each sentence and
  none after the last word of the file but the sentence's own.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

TYDIQA_LANG2ISO = {"arabic": "ar", "bengali": "bn", "english": "en", "finnish": "fi", "indonesian": "id",
                   "korean": "ko", "russian": "ru", "swahili": "sw", "telugu": "te"}


# ----------------------------------------------------------------------------- XCOPA


def xcopa_raw_row(premise: str, question: str, label: int, idx: int) -> dict[str, Any]:
    """A row as cambridgeltl/xcopa's `test.<l>.jsonl` holds it."""
    return {"premise": premise, "choice1": f"{premise} one", "choice2": f"{premise} two", "question": question,
            "label": label, "idx": idx, "changed": False}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def xcopa_official(base_dir: Path, english: dict[str, list[dict[str, Any]]],
                   test: dict[str, list[dict[str, Any]]], val: dict[str, list[dict[str, Any]]]) -> None:
    """`download_xcopa` then `xcopa_preprocess` into `base_dir` (= `$DIR/xcopa/`).

    `english`: COPA's `train`/`val`/`test` rows; `test`/`val`: per language, the rows of
    cambridgeltl's `test.<l>.jsonl` / `val.<l>.jsonl`."""
    for split, rows in english.items():
        write_jsonl(base_dir / f"{split}-en.jsonl", rows)
    for lang, rows in val.items():
        write_jsonl(base_dir / f"val-{lang}.jsonl", rows)
    for lang, rows in test.items():
        write_jsonl(base_dir / f"test-{lang}.jsonl", rows)
    # xcopa_preprocess: every file whose name starts with "test" gets label 0
    for name in os.listdir(base_dir):
        if not name.startswith("test"):
            continue
        path = base_dir / name
        examples = []
        with path.open() as handle:
            for row in handle:
                example = json.loads(row)
                example["label"] = 0
                examples.append(example)
        with path.open("w") as handle:
            for example in examples:
                handle.write(json.dumps(example) + "\n")


# ----------------------------------------------------------------------------- TyDiQA


def tydiqa_raw_qa(language: str, number: int, context: str, answer: str) -> tuple[str, dict[str, Any]]:
    """(context, qa) as TyDiQA-GoldP's own files hold a question: id
    `<language>-<hash>-<n>`, the answer found in the context."""
    start = context.index(answer)
    qa = {"id": f"{language}-{1000 + number}{number * 7919}-{number}", "question": f"q{number} {language}?",
          "answers": [{"answer_start": start, "text": answer}]}
    return context, qa


def _squad(paragraphs: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    return {"version": "TyDiQA-GoldP-1.1", "data": [
        {"title": f"t{i}", "paragraphs": [{"context": context, "qas": [qa]}]} for i, (context, qa) in enumerate(paragraphs)
    ]}


def tydiqa_official(base_dir: Path, train: list[tuple[str, dict[str, Any]]],
                    dev: dict[str, list[tuple[str, dict[str, Any]]]]) -> None:
    """`download_tydiqa` into `base_dir` (= `$DIR/tydiqa/`): the release's train file and
    extracted dev folder, then `tydiqa_preprocess` (output dir `tydiqa-goldp-v1.1-train`),
    then the train file moved into that folder."""
    train_file = base_dir / "tydiqa-goldp-v1.1-train.json"
    dev_dir = base_dir / "tydiqa-goldp-v1.1-dev"
    dev_dir.mkdir(parents=True, exist_ok=True)
    train_file.write_text(json.dumps(_squad(train)))
    for language, paragraphs in dev.items():
        (dev_dir / f"tydiqa-goldp-dev-{language}.json").write_text(json.dumps(_squad(paragraphs)))
    out_dir = base_dir / "tydiqa-goldp-v1.1-train"
    out_dir.mkdir(exist_ok=True)
    # split the training file per language
    data = json.loads(train_file.read_text())
    lang2data: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for doc in data["data"]:
        for par in doc["paragraphs"]:
            for qa in par["qas"]:
                example_lang = qa["id"].split("-")[0]
                q_id = qa["id"].split("-")[-1]
                lang2data[example_lang].append({"paragraphs": [{
                    "context": par["context"], "qas": [{"answers": qa["answers"], "question": qa["question"], "id": q_id}]}]})
    for lang, docs in lang2data.items():
        (out_dir / f"tydiqa.goldp.{TYDIQA_LANG2ISO[lang]}.train.json").write_text(
            json.dumps({"data": docs, "version": data["version"]}))
    # rename the dev files, every language present
    for language, iso in TYDIQA_LANG2ISO.items():
        source = dev_dir / f"tydiqa-goldp-dev-{language}.json"
        if source.exists():
            os.rename(source, dev_dir / f"tydiqa.goldp.{iso}.dev.json")
    remove_qa_test_annotations(dev_dir)
    os.rename(train_file, out_dir / train_file.name)


def remove_qa_test_annotations(test_dir: Path) -> None:
    """Every file of `test_dir` rewritten with one paragraph per question and the answers
    replaced by a single empty one at 0."""
    for name in os.listdir(test_dir):
        path = test_dir / name
        data = json.loads(path.read_text())
        new_data = []
        for doc in data["data"]:
            for par in doc["paragraphs"]:
                for qa in par["qas"]:
                    new_data.append({"paragraphs": [{"context": par["context"], "qas": [
                        {"answers": [{"answer_start": 0, "text": ""}], "question": qa["question"], "id": qa["id"]}]}]})
        path.write_text(json.dumps({"data": new_data, "version": data["version"]}))


# ----------------------------------------------------------------------------- UD-POS


def udpos_official(out_dir: Path, lang: str, splits: dict[str, list[tuple[list[str], list[str]]]]) -> None:
    """`udpos_preprocess` `_write_files(..., suffix="tsv")` for one language: `splits`
    maps train/dev/test to (words, tags) sentences (already joined as
    `remove_empty_space` leaves them)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, sentences in splits.items():
        if not sentences:
            continue
        with (out_dir / f"{split}-{lang}.tsv").open("w") as fout:
            for sidx, (sent, tag) in enumerate(sentences):
                for widx, (w, t) in enumerate(zip(sent, tag)):
                    newline = "" if (sidx == len(sentences) - 1) and (widx == len(sent) - 1) else "\n"
                    if split == "test":
                        fout.write(f"{w}{newline}")
                    else:
                        fout.write(f"{w}\t{t}{newline}")
                fout.write("\n")
