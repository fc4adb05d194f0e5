"""The synthetic benchmark: deterministic, well-formed, and built so that transfer works.

Besides the data contract (splits, languages, labels, aligned tags) these tests pin the
properties the demo relies on: the non-English test sets are translations of the English
one, surface overlap with English shrinks qaa > qab > qac, and even a bag-of-words model
trained on English transfers above chance to the near language.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from xstilts.jobs import synthetic
from xstilts.core.tasks import CHUNK_TAGS, POS_TAGS, RATING_LABELS, SYNTHETIC_LANGUAGES, get_task
from tests.support.paths import REPO

TARGETS = ("syn-sent", "syn-pos")
INTERMEDIATES = ("syn-rate", "syn-chunk")
FAR_LANGUAGES = ("qaa", "qab", "qac")  # from near to far


@pytest.fixture(scope="module")
def data() -> dict[str, dict[str, dict[str, list[dict]]]]:
    return {name: synthetic.generate(name) for name in TARGETS + INTERMEDIATES}


def test_generates_exactly_the_registry_synthetic_tasks() -> None:
    assert set(synthetic.SYNTHETIC_TASKS) == set(TARGETS + INTERMEDIATES)


def test_generate_is_deterministic() -> None:
    for name in TARGETS + INTERMEDIATES:
        assert synthetic.generate(name) == synthetic.generate(name)


def test_deterministic_across_processes_and_hash_seeds() -> None:
    """Nothing may depend on hash randomization: two interpreters with different
    PYTHONHASHSEED produce the same data."""
    code = (
        "import hashlib, json; from jobs import synthetic as s; "
        "out = {n: s.generate(n) for n in s.SYNTHETIC_TASKS}; "
        "out['corpus'] = s.corpus(['en', 'qac'], 50, seed=1); "
        "print(hashlib.sha256(json.dumps(out, sort_keys=True).encode()).hexdigest())"
    )
    digests = {
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                       env={"PYTHONHASHSEED": seed}, cwd=REPO).stdout
        for seed in ("0", "4242")
    }
    assert len(digests) == 1


def test_generate_returns_fresh_lists() -> None:
    first = synthetic.generate("syn-sent")
    first["train"]["en"].clear()
    assert len(synthetic.generate("syn-sent")["train"]["en"]) == 300


def test_unknown_task_is_a_key_error_naming_the_valid_ones() -> None:
    for name in ("syn-nope", "xnli"):  # unknown, and registered but not synthetic
        with pytest.raises(KeyError) as excinfo:
            synthetic.generate(name)
        for valid in TARGETS + INTERMEDIATES:
            assert valid in str(excinfo.value)


def test_split_and_language_structure(data) -> None:
    for name in TARGETS:
        splits = data[name]
        assert set(splits) == {"train", "dev", "test"}
        assert set(splits["train"]) == set(splits["dev"]) == {"en"}
        assert tuple(splits["test"]) == get_task(name).languages == SYNTHETIC_LANGUAGES
        assert len(splits["train"]["en"]) == 300 and len(splits["dev"]["en"]) == 300
        assert all(len(examples) == 400 for examples in splits["test"].values())
    for name in INTERMEDIATES:
        splits = data[name]
        assert set(splits) == {"train", "dev", "test"}
        assert all(set(by_language) == {"en"} for by_language in splits.values())
        assert [len(splits[s]["en"]) for s in ("train", "dev", "test")] == [4000, 400, 400]


def test_labels_come_from_the_registry(data) -> None:
    assert get_task("syn-rate").labels == RATING_LABELS
    for name in ("syn-sent", "syn-rate"):
        labels = set(get_task(name).labels)
        for by_language in data[name].values():
            for examples in by_language.values():
                assert all(set(ex) == {"text", "label"} for ex in examples)
                assert all(isinstance(ex["text"], str) and ex["text"] for ex in examples)
                assert {ex["label"] for ex in examples} == labels  # every label occurs


def test_tags_are_aligned_with_tokens_and_in_the_label_set(data) -> None:
    for name, tagset in (("syn-pos", POS_TAGS), ("syn-chunk", CHUNK_TAGS)):
        assert get_task(name).labels == tagset
        seen: set[str] = set()
        for by_language in data[name].values():
            for examples in by_language.values():
                for ex in examples:
                    assert set(ex) == {"tokens", "tags"}
                    assert len(ex["tokens"]) == len(ex["tags"]) > 0
                    assert all(isinstance(t, str) and t and " " not in t for t in ex["tokens"])
                    seen.update(ex["tags"])
        assert seen == set(tagset)  # every tag occurs


def test_chunk_tags_are_well_formed_bio(data) -> None:
    for examples in data["syn-chunk"].values():
        for ex in examples["en"]:
            previous = "O"
            for tag in ex["tags"]:
                if tag.startswith("I-"):
                    assert previous[2:] == tag[2:], ex
                previous = tag


def test_labels_are_balanced(data) -> None:
    for split in ("train", "dev", "test"):
        counts = Counter(ex["label"] for ex in data["syn-sent"][split]["en"])
        assert max(counts.values()) - min(counts.values()) <= 1
        counts = Counter(ex["label"] for ex in data["syn-rate"][split]["en"])
        assert max(counts.values()) - min(counts.values()) <= 1


def test_test_sets_are_translations_of_the_english_one(data) -> None:
    sent_test = data["syn-sent"]["test"]
    english_labels = [ex["label"] for ex in sent_test["en"]]
    for language in FAR_LANGUAGES:
        assert [ex["label"] for ex in sent_test[language]] == english_labels
        assert sent_test[language] != sent_test["en"]

    pos_test = data["syn-pos"]["test"]
    reordered = 0
    for index, english in enumerate(pos_test["en"]):
        for language in FAR_LANGUAGES:
            other = pos_test[language][index]
            assert len(other["tokens"]) == len(english["tokens"])
            assert Counter(other["tags"]) == Counter(english["tags"])
            if language in ("qaa", "qab"):  # same word order as English
                assert other["tags"] == english["tags"]
        reordered += pos_test["qac"][index]["tags"] != english["tags"]
    assert reordered > 100  # qac puts adjectives after nouns and uses postpositions

    # Shared material: numbers and names are spelled the same in every language.
    for index, english in enumerate(pos_test["en"]):
        anchors = Counter(t for t in english["tokens"] if t.isdigit() or t[0].isupper())
        for language in FAR_LANGUAGES:
            other = Counter(t for t in pos_test[language][index]["tokens"] if t.isdigit() or t[0].isupper())
            assert other == anchors


def _token_overlap(examples: list[dict], english_vocabulary: set[str]) -> float:
    tokens = [t for ex in examples for t in ex["tokens"]]
    return sum(t in english_vocabulary for t in tokens) / len(tokens)


def test_surface_overlap_with_english_decreases_with_distance(data) -> None:
    test = data["syn-pos"]["test"]
    english_vocabulary = {t for ex in test["en"] for t in ex["tokens"]}
    overlap = {language: _token_overlap(test[language], english_vocabulary) for language in FAR_LANGUAGES}
    assert _token_overlap(test["en"], english_vocabulary) == 1.0
    assert 1.0 > overlap["qaa"] > overlap["qab"] > overlap["qac"] > 0.1, overlap
    assert overlap["qaa"] > 0.7 and overlap["qac"] < 0.5, overlap


def test_word_forms_never_merge_two_meanings() -> None:
    lexicon = synthetic._lexicon().lemmas
    for language in SYNTHETIC_LANGUAGES:
        meaning_of: dict[str, str] = {}
        for lemma in lexicon:
            form = synthetic.word_form(lemma.index, language)
            # Homographs (same English spelling) may share a form; nothing else may.
            assert meaning_of.setdefault(form, lemma.form) == lemma.form


def _naive_bayes(examples: list[dict]) -> Callable[[str], str]:
    """A multinomial naive Bayes over whitespace tokens with add-one smoothing."""
    counts: dict[str, Counter[str]] = {}
    for ex in examples:
        counts.setdefault(ex["label"], Counter()).update(ex["text"].split())
    vocabulary = set().union(*counts.values())
    totals = {label: sum(c.values()) + len(vocabulary) for label, c in counts.items()}

    def predict(text: str) -> str:
        words = [w for w in text.split() if w in vocabulary]
        def log_likelihood(label: str) -> float:
            return sum(math.log((counts[label][w] + 1) / totals[label]) for w in words)

        return max(sorted(counts), key=log_likelihood)

    return predict


def _accuracy(predict: Callable[[str], str], examples: list[dict]) -> float:
    return sum(predict(ex["text"]) == ex["label"] for ex in examples) / len(examples)


def test_bag_of_words_trained_on_english_transfers_to_qaa(data) -> None:
    predict = _naive_bayes(data["syn-sent"]["train"]["en"])
    test = data["syn-sent"]["test"]
    accuracy = {language: _accuracy(predict, test[language]) for language in SYNTHETIC_LANGUAGES}
    assert accuracy["en"] > 0.7, accuracy
    assert accuracy["qaa"] > 0.65, accuracy  # chance is 0.5 (balanced labels)
    assert accuracy["en"] >= accuracy["qaa"] >= accuracy["qac"], accuracy


def test_polarity_is_not_a_single_word_lookup(data) -> None:
    """Summing word polarities while ignoring negation gets most but not all labels."""
    lexicon = synthetic._lexicon().lemmas
    polarity = {lemma.form: lemma.polarity for lemma in lexicon if lemma.polarity}
    negator = next(lemma.form for lemma in lexicon if lemma.negator)
    examples = data["syn-sent"]["train"]["en"]
    correct = 0
    for ex in examples:
        score = sum(polarity.get(w, 0) for w in ex["text"].split())
        correct += (score > 0) == (ex["label"] == "positive")
    assert 0.7 < correct / len(examples) < 0.97
    assert sum(negator in ex["text"].split() for ex in examples) > 0.1 * len(examples)


def test_rating_texts_are_several_sentences(data) -> None:
    for ex in data["syn-rate"]["train"]["en"][:200]:
        assert ex["text"].split().count(synthetic.SENTENCE_END) in (2, 3)
    for ex in data["syn-sent"]["test"]["qac"]:
        assert ex["text"].endswith(" " + synthetic.SENTENCE_END)


def test_corpus() -> None:
    lines = synthetic.corpus(["en", "qac"], 50)
    assert len(lines) == 100
    assert lines == synthetic.corpus(["en", "qac"], 50)
    assert lines != synthetic.corpus(["en", "qac"], 50, seed=1)
    assert all(line.endswith(" .") and "  " not in line for line in lines)
    # Interleaved: even lines English, odd lines qac, which spells with letters English
    # lacks (names, capitalized, are the same in every language).
    def letters(line: str) -> set[str]:
        return set("".join(w for w in line.split() if w.isalpha() and w.islower()))

    assert all(letters(line) <= set("abdefgiklmnoprstu") for line in lines[0::2])
    assert sum(bool(letters(line) & set("hjwxcqyvz")) for line in lines[1::2]) > 40
    assert synthetic.corpus(["qab"], 3) == synthetic.corpus(["en", "qab"], 3)[1::2]
    with pytest.raises(KeyError):
        synthetic.corpus(["en", "fr"], 3)


def test_generation_is_fast() -> None:
    start = time.perf_counter()
    for name in TARGETS + INTERMEDIATES:
        synthetic.generate(name)
    assert time.perf_counter() - start < 3.0


def test_module_is_torch_free() -> None:
    code = "import sys, xstilts.jobs.synthetic; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
