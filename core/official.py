"""The official XTREME / XTREME-R file layout: formats, readers and writers.

Why here, in the torch-free core: the evaluate stage writes predictions (and the
prepare stage gold labels) in this layout on compute nodes, and `xstilts score` reads
them on a login node. One module for both sides means a file is read exactly the way
it was written, and exactly as google-research/xtreme `evaluate.py` reads it (each line
stripped, blank lines between tagged sentences, QA JSON with or without a "data"
wrapper).

Formats (suffix; one file `<dir>/<task>/test-<lang>.<suffix>` per task and language):
    pawsx, xnli, tatoeba   .tsv   one label per line
    udpos, panx            .tsv   one tag per line, a blank line after each sentence
    bucc2018               .tsv   "source_id<TAB>target_id" per line
    xquad, mlqa, tydiqa    .json  predictions {question_id: answer text};
                                  gold SQuAD v1.1 ({"data": [articles]})
    xcopa                  .jsonl one JSON object per line with the choice in "label"
    mewslix                .json  {mention_id: [entity ids, best first]}; gold
                                  {mention_id: [gold entity id]}
    lareqa                 .json  {question_id: [candidate ids, best first]}; gold
                                  {question_id: [relevant candidate ids]} (our layout:
                                  the official scorer has no LAReQA reader)

Scoring tables (`OFFICIAL_KEYS`, `official_key`, `AVG_METRIC_KEYS`, `SCORER_GROUPS`)
follow `evaluate.py` at google-research/xtreme 838c13b, the head of that repository and
the scorer behind the leaderboard. Its one behavioural change since da430dd: Mewsli-X's
`avg_map@20` is its `avg_metric`, so the XTREME-R groups `retrieval` (tatoeba, mewslix)
and `multi_choice` (xcopa) are written where da430dd stopped with a KeyError (its other
change, `dict(score)`, leaves the JSON as it was). Metric keys are spelled as that
scorer writes them (`map@20`, at da430dd too) only in its JSON; everywhere else (metrics,
the task registry, node results) the metric keeps its identifier-safe name `map_at_20`,
and `official_key` is the one place that maps the one to the other.

LAReQA is the one task we score where the official scorer cannot: 838c13b lists it in
XTREME-R with no languages and no reader, so a tree holding a `lareqa` folder makes it
fail (`KeyError: 'avg_metric'`) and its `all_task` is never written. Here LAReQA is scored
on XQuAD-R's languages (`xstilts.core.languages`) with mAP@20 under the same spelling;
it stays in no group, as in the official table, and counts in `all_task` (the mean over
every suite task, the official formula once LAReQA has a score). On a tree without
`lareqa` the output is exactly the official one.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from xstilts.core.atomic import replacing
from xstilts.core.errors import UserError, unknown_choice
from xstilts.core.languages import SUITES
from xstilts.core.tasks import TASKS, Task


class ScoreError(UserError, ValueError):
    """A submission or gold tree that cannot be scored (missing or malformed file)."""


# task -> file format; the format fixes the suffix, reader and writer.
TASK_FORMAT: dict[str, str] = {
    "pawsx": "labels",
    "xnli": "labels",
    "tatoeba": "labels",
    "udpos": "tags",
    "panx": "tags",
    "bucc2018": "pairs",
    "xquad": "qa",
    "mlqa": "qa",
    "tydiqa": "qa",
    "xcopa": "xcopa",
    "mewslix": "rankings",
    "lareqa": "rankings",
}

SUFFIX: dict[str, str] = {"labels": "tsv", "tags": "tsv", "pairs": "tsv", "qa": "json", "xcopa": "jsonl", "rankings": "json"}

# task -> metric of jobs.metrics
TASK_METRIC: dict[str, str] = {
    "pawsx": "accuracy",
    "xnli": "accuracy",
    "tatoeba": "accuracy",
    "xcopa": "accuracy",
    "udpos": "seqeval_f1",
    "panx": "seqeval_f1",
    "bucc2018": "bucc_f1",
    "xquad": "squad_em_f1",
    "tydiqa": "squad_em_f1",
    "mlqa": "mlqa_em_f1",
    "mewslix": "map_at_20",
    "lareqa": "map_at_20",
}

# metric -> the keys of its `metrics.compute` result the official scorer reports, in
# its order (our spelling; `official_key` gives the one the scorer's JSON uses)
OFFICIAL_KEYS: dict[str, tuple[str, ...]] = {
    "accuracy": ("accuracy",),
    "seqeval_f1": ("f1", "precision", "recall"),
    "bucc_f1": ("f1", "precision", "recall"),
    "squad_em_f1": ("exact_match", "f1"),
    "squad_v2_em_f1": ("exact_match", "f1"),
    "mlqa_em_f1": ("exact_match", "f1"),
    "map_at_20": ("map_at_20",),
}

# our metric key -> the official scorer's spelling, where they differ ("map@20" is not an
# identifier, and our metric names double as registry values and result keys)
_OFFICIAL_SPELLING: dict[str, str] = {"map_at_20": "map@20"}

QA_TASKS = frozenset({"xquad", "mlqa", "tydiqa"})

# The averages that become a non-QA task's `avg_metric`, the first present winning
# (the official if/elif chain; QA tasks average exact match and F1 instead).
AVG_METRIC_KEYS: tuple[str, ...] = ("avg_f1", "avg_accuracy", "avg_map@20")

# suite -> the official scorer's GROUP2TASK: group -> tasks averaged into its score, in
# its order. Not the paper's task categories of `xstilts.core.languages` (the registry's
# `group`): the scorer puts XCOPA in two groups and LAReQA in none.
SCORER_GROUPS: dict[str, dict[str, tuple[str, ...]]] = {
    "xtreme": {
        "classification": ("pawsx", "xnli"),
        "tagging": ("udpos", "panx"),
        "qa": ("xquad", "mlqa", "tydiqa"),
        "retrieval": ("bucc2018", "tatoeba"),
    },
    "xtreme-r": {
        "classification": ("xnli", "xcopa"),
        "tagging": ("udpos", "panx"),
        "qa": ("xquad", "mlqa", "tydiqa"),
        "retrieval": ("tatoeba", "mewslix"),
        "multi_choice": ("xcopa",),
    },
}

# kind of a task outside the official suites (intermediate and demo tasks) -> its format
KIND_FORMAT: dict[str, str] = {
    "classification": "labels",
    "tagging": "tags",
    "multiple_choice": "xcopa",
    "span_qa": "qa",
    "dual_encoder": "rankings",
}


def task_format(task: str) -> str:
    """The submission format of `task`: the official one for suite tasks, else the format
    of its kind (so every registered task writes predictions in the same layout)."""
    if task in TASK_FORMAT:
        return TASK_FORMAT[task]
    registered = _registered(task)
    if registered.kind == "retrieval":
        return "pairs" if registered.metric == "bucc_f1" else "labels"
    try:
        return KIND_FORMAT[registered.kind]
    except KeyError:
        raise ScoreError(f"task {task}: kind '{registered.kind}' has no submission format") from None


def task_metric(task: str) -> str:
    """The metric `task` is scored with (the registry's for tasks outside the suites)."""
    return TASK_METRIC[task] if task in TASK_METRIC else _registered(task).metric


def _registered(task: str) -> Task:
    if task not in TASKS:
        raise ScoreError(unknown_choice("task", task, sorted({*TASK_FORMAT, *TASKS})))
    return TASKS[task]


def suite_tables(suite: str) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
    """(task -> languages, group -> tasks as the official scorer groups them) of `suite`;
    a clear error for a bad name."""
    try:
        task_langs, _ = SUITES[suite]
    except KeyError:
        raise ScoreError(unknown_choice("suite", suite, SUITES)) from None
    return task_langs, SCORER_GROUPS[suite]


def official_key(key: str) -> str:
    """`key` (a metric result key of ours) as the official scorer's JSON spells it."""
    return _OFFICIAL_SPELLING.get(key, key)


def official_path(root: str | Path, task: str, lang: str) -> Path:
    """`<root>/<task>/test-<lang>.<suffix>`, the official file of one task and language."""
    return Path(root) / task / f"test-{lang}.{SUFFIX[task_format(task)]}"


# --------------------------------------------------------------------------------------
# readers (the official ones: text mode, universal newlines, every line stripped)


def _open(path: Path) -> TextIO:
    """The file's text, decoded whole (UTF-8, universal newlines, like the official
    `open`), so that a byte that is not UTF-8 is one error naming the file, not a
    traceback from the middle of a reader's loop."""
    if not path.is_file():
        raise ScoreError(f"missing file: {path}")
    try:
        with path.open(encoding="utf-8") as handle:
            return io.StringIO(handle.read())
    except UnicodeDecodeError as exc:
        raise ScoreError(f"{path}: not UTF-8 text (byte {exc.start}); the official files are UTF-8") from None
    except OSError as exc:
        raise ScoreError(f"{path}: cannot read: {exc.strerror or exc}") from None


def read_labels(path: Path) -> list[str]:
    """One label per line, each stripped; a blank line is an (empty) label, as officially."""
    with _open(path) as handle:
        return [line.strip() for line in handle]


def read_tags(path: Path) -> list[list[str]]:
    """Sentences of tags: one stripped tag per line, each blank line ends a sentence.

    Consecutive blank lines therefore give empty sentences, exactly as the official reader.
    """
    sentences: list[list[str]] = []
    current: list[str] = []
    with _open(path) as handle:
        for line in handle:
            line = line.strip()
            if line:
                current.append(line)
            else:
                sentences.append(current)
                current = []
    if current:
        sentences.append(current)
    return sentences


def read_pairs(path: Path) -> list[str]:
    """BUCC: one "source_id<TAB>target_id" per line, each stripped (the official reader).

    A non-blank line with another number of fields (ids separated by spaces, a third
    column) can never match a gold pair: the official scorer silently counts it wrong,
    so a submission written with the wrong separator scored 0. Here it is an error
    naming the line. Blank lines stay as the official reader takes them.
    """
    lines = read_labels(path)
    for number, line in enumerate(lines, start=1):
        fields = len(line.split("\t"))
        if line and fields != 2:
            raise ScoreError(f"{path}, line {number}: expected 'source_id<TAB>target_id', "
                             f"got {fields} tab-separated field(s)")
    return lines


def read_json(path: Path) -> Any:
    """A JSON file; a top-level object's "data" member replaces it (SQuAD files)."""
    with _open(path) as handle:
        try:
            value = json.load(handle)
        except json.JSONDecodeError as exc:
            raise ScoreError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(value, dict) and "data" in value:
        return value["data"]
    return value


def read_xcopa(path: Path) -> list[Any]:
    """The "label" of every JSON line (XCOPA's jsonl)."""
    labels = []
    with _open(path) as handle:
        for number, row in enumerate(handle, start=1):
            try:
                labels.append(json.loads(row)["label"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ScoreError(f"{path}, line {number}: expected a JSON object with a 'label' ({exc})") from None
    return labels


READERS = {
    "labels": read_labels,
    "tags": read_tags,
    "pairs": read_pairs,
    "qa": read_json,
    "xcopa": read_xcopa,
    "rankings": read_json,
}


# --------------------------------------------------------------------------------------
# writers: in-memory predictions / gold -> the official layout


def _write_text(path: Path, text: str) -> Path:
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def _one_line(value: Any, what: str) -> str:
    text = str(value)
    if "\n" in text or "\r" in text:
        raise ValueError(f"{what} {text!r} contains a line break")
    return text


def write_labels(path: str | Path, labels: Iterable[Any]) -> Path:
    """Classification / Tatoeba: one label per line."""
    return _write_text(Path(path), "".join(_one_line(label, "label") + "\n" for label in labels))


def write_tags(path: str | Path, sentences: Iterable[Sequence[Any]]) -> Path:
    """Tagging: one tag per line and a blank line after every sentence (so that even an
    empty sentence survives the round trip through the official reader)."""
    parts = []
    for sentence in sentences:
        for tag in sentence:
            text = _one_line(tag, "tag")
            if not text.strip():
                raise ValueError("a tag may not be blank: the official reader takes a blank line as a sentence end")
            parts.append(text + "\n")
        parts.append("\n")
    return _write_text(Path(path), "".join(parts))


def write_pairs(path: str | Path, pairs: Iterable[Sequence[Any] | str]) -> Path:
    """BUCC: "source_id<TAB>target_id" per line."""
    lines = []
    for pair in pairs:
        if isinstance(pair, str):
            lines.append(_one_line(pair, "pair") + "\n")
        else:
            if len(pair) != 2:
                raise ValueError(f"a BUCC pair is (source id, target id), got {pair!r}")
            src, tgt = pair[0], pair[1]
            lines.append(f"{_one_line(src, 'source id')}\t{_one_line(tgt, 'target id')}\n")
    return _write_text(Path(path), "".join(lines))


def write_qa_predictions(path: str | Path, answers: Mapping[str, str]) -> Path:
    """QA predictions: {question_id: answer text}."""
    return _write_text(Path(path), json.dumps(dict(answers), ensure_ascii=False, indent=1) + "\n")


def write_qa_gold(path: str | Path, gold: Any) -> Path:
    """QA gold in SQuAD v1.1 form. `gold` is a SQuAD dict/article list (written as is) or a
    mapping question_id -> gold answer texts (wrapped into one article and paragraph)."""
    if isinstance(gold, Mapping) and "data" in gold:
        data = gold
    elif isinstance(gold, Mapping):
        qas = [{"id": qid, "question": "", "answers": [{"text": a, "answer_start": -1}
                                                      for a in ([answers] if isinstance(answers, str) else answers)]}
               for qid, answers in gold.items()]
        data = {"version": "1.1", "data": [{"title": "", "paragraphs": [{"context": "", "qas": qas}]}]}
    else:
        data = {"version": "1.1", "data": list(gold)}
    return _write_text(Path(path), json.dumps(data, ensure_ascii=False, indent=1) + "\n")


def write_xcopa(path: str | Path, labels: Iterable[Any]) -> Path:
    """XCOPA: one JSON object per line, the chosen alternative (0 or 1) as int in "label"."""
    return _write_text(Path(path), "".join(json.dumps({"label": int(label)}) + "\n" for label in labels))


def write_rankings(path: str | Path, rankings: Mapping[str, Sequence[str] | str]) -> Path:
    """Mewsli-X / LAReQA: {query_id: [candidate ids, best first]} (gold: relevant ids;
    a single id may be given as a string and is written as a one-element list)."""
    data = {qid: [ids] if isinstance(ids, str) else list(ids) for qid, ids in rankings.items()}
    return _write_text(Path(path), json.dumps(data, ensure_ascii=False, indent=1) + "\n")


_PREDICTION_WRITERS = {
    "labels": write_labels,
    "tags": write_tags,
    "pairs": write_pairs,
    "qa": write_qa_predictions,
    "xcopa": write_xcopa,
    "rankings": write_rankings,
}
_GOLD_WRITERS = {**_PREDICTION_WRITERS, "qa": write_qa_gold}


def write_official(task: str, lang: str, predictions: Any, out_dir: str | Path, *, gold: bool = False) -> Path:
    """Write one task/language file of the official layout under `out_dir` and return its path.

    `predictions` by task: a list of labels (pawsx, xnli, tatoeba, xcopa), a list of tag
    lists (udpos, panx), a dict id -> answer text (xquad, mlqa, tydiqa), a list of
    (source, target) pairs (bucc2018), a dict query id -> ranked candidate ids
    (mewslix, lareqa). With `gold=True` the same shapes write a gold file, except QA,
    which takes a dict id -> gold answer texts (or SQuAD data).
    """
    writers = _GOLD_WRITERS if gold else _PREDICTION_WRITERS
    return writers[task_format(task)](official_path(out_dir, task, lang), predictions)
