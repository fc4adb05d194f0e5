"""Metrics against hand-computed values, including seqeval's treatment of bare tags."""

from __future__ import annotations

import pytest

from jobs import metrics


def test_accuracy_is_a_percentage() -> None:
    assert metrics.accuracy(["a", "b", "b", "a"], ["a", "b", "a", "a"]) == {"accuracy": 75.0}
    assert metrics.compute("accuracy", [1, 0], [1, 0]) == {"accuracy": 100.0}


def test_seqeval_bio_chunks() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["O", "B-ORG"]]
    # gold chunks: PER(0-1), LOC(3), ORG; predicted: PER(0-1), ORG -> P = 2/2, R = 2/3
    scores = metrics.seqeval_f1(pred, gold)
    assert scores["precision"] == pytest.approx(100.0)
    assert scores["recall"] == pytest.approx(200 / 3)
    assert scores["seqeval_f1"] == pytest.approx(80.0)


def test_seqeval_partial_chunk_is_wrong() -> None:
    gold = [["B-NP", "I-NP", "I-NP"]]
    pred = [["B-NP", "I-NP", "O"]]
    assert metrics.seqeval_f1(pred, gold)["seqeval_f1"] == 0.0


def test_seqeval_on_bare_pos_tags_follows_xtreme() -> None:
    """XTREME scores udpos with seqeval's default mode on bare tags. seqeval then reads
    the first letter as a chunk prefix and merges runs of the same tag, so this is not
    token accuracy; these cases pin that behaviour down."""
    # identical sequences: perfect
    assert metrics.seqeval_f1([["DET", "NOUN", "VERB"]], [["DET", "NOUN", "VERB"]])["seqeval_f1"] == 100.0
    # "NOUN NOUN" is one chunk; "NOUN VERB" two different ones: nothing matches
    # although half the tokens are right (token accuracy would be 50)
    assert metrics.seqeval_f1([["NOUN", "VERB"]], [["NOUN", "NOUN"]])["seqeval_f1"] == 0.0
    # PRON and PROPN are different chunk types ("RON" vs "ROPN"), as in udpos
    assert metrics.seqeval_f1([["PRON", "PRON"]], [["PRON", "PROPN"]])["seqeval_f1"] == 0.0
    # 3 gold chunks (DET, ADJ ADJ merged, NOUN), predicted DET, ADJ, NOUN NOUN:
    # correct DET only -> P = 1/3, R = 1/3
    gold = [["DET", "ADJ", "ADJ", "NOUN"]]
    pred = [["DET", "ADJ", "NOUN", "NOUN"]]
    assert metrics.seqeval_f1(pred, gold)["seqeval_f1"] == pytest.approx(100 / 3)


def test_seqeval_nothing_to_find_scores_zero() -> None:
    assert metrics.seqeval_f1([["O", "O"]], [["O", "O"]])["seqeval_f1"] == 0.0


def test_errors() -> None:
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        metrics.accuracy([1, 2], [1])
    with pytest.raises(ValueError, match="empty"):
        metrics.accuracy([], [])
    with pytest.raises(ValueError, match="sentence 0"):
        metrics.seqeval_f1([["O"]], [["O", "O"]])
    with pytest.raises(ValueError, match="unknown metric 'bleu'"):
        metrics.compute("bleu", [1], [1])


def test_every_registry_metric_is_implemented() -> None:
    from jobs.tasks.registry import TASKS

    trainable = [t for t in TASKS.values() if t.kind in ("classification", "tagging")]
    assert {t.metric for t in trainable} <= set(metrics.METRICS)
