"""Task metrics, computed the way the official XTREME evaluation computes them.

Values are percentages (0-100), as XTREME and X-STILTs report them, so the analysis
tables can be compared with published numbers without rescaling.

Tagging tasks are scored with `seqeval.metrics.f1_score` in its default (CoNLL) mode,
also for bare tags such as UD part-of-speech tags. That is what XTREME's `run_tag.py`
does for udpos, and it is not token accuracy: seqeval reads the first character of a
tag as a chunk prefix, so "NOUN" becomes a chunk of type "OUN", and consecutive tokens
with the same bare tag merge into one chunk ("NOUN NOUN" is one entity spanning both).
A prediction "NOUN VERB" against gold "NOUN NOUN" therefore scores 0, not 50. We keep
that behaviour on purpose so results are comparable with the XTREME leaderboard.

This module imports neither torch nor transformers: analysis code may re-score stored
predictions with it on a login node.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

MetricFn = Callable[[Sequence[Any], Sequence[Any]], dict[str, float]]


def _check_lengths(predictions: Sequence[Any], references: Sequence[Any]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        raise ValueError("cannot score an empty set of examples")


def accuracy(predictions: Sequence[Any], references: Sequence[Any]) -> dict[str, float]:
    """Percentage of examples whose predicted label equals the reference label."""
    _check_lengths(predictions, references)
    correct = sum(1 for p, r in zip(predictions, references) if p == r)
    return {"accuracy": 100.0 * correct / len(references)}


def seqeval_f1(
    predictions: Sequence[Sequence[str]], references: Sequence[Sequence[str]]
) -> dict[str, float]:
    """Micro chunk F1, precision and recall over sentences of string tags (seqeval default mode).

    Sentences must be aligned word for word. seqeval warns once per bare tag ("NOUN seems
    not to be NE tag") and when nothing is predicted; both are expected here and muted.
    """
    from seqeval.metrics import f1_score, precision_score, recall_score

    _check_lengths(predictions, references)
    for index, (pred, ref) in enumerate(zip(predictions, references)):
        if len(pred) != len(ref):
            raise ValueError(f"sentence {index}: {len(pred)} predicted tags for {len(ref)} gold tags")
    preds = [list(p) for p in predictions]
    refs = [list(r) for r in references]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "seqeval_f1": 100.0 * float(f1_score(refs, preds)),
            "precision": 100.0 * float(precision_score(refs, preds)),
            "recall": 100.0 * float(recall_score(refs, preds)),
        }


METRICS: dict[str, MetricFn] = {
    "accuracy": accuracy,
    "seqeval_f1": seqeval_f1,
}


def compute(metric: str, predictions: Sequence[Any], references: Sequence[Any]) -> dict[str, float]:
    """Score with the registry metric called `metric`; the result always has key `metric`."""
    try:
        fn = METRICS[metric]
    except KeyError:
        raise ValueError(f"unknown metric '{metric}'; known: {', '.join(sorted(METRICS))}") from None
    return fn(predictions, references)
