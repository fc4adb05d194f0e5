"""Metrics against hand-computed values, including seqeval's treatment of bare tags."""

from __future__ import annotations

import pytest

from xstilts.core import metrics


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
    from xstilts.core.tasks import TASKS

    trainable = [t for t in TASKS.values() if t.kind in ("classification", "tagging")]
    assert {t.metric for t in trainable} <= set(metrics.METRICS)


# --------------------------------------------------------------------------------------
# official XTREME semantics, hand-computed


def test_accuracy_strips_like_the_official_line_reader() -> None:
    # CRLF and trailing blanks vanish; zero-padded ids stay different strings (Tatoeba)
    assert metrics.accuracy(["a\r", "b  ", " c\t"], ["a", "b", "c"]) == {"accuracy": 100.0}
    assert metrics.accuracy(["007", "7"], ["7", "7"])["accuracy"] == 50.0
    # XCOPA's JSON labels are compared as values: 1 is not "1"
    assert metrics.accuracy([1, "1"], [1, 1])["accuracy"] == 50.0


def test_seqeval_reports_official_keys_and_alias() -> None:
    scores = metrics.compute("seqeval_f1", [["B-PER", "O"]], [["B-PER", "O"]])
    assert scores == {"f1": 100.0, "precision": 100.0, "recall": 100.0, "seqeval_f1": 100.0}


def test_seqeval_lenient_iob() -> None:
    # default mode: an I- tag after O opens a chunk, so I-PER I-PER == B-PER I-PER
    assert metrics.seqeval_f1([["I-PER", "I-PER", "O"]], [["B-PER", "I-PER", "O"]])["f1"] == 100.0
    assert metrics.seqeval_f1([["O", "B-LOC", "I-LOC"]], [["O", "I-LOC", "I-LOC"]])["f1"] == 100.0
    # a type change inside splits the chunk: predicted PER(0) ORG(1) vs gold PER(0-1)
    scores = metrics.seqeval_f1([["B-PER", "I-ORG"]], [["B-PER", "I-PER"]])
    assert (scores["precision"], scores["recall"], scores["f1"]) == (0.0, 0.0, 0.0)
    # tags are stripped like the reader strips lines
    assert metrics.seqeval_f1([["B-PER\r", "O "]], [["B-PER", "O"]])["f1"] == 100.0


def test_bucc_pairs_are_sets() -> None:
    gold = ["a\tb", "c\td", "c\td"]  # duplicate gold pair counts once
    pred = ["a\tb", "a\tb\r", ("e", "f")]  # duplicate prediction counts once
    scores = metrics.bucc_f1(pred, gold)
    # predicted {ab, ef}, gold {ab, cd}: P = 1/2, R = 1/2
    assert scores["precision"] == pytest.approx(50.0)
    assert scores["recall"] == pytest.approx(50.0)
    assert scores["f1"] == pytest.approx(50.0)
    assert scores["bucc_f1"] == scores["f1"]
    # ids are strings: "de-7" is not "de-007"; nothing right -> all zero
    assert metrics.bucc_f1(["de-7\ten-1"], ["de-007\ten-1"]) == {"f1": 0.0, "precision": 0.0, "recall": 0.0,
                                                                  "bucc_f1": 0.0}


def test_squad_normalisation() -> None:
    # ASCII punctuation goes (joining "Eiffel-Tower"), articles only as whole words
    assert metrics.squad_normalize("The  Eiffel-Tower!") == "eiffeltower"
    assert metrics.squad_normalize("an apple in theatre") == "apple in theatre"
    # non-ASCII punctuation stays for SQuAD (MLQA removes it)
    assert metrics.squad_normalize("«Paris»") == "«paris»"


def test_squad_em_f1_best_over_answers_and_unanswered() -> None:
    gold = {"q1": ["Paris", "the city of Paris"], "q2": ["Paris", "France Paris"], "q3": ["a."], "q4": ["Rome"]}
    pred = {"q1": "City of Paris.", "q2": "Paris France", "q3": "the", "unknown": "x"}
    scores = metrics.squad_em_f1(pred, gold)
    # q1 EM 1 F1 1; q2 EM 0 F1 1 (bag of words); q3 both normalise to "" -> EM 1, F1 0;
    # q4 unanswered -> 0, 0 but counted
    assert scores["exact_match"] == pytest.approx(50.0)
    assert scores["f1"] == pytest.approx(50.0)
    assert scores["squad_em_f1"] == pytest.approx(50.0)
    partial = metrics.squad_em_f1({"q": "Paris France"}, {"q": ["Paris"]})
    assert partial["f1"] == pytest.approx(200 / 3)  # P 1/2, R 1
    # the SQuAD file layout works as well
    squad = {"data": [{"paragraphs": [{"qas": [{"id": "q", "answers": [{"text": "Paris"}]}]}]}]}
    assert metrics.compute("squad_em_f1", {"q": "paris"}, squad)["exact_match"] == 100.0


