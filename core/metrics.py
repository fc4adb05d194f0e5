"""Task metrics, computed the way the official XTREME / XTREME-R evaluation computes them.

Values are percentages (0-100), as XTREME and X-STILTs report them, so the analysis
tables can be compared with published numbers without rescaling.

Each function re-implements the semantics of the official scorer
(google-research/xtreme `evaluate.py`, `third_party/evaluate_squad.py`,
`third_party/evaluate_mlqa.py`, `third_party/utils_mewslix.py`,
`third_party/utils_lareqa.py`), because a leaderboard number is only comparable when
every small rule agrees: which whitespace is ignored, which characters count as
punctuation, which words are articles, how duplicates are counted. The rules that
surprise people are spelled out where they are implemented.

Tagging tasks are scored with `seqeval.metrics.f1_score` in its default (CoNLL) mode,
also for bare tags such as UD part-of-speech tags. That is what XTREME's `evaluate.py`
does for udpos, and it is not token accuracy: seqeval reads the first character of a
tag as a chunk prefix, so "NOUN" becomes a chunk of type "OUN", and consecutive tokens
with the same bare tag merge into one chunk ("NOUN NOUN" is one entity spanning both).
A prediction "NOUN VERB" against gold "NOUN NOUN" therefore scores 0, not 50. We keep
that behaviour on purpose so results are comparable with the XTREME leaderboard.

Every result dict contains a key named like the metric (`compute`'s contract, which the
trainer and the evaluate stage rely on) next to the official keys: for QA that key is
the mean of exact match and F1, which is how XTREME turns a QA task into one number.

This module imports neither torch nor transformers: analysis code may re-score stored
predictions with it on a login node.
"""

from __future__ import annotations

import re
import string
import unicodedata
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

MetricFn = Callable[..., dict[str, float]]


