"""Tiny deterministic data for every registered real task, in its real local format.

Why: the loaders must read the files a cluster really has (the layout google-research/
xtreme's download scripts write, and the generic jsonl/tsv for the other tasks), but
tests cannot download gigabytes. `write_fixture(task, root)` writes a few examples per
split and language in exactly those formats, so `xstilts.jobs.tasks.sources.load_examples(task,
split, lang, data_dir=root)` reads them through the production code path. Text is made
of pseudo-words; labels come from the task's label set; QA answers sit in the context at
their `answer_start`; retrieval gold ids name real candidates.

Unlike the official download script, the fixtures keep the test labels (XNLI, PAN-X,
... test files with gold; BUCC test gold), so the loaded examples can be checked fully;
`tests/unit/jobs/test_task_sources.py` covers the stripped variants separately.
"""

from __future__ import annotations

import csv
import json
import random
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from xstilts.core.tasks import TASKS, TATOEBA_ISO3, Task, get_task

_SYLLABLES = ("ka", "lo", "mi", "ne", "su", "ta", "ro", "vi", "de", "pa", "zu", "fe")


def _rng(*parts: object) -> random.Random:
    return random.Random(zlib.crc32("/".join(map(str, parts)).encode()))


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 3)))


def _sentence(rng: random.Random, lang: str, words: int | None = None) -> str:
    count = words or rng.randint(3, 7)
    text = " ".join(f"{_word(rng)}{lang}" if i % 3 == 0 else _word(rng) for i in range(count))
    return text[0].upper() + text[1:] + "."


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _write_tsv(path: Path, rows: Iterable[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle, delimiter="\t", lineterminator="\n").writerows(rows)


def _write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    _write(path, "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))


def _write_json(path: Path, data: Any) -> None:
    _write(path, json.dumps(data, ensure_ascii=False))


def _split_langs(task: Task) -> Iterable[tuple[str, str]]:
    for split in task.splits:
        for lang in task.split_languages(split):
            yield split, lang


# --------------------------------------------------------------------------------------
# formats


def _pair_tsv(task: Task, root: Path, n: int, label_of: Callable[[int], str]) -> None:
    for split, lang in _split_langs(task):
        rng = _rng(task.name, split, lang)
        rows = [[_sentence(rng, lang), _sentence(rng, lang), label_of(i)] for i in range(n)]
        _write_tsv(root / task.name / f"{split}-{lang}.tsv", rows)


def _tags(rng: random.Random, labels: tuple[str, ...], length: int) -> list[str]:
    return [rng.choice(labels) for _ in range(length)]


def _conll(task: Task, root: Path, n: int, labels: tuple[str, ...], relative: Callable[[str, str], str]) -> None:
    for split, lang in _split_langs(task):
        rng = _rng(task.name, split, lang)
        blocks = []
        for i in range(n):
            length = rng.randint(2, 6)
            tokens = [f"{_word(rng)}{lang}" for _ in range(length)]
            tags = [labels[(i + j) % len(labels)] for j in range(length)]
            blocks.append("".join(f"{token}\t{tag}\n" for token, tag in zip(tokens, tags)))
        _write(root / relative(split, lang), "\n".join(blocks))


def _paragraph(rng: random.Random, lang: str, questions: int, qid: Callable[[int], str]) -> dict[str, Any]:
    """A SQuAD paragraph with sentence breaks; question k's answer is a word of sentence k."""
    sentences = [_sentence(rng, lang) for _ in range(max(questions, 2))]
    context, breaks = "", []
    for sentence in sentences:
        start = len(context) + (1 if context else 0)
        context = f"{context} {sentence}" if context else sentence
        breaks.append([start, start + len(sentence)])
    qas = []
    for k in range(questions):
        begin, end = breaks[k]
        words = context[begin:end].rstrip(".").split(" ")
        pick = rng.randrange(len(words))
        offset = begin + sum(len(w) + 1 for w in words[:pick])
        answer = {"text": words[pick], "answer_start": offset}
        qas.append({"id": qid(k), "question": f"Which {_word(rng)} {_word(rng)}{lang}?", "answers": [answer]})
    return {"context": context, "sentence_breaks": breaks, "qas": qas}


def _squad_file(path: Path, rng: random.Random, lang: str, n: int, prefix: str, unanswerable: bool = False) -> None:
    paragraphs = [_paragraph(rng, lang, 2, lambda k, p=p: f"{prefix}{p:04d}{k}") for p in range((n + 1) // 2)]
    for p, paragraph in enumerate(paragraphs):
        del paragraph["sentence_breaks"]  # SQuAD files have none
        if unanswerable and p % 2 == 1:  # SQuAD v2.0: every other paragraph's last question
            paragraph["qas"][-1].update(answers=[], is_impossible=True)
    _write_json(path, {"version": "1.1", "data": [{"title": f"{prefix}-title", "paragraphs": paragraphs}]})


def _squad_train_dev(root: Path, n: int) -> None:
    _squad_file(root / "squad/train-v1.1.json", _rng("squad", "train"), "en", n, "tr")
    _squad_file(root / "squad/dev-v1.1.json", _rng("squad", "dev"), "en", n, "dv")


def _copa_records(rng: random.Random, lang: str, n: int) -> list[dict[str, Any]]:
    return [
        {"premise": _sentence(rng, lang), "choice1": _sentence(rng, lang), "choice2": _sentence(rng, lang),
         "question": ("cause", "effect")[i % 2], "label": i % 2, "idx": i + 1, "changed": False}
        for i in range(n)
    ]


# --------------------------------------------------------------------------------------
# one writer per task


def _xnli(task: Task, root: Path, n: int) -> None:
    _pair_tsv(task, root, n, lambda i: task.labels[i % 3])


def _pawsx(task: Task, root: Path, n: int) -> None:
    _pair_tsv(task, root, n, lambda i: str(i % 2))


def _panx(task: Task, root: Path, n: int) -> None:
    _conll(task, root, n, task.labels, lambda split, lang: f"panx/{split}-{lang}.tsv")


def _udpos(task: Task, root: Path, n: int) -> None:
    _conll(task, root, n, task.labels, lambda split, lang: f"udpos/{split}-{lang}.tsv")


def _ccg(task: Task, root: Path, n: int) -> None:
    categories = ("NP", "N/N", "(S\\NP)/NP", "S\\NP", "NP/N", ".")
    for split in task.splits:
        rng = _rng("ccg", split)
        lines = []
        for _ in range(n):
            tokens = [f"{_word(rng)}|NN|{rng.choice(categories)}" for _ in range(rng.randint(2, 6))]
            lines.append(" ".join(tokens))
        _write(root / f"ccg/{split}.stagged", "\n".join(lines) + "\n")


def _xquad(task: Task, root: Path, n: int) -> None:
    _squad_train_dev(root, n)
    for lang in task.languages:
        _squad_file(root / f"xquad/xquad.{lang}.json", _rng("xquad", lang), lang, n, "xq")


def _mlqa(task: Task, root: Path, n: int) -> None:
    _squad_train_dev(root, n)
    for lang in task.languages:
        path = root / f"mlqa/MLQA_V1/test/test-context-{lang}-question-{lang}.json"
        _squad_file(path, _rng("mlqa", lang), lang, n, "ml")


def _tydiqa(task: Task, root: Path, n: int) -> None:
    _squad_file(root / "tydiqa/tydiqa-goldp-v1.1-train/tydiqa.goldp.en.train.json", _rng("tydiqa", "train"),
                "en", n, "ty")
    for lang in task.languages:
        _squad_file(root / f"tydiqa/tydiqa-goldp-v1.1-dev/tydiqa.goldp.{lang}.dev.json", _rng("tydiqa", lang),
                    lang, n, f"{lang}-")


def _squad(task: Task, root: Path, n: int) -> None:
    _squad_train_dev(root, n)


def _squad_v2(task: Task, root: Path, n: int) -> None:
    _squad_file(root / "squad/train-v2.0.json", _rng("squad2", "train"), "en", n, "t2", unanswerable=True)
    _squad_file(root / "squad/dev-v2.0.json", _rng("squad2", "dev"), "en", n, "d2", unanswerable=True)


def _xcopa(task: Task, root: Path, n: int) -> None:
    _write_jsonl(root / "xcopa/train.en.jsonl", _copa_records(_rng("copa", "train"), "en", n))
    _write_jsonl(root / "xcopa/val.en.jsonl", _copa_records(_rng("copa", "val"), "en", n))
    for lang in task.languages:
        _write_jsonl(root / f"xcopa/test.{lang}.jsonl", _copa_records(_rng("xcopa", lang), lang, n))


def _socialiqa(task: Task, root: Path, n: int) -> None:
    for stem in ("trn", "dev"):
        rng = _rng("siqa", stem)
        records = [
            {"context": _sentence(rng, "en"), "question": f"What will {_word(rng)} want?",
             "answerA": _word(rng), "answerB": _word(rng), "answerC": _word(rng), "correct": "ABC"[i % 3]}
            for i in range(n)
        ]
        _write_jsonl(root / f"siqa/socialIQa_v1.4_{stem}.jsonl", records)


def _tatoeba(task: Task, root: Path, n: int) -> None:
    for lang in task.languages:
        rng, iso3 = _rng("tatoeba", lang), TATOEBA_ISO3[lang]
        _write(root / f"tatoeba/tatoeba.{iso3}-eng.{iso3}", "".join(_sentence(rng, lang) + "\n" for _ in range(n)))
        _write(root / f"tatoeba/tatoeba.{iso3}-eng.eng", "".join(_sentence(rng, "en") + "\n" for _ in range(n)))


def _bucc2018(task: Task, root: Path, n: int) -> None:
    """Comparable corpora: 2n sentences per side, n of them parallel (BUCC's ids)."""
    for split in task.splits:
        for lang in task.split_languages(split):
            rng = _rng("bucc", split, lang)
            foreign = [(f"{lang}-{i + 1:09d}", _sentence(rng, lang)) for i in range(2 * n)]
            english = [(f"en-{i + 1:09d}", _sentence(rng, "en")) for i in range(2 * n)]
            gold = [(foreign[i][0], english[(i * 7) % (2 * n)][0]) for i in range(0, 2 * n, 2)]
            stem = root / f"bucc2018/{lang}-en.{split}"
            _write_tsv(Path(f"{stem}.{lang}"), [list(pair) for pair in foreign])
            _write_tsv(Path(f"{stem}.en"), [list(pair) for pair in english])
            _write_tsv(Path(f"{stem}.gold"), [list(pair) for pair in gold])


def _lareqa(task: Task, root: Path, n: int) -> None:
    """SQuAD for train/dev; XQuAD-R: the same question ids in every language (parallel)."""
    _squad_train_dev(root, n)
    for lang in task.languages:
        rng = _rng("xquad-r", lang)
        paragraphs = [_paragraph(rng, lang, 2, lambda k, p=p: f"q{p:04d}{k}") for p in range((n + 1) // 2)]
        _write_json(root / f"lareqa/xquad-r/{lang}.json",
                    {"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]})


def _entity(rng: random.Random, qid: str) -> dict[str, Any]:
    first, second = _sentence(rng, "en"), _sentence(rng, "en")
    description = f"{first} {second}"
    return {
        "entity_id": qid, "title": _word(rng).title(), "description": description, "description_language": "en",
        "description_url": f"https://en.wikipedia.org/wiki/{qid}",
        "sentence_spans": [{"start": 0, "end": len(first)}, {"start": len(first) + 1, "end": len(description)}],
    }


def _mention_context(rng: random.Random, lang: str, doc: str) -> tuple[dict[str, Any], dict[str, int | str]]:
    """A two-sentence context and the span of a mention (a word of its second sentence)."""
    first, second = _sentence(rng, lang), _sentence(rng, lang)
    text = f"{first} {second}"
    start = len(first) + 1
    word = second.split(" ")[0]
    context = {"document_title": doc, "document_url": f"https://example.org/{doc}", "document_id": doc,
               "language": lang, "text": text,
               "sentence_spans": [{"start": 0, "end": len(first)}, {"start": start, "end": len(text)}]}
    return context, {"start": start, "end": start + len(word), "text": word}


def _mewslix(task: Task, root: Path, n: int) -> None:
    rng = _rng("mewslix")
    entities = [_entity(rng, f"Q{100 + i}") for i in range(2 * n)]
    _write_jsonl(root / "mewslix/candidate_set_entities.jsonl", entities)
    for split in ("train", "dev"):
        pairs = []
        for i in range(n):
            context, span = _mention_context(rng, "en", f"Q{900 + i}")
            entity = entities[(i * 3) % len(entities)]
            mention = {"example_id": f"{split}-{i}", "mention_span": span, "entity_id": entity["entity_id"]}
            pairs.append({"contextual_mention": {"context": context, "mention": mention}, "entity": entity})
        _write_jsonl(root / f"mewslix/wikipedia_pairs-{split}.jsonl", pairs)
    for lang in task.languages:  # the layout utils_preprocess.py --task mewslix writes
        records, labels = [], {}
        for i in range(max(1, n // 2)):
            context, span = _mention_context(rng, lang, f"{lang}-doc{i}")
            mentions = [{"example_id": f"{lang}-{i}-{m}", "mention_span": span, "entity_id": ""} for m in range(2)]
            labels.update({mention["example_id"]: [entities[(i + m) % len(entities)]["entity_id"]]
                           for m, mention in enumerate(mentions)})
            records.append({"context": context, "mentions": mentions})
        _write_jsonl(root / f"mewslix/wikinews_mentions/test-{lang}.jsonl", records)
        _write_json(root / f"mewslix/wikinews_labels/test-{lang}.json", labels)  # kept gold (see module doc)


# --- generic jsonl / tsv (tasks without an official local layout) -------------------------


def _nli_jsonl(task: Task, root: Path, n: int) -> None:
    for split, lang in _split_langs(task):
        rng = _rng(task.name, split)
        _write_jsonl(root / task.name / f"{split}-{lang}.jsonl", [
            {"id": f"{split}{i}", "text": _sentence(rng, lang), "text_b": _sentence(rng, lang),
             "label": task.labels[i % len(task.labels)]} for i in range(n)
        ])


def _classification_tsv(task: Task, root: Path, n: int) -> None:
    for split, lang in _split_langs(task):
        rng = _rng(task.name, split)
        rows = []
        for i in range(n):
            texts = [_sentence(rng, lang)] + ([_sentence(rng, lang)] if task.is_pair else [])
            rows.append(texts + [task.labels[i % len(task.labels)]])
        _write_tsv(root / task.name / f"{split}-{lang}.tsv", rows)


def _choices_jsonl(task: Task, root: Path, n: int, k: int) -> None:
    for split, lang in _split_langs(task):
        rng = _rng(task.name, split)
        _write_jsonl(root / task.name / f"{split}-{lang}.jsonl", [
            {"context": _sentence(rng, lang), "question": f"What {_word(rng)}?",
             "choices": [_sentence(rng, lang) for _ in range(k)], "label": i % k} for i in range(n)
        ])


def _choices_tsv(task: Task, root: Path, n: int, k: int) -> None:
    for split, lang in _split_langs(task):
        rng = _rng(task.name, split)
        rows = [["", f"What {_word(rng)}?"] + [_word(rng) for _ in range(k)] + [str(i % k)] for i in range(n)]
        _write_tsv(root / task.name / f"{split}-{lang}.tsv", rows)


_WRITERS: dict[str, Callable[[Task, Path, int], None]] = {
    "xnli": _xnli,
    "pawsx": _pawsx,
    "panx": _panx,
    "udpos": _udpos,
    "xquad": _xquad,
    "mlqa": _mlqa,
    "tydiqa": _tydiqa,
    "xcopa": _xcopa,
    "tatoeba": _tatoeba,
    "bucc2018": _bucc2018,
    "lareqa": _lareqa,
    "mewslix": _mewslix,
    "squad": _squad,
    "squad_v2": _squad_v2,
    "socialiqa": _socialiqa,
    "ccg": _ccg,
    "anli_plus": _nli_jsonl,
    "paws": _nli_jsonl,
    "mnli": _classification_tsv,
    "qqp": _classification_tsv,
    "sst2": _classification_tsv,
    "hellaswag": lambda task, root, n: _choices_jsonl(task, root, n, 4),
    "cosmosqa": lambda task, root, n: _choices_jsonl(task, root, n, 4),
    "commonsenseqa": lambda task, root, n: _choices_tsv(task, root, n, 5),
}

FIXTURE_TASKS: tuple[str, ...] = tuple(sorted(name for name, t in TASKS.items() if t.source.kind not in ("synthetic", "captions")))
"""Every registered text task read from the hub or local files: each has a writer (checked by
the tests). Image-caption tasks have their own loaders and tests (tests/unit/jobs/test_captions.py)."""


def write_fixture(task_name: str, root: Path, n: int = 8) -> Path:
    """Write `n` examples per split and language of `task_name` under `root` in the
    task's real local format; returns `root`, the `data_dir` to load them from."""
    task = get_task(task_name)
    if task_name not in _WRITERS:
        raise KeyError(f"no fixture writer for task '{task_name}'; known: {', '.join(sorted(_WRITERS))}")
    root = Path(root)
    _WRITERS[task_name](task, root, n)
    return root