def test_mlqa_chinese_mixed_segmentation() -> None:
    assert metrics.mlqa_normalize("北京大学。", "zh") == "北 京 大 学"
    assert metrics.mlqa_normalize("abc 北京 def", "zh") == "abc 北 京 def"
    scores = metrics.mlqa_em_f1({"q": "北京"}, {"q": ["北京大学"]}, language="zh")
    assert scores["exact_match"] == 0.0
    assert scores["f1"] == pytest.approx(200 / 3)  # characters: P 1, R 1/2
    # SQuAD sees one token each: nothing in common
    assert metrics.squad_em_f1({"q": "北京"}, {"q": ["北京大学"]})["f1"] == 0.0


def test_mlqa_arabic_article_everywhere() -> None:
    assert metrics.mlqa_normalize("الكتاب", "ar") == "كتاب"
    assert metrics.mlqa_normalize("فالح", "ar") == "ف ح"  # also inside a word
    assert metrics.mlqa_em_f1({"q": "كتاب"}, {"q": ["الكتاب"]}, language="ar")["exact_match"] == 100.0
    assert metrics.squad_em_f1({"q": "كتاب"}, {"q": ["الكتاب"]})["exact_match"] == 0.0


def test_mlqa_articles_and_unicode_punctuation() -> None:
    assert metrics.mlqa_normalize("¿Los Andes?", "es") == "andes"
    assert metrics.mlqa_normalize("Der Rhein…", "de") == "rhein"
    assert metrics.mlqa_normalize("The «Amazon»", "en") == "amazon"
    assert metrics.mlqa_normalize("những năm", "vi") == "năm"
    assert metrics.mlqa_normalize("the", "hi") == "the"  # Hindi: no articles removed


def test_mlqa_needs_a_known_language() -> None:
    with pytest.raises(ValueError, match="answer language"):
        metrics.mlqa_em_f1({"q": "x"}, {"q": ["x"]})
    with pytest.raises(ValueError, match="no normalisation for language 'fr'"):
        metrics.compute("mlqa_em_f1", {"q": "x"}, {"q": ["x"]}, language="fr")


def test_average_precision_at_20() -> None:
    assert metrics.average_precision_at_k(["x", "y"], ["x", "z", "y"]) == pytest.approx((1 + 2 / 3) / 2)
    # a repeated candidate counts once, at its first position
    assert metrics.average_precision_at_k(["x", "y"], ["x", "x", "y"]) == pytest.approx((1 + 2 / 3) / 2)
    # only the top 20 count
    ranking = [f"c{i}" for i in range(30)]
    assert metrics.average_precision_at_k(["c19"], ranking) == pytest.approx(1 / 20)
    assert metrics.average_precision_at_k(["c20"], ranking) == 0.0
    # divisor is min(#relevant, 20): 25 relevant, the 20 shown all relevant -> 1
    assert metrics.average_precision_at_k(ranking[:25], ranking) == pytest.approx(1.0)
    # one relevant item: reciprocal rank (Mewsli-X)
    assert metrics.average_precision_at_k(["g"], ["a", "b", "g"]) == pytest.approx(1 / 3)


def test_map_at_20_over_queries() -> None:
    gold = {"q1": ["x", "y"], "q2": "g", "q3": ["h"]}
    pred = {"q1": ["x", "z", "y"], "q2": ["a", "g"], "other": ["h"]}  # q3 unanswered -> 0
    scores = metrics.compute("map_at_20", pred, gold)
    assert scores == {"map_at_20": pytest.approx(((1 + 2 / 3) / 2 + 1 / 2 + 0) / 3 * 100)}


def test_squad_v2_counts_abstaining_on_unanswerable_questions() -> None:
    """v1.1's rule (XTREME's scorer) gives two empty answers F1 0; SQuAD v2.0 gives 100."""
    gold = {"q1": [""], "q2": ["the cat"]}
    predictions = {"q1": "", "q2": "a cat"}
    v1 = metrics.compute("squad_em_f1", predictions, gold)
    v2 = metrics.compute("squad_v2_em_f1", predictions, gold)
    assert (v1["exact_match"], v1["f1"]) == (100.0, 50.0)
    assert (v2["exact_match"], v2["f1"]) == (100.0, 100.0)
    assert v2["squad_v2_em_f1"] == 100.0