def _check_lengths(predictions: Sequence[Any], references: Sequence[Any]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        raise ValueError("cannot score an empty set of examples")


def _label(value: Any) -> Any:
    """A label as the official line reader sees it: strings lose surrounding whitespace
    (CR of CRLF files, trailing blanks); other values (XCOPA's JSON ints) stay as they are,
    so 1 and "1" remain different, as they are for the official XCOPA reader."""
    return value.strip() if isinstance(value, str) else value


def token_accuracy(
    predictions: Sequence[Sequence[str]], references: Sequence[Sequence[str]], language: str | None = None
) -> dict[str, float]:
    """Percentage of words whose predicted tag equals the gold tag, over all sentences
    (CCG supertagging is reported this way, not as chunk F1)."""
    del language
    _check_lengths(predictions, references)
    correct = total = 0
    for index, (pred, ref) in enumerate(zip(predictions, references)):
        if len(pred) != len(ref):
            raise ValueError(f"sentence {index}: {len(pred)} predicted tags for {len(ref)} gold tags")
        correct += sum(1 for p, r in zip(pred, ref) if p == r)
        total += len(ref)
    if not total:
        raise ValueError("cannot score sentences without words")
    return {"token_accuracy": 100.0 * correct / total}


# --------------------------------------------------------------------------------------
# classification, XCOPA, Tatoeba


def accuracy(predictions: Sequence[Any], references: Sequence[Any], language: str | None = None) -> dict[str, float]:
    """Percentage of examples whose predicted label equals the reference label.

    Labels are compared as exact strings after stripping: Tatoeba's "007" and "7" are
    different answers, because the official scorer compares the lines as text.
    """
    del language
    _check_lengths(predictions, references)
    correct = sum(1 for p, r in zip(predictions, references) if _label(p) == _label(r))
    return {"accuracy": float(correct) / len(predictions) * 100}


# --------------------------------------------------------------------------------------
# tagging


def seqeval_f1(
    predictions: Sequence[Sequence[str]], references: Sequence[Sequence[str]], language: str | None = None
) -> dict[str, float]:
    """Micro chunk F1, precision and recall over sentences of string tags (seqeval default mode).

    Official keys are `f1`, `precision`, `recall`; `seqeval_f1` repeats `f1` because the
    registry calls this metric "seqeval_f1". Sentences must be aligned word for word.
    seqeval warns once per bare tag ("NOUN seems not to be NE tag") and when nothing is
    predicted; both are expected here and muted.
    """
    del language
    _check_lengths(predictions, references)
    for index, (pred, ref) in enumerate(zip(predictions, references)):
        if len(pred) != len(ref):
            raise ValueError(f"sentence {index}: {len(pred)} predicted tags for {len(ref)} gold tags")
    from seqeval.metrics import f1_score, precision_score, recall_score  # slow: after the checks

    preds = [[_label(t) for t in p] for p in predictions]
    refs = [[_label(t) for t in r] for r in references]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f1 = float(f1_score(refs, preds)) * 100
        precision = float(precision_score(refs, preds)) * 100
        recall = float(recall_score(refs, preds)) * 100
    return {"f1": f1, "precision": precision, "recall": recall, "seqeval_f1": f1}


# --------------------------------------------------------------------------------------
# BUCC


def _pair(value: Any) -> tuple[str, ...]:
    # The official reader splits the stripped line on tabs, so "src\ttgt" -> (src, tgt)
    # and a blank line -> ("",); pairs given as tuples are taken as they are.
    if isinstance(value, str):
        return tuple(value.strip().split("\t"))
    return tuple(str(x) for x in value)


def bucc_f1(predictions: Iterable[Any], references: Iterable[Any], language: str | None = None) -> dict[str, float]:
    """F1 of predicted (source id, target id) pairs against gold pairs, both as sets.

    Duplicate pairs collapse (a pair predicted twice counts once), and when no pair is
    right all three numbers are 0, as in the official `bucc_f1`.
    """
    del language
    gold = {_pair(v) for v in references}
    predicted = {_pair(v) for v in predictions}
    correct = len(gold & predicted)
    if correct > 0:
        precision = correct / len(predicted)
        recall = correct / len(gold)
        f1 = 2 * precision * recall / (precision + recall)
    else:
        precision = recall = f1 = 0.0
    return {"f1": f1 * 100, "precision": precision * 100, "recall": recall * 100, "bucc_f1": f1 * 100}


# --------------------------------------------------------------------------------------
# span QA: SQuAD (XQuAD, TyDiQA-GoldP) and MLQA normalisation


_SQUAD_ARTICLES = re.compile(r"\b(a|an|the)\b")
_SQUAD_PUNCT = frozenset(string.punctuation)


def squad_normalize(text: str) -> str:
    """SQuAD v1.1 answer normalisation: lower case, drop ASCII punctuation, drop the
    English articles a/an/the as whole words, collapse whitespace (in that order)."""
    text = "".join(ch for ch in text.lower() if ch not in _SQUAD_PUNCT)
    return " ".join(_SQUAD_ARTICLES.sub(" ", text).split())


# MLQA removes every Unicode punctuation character (category P*) plus ASCII's
# string.punctuation, which also holds symbols such as $ + < = > ^ ` | ~.
_ASCII_PUNCT = frozenset(string.punctuation)
_MLQA_ARTICLES: dict[str, re.Pattern[str] | None] = {
    "en": re.compile(r"\b(a|an|the)\b"),
    "es": re.compile(r"\b(un|una|unos|unas|el|la|los|las)\b"),
    "hi": None,  # no articles
    "vi": re.compile(r"\b(của|là|cái|chiếc|những)\b"),
    "de": re.compile(r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b"),
    "ar": None,  # handled below: every "ال", also inside words
    "zh": None,  # no articles
}
_WHITESPACE_LANGS = frozenset({"en", "es", "hi", "vi", "de", "ar"})
_CJK = re.compile(r"[\u4e00-\u9fa5]")  # the official range, narrower than the full CJK block
MLQA_LANGUAGES: tuple[str, ...] = ("en", "es", "hi", "vi", "de", "ar", "zh")


def _is_mlqa_punct(ch: str) -> bool:
    return ch in _ASCII_PUNCT or unicodedata.category(ch).startswith("P")


def _mixed_segmentation(text: str) -> list[str]:
    # Chinese: every character of the official CJK range (and any punctuation left) is a
    # token of its own; runs of other characters are split on whitespace.
    tokens: list[str] = []
    run = ""
    for ch in text:
        if _CJK.search(ch) or _is_mlqa_punct(ch):
            tokens.extend(run.split())
            run = ""
            tokens.append(ch)
        else:
            run += ch
    tokens.extend(run.split())
    return tokens


def mlqa_normalize(text: str, language: str) -> str:
    """MLQA answer normalisation for `language` (one of MLQA_LANGUAGES).

    Lower case, drop Unicode punctuation, drop the language's articles, then tokenise
    by whitespace (zh: mixed segmentation, one token per Chinese character) and join
    with single spaces. Arabic: the official pattern `\\sال^|ال` can only ever match its
    second branch, so every occurrence of the definite article "ال" is replaced by a
    space, also in the middle of a word ("الكتاب" -> "كتاب", "فالح" -> "ف ح").
    """
    if language not in MLQA_LANGUAGES:
        raise ValueError(f"MLQA has no normalisation for language '{language}'; known: {', '.join(MLQA_LANGUAGES)}")
    text = "".join(ch for ch in text.lower() if not _is_mlqa_punct(ch))
    if language == "ar":
        text = text.replace("ال", " ")
    else:
        pattern = _MLQA_ARTICLES[language]
        if pattern is not None:
            text = pattern.sub(" ", text)
    tokens = text.split() if language in _WHITESPACE_LANGS else _mixed_segmentation(text)
    return " ".join(t for t in tokens if t.strip() != "")


def _token_f1(prediction: str, truth: str, v2: bool = False) -> float:
    pred_tokens = prediction.split()
    gold_tokens = truth.split()
    if v2 and (not pred_tokens or not gold_tokens):
        return float(pred_tokens == gold_tokens)  # SQuAD v2.0: abstaining on "no answer" is right
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision = 1.0 * same / len(pred_tokens)
    recall = 1.0 * same / len(gold_tokens)
    return (2 * precision * recall) / (precision + recall)


def _qa_questions(references: Any) -> list[tuple[str, list[str]]]:
    """(question id, gold answer texts) for every question, in file order.

    Accepts the SQuAD layout ({"data": [articles]} or the article list itself) or a
    plain mapping id -> answer texts. Repeated ids in SQuAD files count once per
    occurrence, as in the official loop.
    """
    if isinstance(references, Mapping) and "data" in references:
        references = references["data"]
    if isinstance(references, Mapping):
        return [(qid, [answers] if isinstance(answers, str) else list(answers)) for qid, answers in references.items()]
    questions = []
    for article in references:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                questions.append((qa["id"], [a["text"] for a in qa["answers"]]))
    return questions


def _qa_scores(
    predictions: Mapping[str, str], references: Any, normalize: Callable[[str], str], v2: bool = False
) -> dict[str, float]:
    questions = _qa_questions(references)
    if not questions:
        raise ValueError("cannot score an empty set of questions")
    exact = f1 = 0.0
    for qid, answers in questions:
        if qid not in predictions:
            continue  # unanswered: scores 0 but still counts in the total
        if not answers:
            raise ValueError(f"question '{qid}' has no gold answer")
        pred = normalize(predictions[qid])
        golds = [normalize(a) for a in answers]
        # Note: two empty normalised strings match exactly but have F1 0.
        exact += max(float(pred == g) for g in golds)
        f1 += max(_token_f1(pred, g, v2) for g in golds)
    total = len(questions)
    return {"exact_match": 100.0 * exact / total, "f1": 100.0 * f1 / total}


def squad_em_f1(predictions: Mapping[str, str], references: Any, language: str | None = None) -> dict[str, float]:
    """SQuAD v1.1 exact match and F1 (XQuAD, TyDiQA-GoldP), best over the gold answers.

    `predictions` maps question id -> answer text; a question without a prediction
    scores 0. The result's `squad_em_f1` is the mean of the two, XTREME's QA score.
    """
    del language
    scores = _qa_scores(predictions, references, squad_normalize)
    scores["squad_em_f1"] = (scores["exact_match"] + scores["f1"]) / 2
    return scores


def squad_v2_em_f1(predictions: Mapping[str, str], references: Any, language: str | None = None) -> dict[str, float]:
    """SQuAD v2.0 exact match and F1: as v1.1, except that an unanswerable question
    (gold "") answered with "" scores F1 100 too (v1.1's rule would give it 0)."""
    del language
    scores = _qa_scores(predictions, references, squad_normalize, v2=True)
    scores["squad_v2_em_f1"] = (scores["exact_match"] + scores["f1"]) / 2
    return scores


def mlqa_em_f1(predictions: Mapping[str, str], references: Any, language: str | None = None) -> dict[str, float]:
    """MLQA exact match and F1 with the answer language's normalisation (`mlqa_normalize`)."""
    if language is None:
        raise ValueError("mlqa_em_f1 needs the answer language (language=...)")
    mlqa_normalize("", language)  # reject an unknown language before scoring
    scores = _qa_scores(predictions, references, lambda text: mlqa_normalize(text, language))
    scores["mlqa_em_f1"] = (scores["exact_match"] + scores["f1"]) / 2
    return scores


# --------------------------------------------------------------------------------------
# ranking: Mewsli-X and LAReQA


def average_precision_at_k(relevant: Iterable[str], ranked: Sequence[str], k: int = 20) -> float:
    """AP@k as XTREME-R's LAReQA code computes it (0-1).

    Only the first k candidates count; a candidate repeated in the ranking counts once
    (its first occurrence); the sum of precisions at the hits is divided by
    min(number of relevant candidates, k). With a single relevant candidate this is
    the reciprocal rank within the top k, which is what Mewsli-X's official
    `evaluate` computes and reports as MAP@20.
    """
    targets = set(relevant)
    if not targets:
        raise ValueError("a query without relevant candidates has no average precision")
    top = list(ranked[:k])
    seen: set[str] = set()
    hits = 0.0
    score = 0.0
    for i, candidate in enumerate(top):
        if candidate in targets and candidate not in seen:
            hits += 1.0
            score += hits / (i + 1.0)
        seen.add(candidate)
    return score / min(len(targets), k)


def map_at_20(
    predictions: Mapping[str, Sequence[str]], references: Mapping[str, Any], language: str | None = None
) -> dict[str, float]:
    """Mean AP@20 over the gold queries (Mewsli-X, LAReQA), in percent.

    `predictions` maps query id -> candidate ids ranked best first; `references` maps
    query id -> relevant candidate ids (a single id may be given as a string). A query
    without a prediction scores 0; predictions for unknown queries are ignored.
    """
    del language
    if not references:
        raise ValueError("cannot score an empty set of queries")
    total = 0.0
    for qid, relevant in references.items():
        targets = [relevant] if isinstance(relevant, str) else list(relevant)
        total += average_precision_at_k(targets, list(predictions.get(qid, [])), 20)
    value = total / len(references) * 100
    return {"map_at_20": value}


PRIMARY_KEY: dict[str, str] = {
    "accuracy": "accuracy",
    "seqeval_f1": "f1",
    "squad_em_f1": "f1",
    "squad_v2_em_f1": "f1",
    "mlqa_em_f1": "f1",
    "bucc_f1": "f1",
    "map_at_20": "map_at_20",
}
"""Registry metric -> the key of its result that ranks models (dev selection, tables).
QA selects on F1, as the XTREME recipes do; the suite score later averages EM and F1."""


def primary_value(metric: str, result: dict[str, float]) -> float:
    """The number that ranks models under `metric` (see `PRIMARY_KEY`)."""
    for key in (PRIMARY_KEY.get(metric, metric), metric):
        if key in result:
            return float(result[key])
    raise KeyError(f"result of metric '{metric}' has none of the keys {PRIMARY_KEY.get(metric, metric)!r}, {metric!r}")


METRICS: dict[str, MetricFn] = {
    "accuracy": accuracy,
    "token_accuracy": token_accuracy,
    "seqeval_f1": seqeval_f1,
    "bucc_f1": bucc_f1,
    "squad_em_f1": squad_em_f1,
    "squad_v2_em_f1": squad_v2_em_f1,
    "mlqa_em_f1": mlqa_em_f1,
    "map_at_20": map_at_20,
}


def compute(
    metric: str, predictions: Any, references: Any, language: str | None = None
) -> dict[str, float]:
    """Score with the registry metric called `metric`; the result always has key `metric`.

    `language` matters for MLQA only (its normalisation is per language).
    """
    try:
        fn = METRICS[metric]
    except KeyError:
        raise ValueError(f"unknown metric '{metric}'; known: {', '.join(sorted(METRICS))}") from None
    return fn(predictions, references, language=language)
