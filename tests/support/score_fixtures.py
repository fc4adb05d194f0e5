"""Deterministic XTREME / XTREME-R submission trees full of the cases scorers disagree on.

Why: `tests/data/official_scores_*.json` hold the numbers the official google-research/
xtreme scorer computed on exactly these trees; `tests/unit/analysis/test_score.py` regenerates them
and checks that `xstilts.analysis.score` reproduces every number. So the generator must be
byte-for-byte deterministic (string-seeded `random.Random`, no set iteration, no
clock) and must exercise the rules that matter: CRLF line ends and trailing blanks,
leading-zero ids, duplicate BUCC pairs, lenient IOB and bare POS tags, empty and
trailing-blank-line sentences, SQuAD articles and ASCII punctuation, MLQA's Unicode
punctuation, Chinese segmentation and Arabic "ال", unanswered and unknown questions,
rankings longer than 20 with duplicates, XCOPA JSON lines with CRLF.

Changing anything here changes the trees: regenerate the golden files with the
official scorer, by the commands in the docstring of `tests/unit/analysis/test_score.py`.
Every file is seeded by its own task and language, so leaving a task out (the
official XTREME-R scorer cannot score LAReQA) leaves every other file as it was.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from xstilts.core.languages import XTREME_LANGUAGES, XTREME_R_LANGUAGES

# --------------------------------------------------------------------------------------
# low-level: write text exactly (newline="" keeps our CRLF as written)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write(text)


def _lines(items: list[str], rng: random.Random, crlf: bool, ragged: bool) -> str:
    """Lines with LF or CRLF ends; `ragged` adds trailing spaces/tabs to some lines."""
    end = "\r\n" if crlf else "\n"
    out = []
    for item in items:
        pad = rng.choice(["", "", " ", "\t", "  "]) if ragged else ""
        out.append(item + pad + end)
    return "".join(out)


# --------------------------------------------------------------------------------------
# label tasks: pawsx, xnli, tatoeba


def _labels(task: str, lang: str, pred_root: Path, gold_root: Path) -> None:
    rng = random.Random(f"{task}/{lang}")
    n = rng.randint(6, 14)
    if task == "tatoeba":
        gold = [str(rng.randint(0, 999)) for _ in range(n)]
        pred = []
        for g in gold:
            r = rng.random()
            if r < 0.5:
                pred.append(g)
            elif r < 0.65:
                pred.append(g.zfill(3) if len(g) < 3 else "0" + g)  # "007" is not "7"
            else:
                pred.append(str(rng.randint(0, 999)))
    else:
        choices = ["0", "1"] if task == "pawsx" else ["entailment", "neutral", "contradiction"]
        gold = [rng.choice(choices) for _ in range(n)]
        pred = [g if rng.random() < 0.6 else rng.choice(choices) for g in gold]
        if rng.random() < 0.3:
            pred[0] = " " + pred[0]  # leading blank: stripped like the rest
    _write(gold_root / task / f"test-{lang}.tsv", _lines(gold, rng, rng.random() < 0.3, False))
    _write(pred_root / task / f"test-{lang}.tsv", _lines(pred, rng, rng.random() < 0.4, rng.random() < 0.5))


# --------------------------------------------------------------------------------------
# tagging: udpos (bare tags), panx (IOB, sometimes lenient)

_POS = ["NOUN", "VERB", "ADJ", "ADP", "DET", "PRON", "PROPN", "PUNCT", "ADV", "AUX", "X", "SYM", "SCONJ", "NUM"]
_NER = ["O", "O", "O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]


def _tag_file(sentences: list[list[str]], rng: random.Random, crlf: bool, ragged: bool, terminator: bool) -> str:
    end = "\r\n" if crlf else "\n"
    parts = []
    for index, sentence in enumerate(sentences):
        for tag in sentence:
            parts.append(tag + (rng.choice(["", " ", "\t"]) if ragged else "") + end)
        if terminator or index < len(sentences) - 1:
            parts.append(end)
    return "".join(parts)


def _tags(task: str, lang: str, pred_root: Path, gold_root: Path) -> None:
    rng = random.Random(f"{task}/{lang}")
    tagset = _POS if task == "udpos" else _NER
    gold: list[list[str]] = []
    for _ in range(rng.randint(3, 7)):
        length = rng.randint(1, 9)
        sentence = [rng.choice(tagset) for _ in range(length)]
        if task == "udpos" and rng.random() < 0.4:
            sentence[-1:] = ["NOUN", "NOUN"]  # one merged chunk of type "OUN"
        gold.append(sentence)
    pred = []
    for sentence in gold:
        p = [t if rng.random() < 0.75 else rng.choice(tagset) for t in sentence]
        if task == "panx" and rng.random() < 0.3:
            p[0] = "I-" + rng.choice(["PER", "ORG", "LOC"])  # lenient: I- opens an entity
        pred.append(p)
    # A blank line after the last sentence or not: both read as the same sentences...
    gold_terminator, pred_terminator = rng.random() < 0.5, rng.random() < 0.5
    if rng.random() < 0.2:  # ...but an empty sentence (two blank lines in a row) needs them
        gold.insert(1, [])
        pred.insert(1, [])
        gold_terminator = pred_terminator = True
    _write(gold_root / task / f"test-{lang}.tsv", _tag_file(gold, rng, rng.random() < 0.3, False, gold_terminator))
    _write(pred_root / task / f"test-{lang}.tsv",
           _tag_file(pred, rng, rng.random() < 0.4, rng.random() < 0.5, pred_terminator))


# --------------------------------------------------------------------------------------
# BUCC pairs


def _bucc(lang: str, pred_root: Path, gold_root: Path) -> None:
    rng = random.Random(f"bucc2018/{lang}")
    gold = [f"{lang}-{rng.randint(0, 999999):09d}\ten-{rng.randint(0, 999999):09d}" for _ in range(rng.randint(5, 12))]
    pred: list[str] = []
    for pair in gold:
        r = rng.random()
        if r < 0.55:
            pred.append(pair)
            if rng.random() < 0.4:
                pred.append(pair)  # duplicates collapse
        elif r < 0.7:
            src, tgt = pair.split("\t")
            pred.append(f"{src}\ten-{int(tgt[3:]):d}")  # unpadded id: a different pair
    pred += [f"{lang}-{rng.randint(0, 999999):09d}\ten-{rng.randint(0, 999999):09d}" for _ in range(rng.randint(0, 4))]
    if lang == "ru":
        pred = [p + "x" for p in pred]  # nothing right: all three scores 0
    if rng.random() < 0.5:
        gold.append(gold[0])  # duplicate gold pair
    _write(gold_root / "bucc2018" / f"test-{lang}.tsv", _lines(gold, rng, rng.random() < 0.3, False))
    _write(pred_root / "bucc2018" / f"test-{lang}.tsv", _lines(pred, rng, rng.random() < 0.5, rng.random() < 0.5))


# --------------------------------------------------------------------------------------
# QA

_WORDS: dict[str, list[str]] = {
    "zh": ["北京大学", "长江", "1958年", "中华人民共和国", "上海", "鲁迅先生"],
    "ar": ["الكتاب", "القاهرة", "محمد علي", "فالح", "البحر الأحمر", "مصر"],
    "ru": ["Москва", "река Волга", "1958 год", "Пушкин"],
    "el": ["Αθήνα", "ο Σωκράτης", "1821"],
    "hi": ["दिल्ली", "गंगा नदी", "1947"],
    "th": ["กรุงเทพ", "แม่น้ำ", "2500"],
    "ko": ["서울", "한강", "세종대왕"],
    "bn": ["ঢাকা", "পদ্মা নদী"],
    "te": ["హైదరాబాద్", "గోదావరి"],
    "de": ["der Rhein", "Berlin", "die Deutsche Bahn", "1871", "Goethe"],
    "es": ["el río Ebro", "Madrid", "la guerra civil", "Cervantes"],
    "vi": ["Hà Nội", "sông Hồng", "của nước", "những năm 1945"],
    "en": ["The Amazon", "the company", "an apple", "Paris", "1958", "John Smith"],
}
_LATIN = ["Paris", "the river", "1958", "Nairobi", "Ali Hassan", "an island", "Helsinki"]
_ARTICLE = {"en": "The ", "es": "los ", "de": "eine ", "vi": "những ", "ar": "ال"}
_PUNCT = ["!", ".", "«{}»", "{}。", "({})", "“{}”", "{}…", "¿{}?"]


def _qa(task: str, lang: str, pred_root: Path, gold_root: Path) -> None:
    rng = random.Random(f"{task}/{lang}")
    words = _WORDS.get(lang, _LATIN)
    qas = []
    predictions: dict[str, str] = {}
    for q in range(rng.randint(5, 10)):
        qid = f"{task}-{lang}-{q:03d}"
        gold = rng.choice(words)
        answers = [gold] + [rng.choice(words) for _ in range(rng.randint(0, 2))]
        qas.append({"id": qid, "question": "?", "answers": [{"text": a, "answer_start": 0} for a in answers]})
        kind = rng.randint(0, 9)
        if kind == 0:
            pred = gold
        elif kind == 1:
            pred = _ARTICLE.get(lang, "the ") + gold
        elif kind == 2:
            style = rng.choice(_PUNCT)
            pred = style.format(gold) if "{}" in style else gold + style
        elif kind == 3:
            pred = gold + " " + rng.choice(words)
        elif kind == 4:
            pred = rng.choice(words)
        elif kind == 5:
            continue  # unanswered: counts 0
        elif kind == 6:
            pred = gold.upper()
        elif kind == 7:
            pred = "  " + gold.replace(" ", "   ") + " \n"
        elif kind == 8:
            pred = gold[: max(1, len(gold) // 2)]  # zh: partial character overlap
        else:
            pred = "the" if lang != "ar" else "ال"  # normalises to "" (EM vs F1 differ)
            qas[-1]["answers"].append({"text": "a.", "answer_start": 0})
        predictions[qid] = pred
    predictions[f"{task}-{lang}-unknown"] = "ignored"
    articles: Any = [{"title": lang, "paragraphs": [{"context": "", "qas": qas[:3]}, {"context": "", "qas": qas[3:]}]}]
    gold_json = articles if lang in ("de", "sw") else {"version": "1.1", "data": articles}  # bare list also read
    _write(gold_root / task / f"test-{lang}.json", json.dumps(gold_json, ensure_ascii=rng.random() < 0.5, indent=1))
    _write(pred_root / task / f"test-{lang}.json", json.dumps(predictions, ensure_ascii=rng.random() < 0.5))


# --------------------------------------------------------------------------------------
# XTREME-R: XCOPA, Mewsli-X, LAReQA


def _xcopa(lang: str, pred_root: Path, gold_root: Path) -> None:
    rng = random.Random(f"xcopa/{lang}")
    n = rng.randint(6, 12)
    gold = [{"premise": "p", "choice1": "a", "choice2": "b", "question": "cause", "idx": i, "label": rng.randint(0, 1)}
            for i in range(n)]
    pred = [{"idx": g["idx"], "label": g["label"] if rng.random() < 0.65 else 1 - g["label"]} for g in gold]
    end = "\r\n" if rng.random() < 0.4 else "\n"
    _write(gold_root / "xcopa" / f"test-{lang}.jsonl", "".join(json.dumps(g) + "\n" for g in gold))
    _write(pred_root / "xcopa" / f"test-{lang}.jsonl", "".join(json.dumps(p) + end for p in pred))


def _ranking(task: str, lang: str, pred_root: Path, gold_root: Path) -> None:
    rng = random.Random(f"{task}/{lang}")
    pool = [f"Q{rng.randint(1, 400)}" for _ in range(60)]
    gold: dict[str, list[str]] = {}
    pred: dict[str, list[str]] = {}
    for q in range(rng.randint(4, 9)):
        qid = f"{lang}{q:02d}"
        if task == "mewslix":
            relevant = [rng.choice(pool)]
            if rng.random() < 0.2:
                relevant = [" " + relevant[0] + " "]  # gold id is stripped officially
        else:
            relevant = sorted({rng.choice(pool) for _ in range(rng.randint(1, 25))})
        gold[qid] = relevant
        if rng.random() < 0.15:
            continue  # no prediction: AP 0
        ranking = [rng.choice(pool) for _ in range(rng.randint(0, 30))]
        targets = [r.strip() for r in relevant]
        for target in targets:
            if rng.random() < 0.7:
                ranking.insert(rng.randint(0, len(ranking)), target)
        if ranking and rng.random() < 0.3:
            ranking.insert(rng.randint(0, len(ranking)), ranking[0])  # a repeated candidate
        pred[qid] = ranking
    pred[f"{lang}-extra"] = ["Q1"]
    _write(gold_root / task / f"test-{lang}.json", json.dumps(gold))
    _write(pred_root / task / f"test-{lang}.json", json.dumps(pred))


# --------------------------------------------------------------------------------------
# whole trees


def _generate(root: Path, task_langs: dict[str, tuple[str, ...]]) -> tuple[Path, Path]:
    pred_root, gold_root = root / "predictions", root / "labels"
    for task, langs in task_langs.items():
        for lang in langs:
            if task in ("pawsx", "xnli", "tatoeba"):
                _labels(task, lang, pred_root, gold_root)
            elif task in ("udpos", "panx"):
                _tags(task, lang, pred_root, gold_root)
            elif task == "bucc2018":
                _bucc(lang, pred_root, gold_root)
            elif task in ("xquad", "mlqa", "tydiqa"):
                _qa(task, lang, pred_root, gold_root)
            elif task == "xcopa":
                _xcopa(lang, pred_root, gold_root)
            elif task in ("mewslix", "lareqa"):
                _ranking(task, lang, pred_root, gold_root)
            else:
                raise ValueError(f"no generator for task '{task}'")
    return pred_root, gold_root


def generate_xtreme(root: str | Path) -> tuple[Path, Path]:
    """Write a full XTREME tree under `root`; returns (predictions dir, labels dir)."""
    return _generate(Path(root), XTREME_LANGUAGES)


def generate_xtreme_r(root: str | Path, *, lareqa: bool = True) -> tuple[Path, Path]:
    """Write a full XTREME-R tree under `root`; returns (predictions dir, labels dir).

    `lareqa=False` leaves LAReQA out: the tree the official scorer (google-research/xtreme
    838c13b) can score, since a `lareqa` folder makes it fail.
    """
    tasks = {task: langs for task, langs in XTREME_R_LANGUAGES.items() if lareqa or task != "lareqa"}
    return _generate(Path(root), tasks)


if __name__ == "__main__":
    import sys

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/xstilts_score_trees")
    print(generate_xtreme(target / "xtreme"), generate_xtreme_r(target / "xtreme-r"),
          generate_xtreme_r(target / "xtreme-r-official", lareqa=False))
