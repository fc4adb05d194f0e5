"""The deterministic Unigram trainer of the tiny models: the vocabulary depends on the
words alone (not their order), it is the vocabulary `tokenizers`' own trainer finds,
and it has the shape a tokenizer needs."""

from __future__ import annotations

import json
import math
import random
from functools import lru_cache

import pytest
from scipy.special import digamma as reference_digamma

from xstilts.jobs import synthetic
from xstilts.jobs.unigram import UnigramSettings, digamma, train_unigram

SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
SETTINGS = UnigramSettings(vocab_size=600, special_tokens=SPECIALS)


def _sentences() -> list[str]:
    return synthetic.corpus(["en", "qaa", "qab", "qac"], 300, seed=0)


@lru_cache(maxsize=1)
def _words() -> tuple[tuple[str, int], ...]:
    """The corpus cut as the stage cuts it (Metaspace), one entry per occurrence."""
    from tokenizers import pre_tokenizers

    pre = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    return tuple((word, 1) for sentence in _sentences() for word, _ in pre.pre_tokenize_str(sentence))


@lru_cache(maxsize=1)
def _vocab() -> tuple[tuple[str, float], ...]:
    return tuple(train_unigram(_words(), SETTINGS))


def test_the_vocabulary_depends_on_the_words_not_their_order() -> None:
    shuffled = list(_words())
    random.Random(3).shuffle(shuffled)
    counted: dict[str, int] = {}
    for word, count in shuffled:
        counted[word] = counted.get(word, 0) + count
    assert tuple(train_unigram(shuffled, SETTINGS)) == _vocab()  # scores equal to the bit
    assert tuple(train_unigram(counted.items(), SETTINGS)) == _vocab()


def test_special_tokens_then_every_character_and_the_best_pieces() -> None:
    vocab = _vocab()
    assert vocab[: len(SPECIALS)] == tuple((token, 0.0) for token in SPECIALS)
    pieces = [piece for piece, _ in vocab]
    assert len(pieces) == len(set(pieces)) == SETTINGS.vocab_size
    assert {char for word, _ in _words() for char in word} <= set(pieces)  # no text meets <unk>
    scores = [score for _, score in vocab[len(SPECIALS):]]
    assert scores == sorted(scores, reverse=True) and all(score < 0 for score in scores)


def test_it_is_the_vocabulary_tokenizers_trains() -> None:
    """The same algorithm as `tokenizers.trainers.UnigramTrainer`: the same pieces with
    the same scores, up to that trainer's own run-to-run noise (last bits, and the
    order in which it scores the characters it adds back)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    backend = Tokenizer(models.Unigram())
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=SETTINGS.vocab_size, special_tokens=list(SPECIALS),
                                      unk_token="<unk>", show_progress=False)
    backend.train_from_iterator(_sentences(), trainer)
    theirs = {piece: score for piece, score in json.loads(backend.to_str())["model"]["vocab"]}
    ours = dict(_vocab())
    shared = set(ours) & set(theirs)
    assert len(shared) >= 0.99 * len(theirs)
    close = [piece for piece in shared if abs(ours[piece] - theirs[piece]) < 1e-3]
    assert len(close) >= 0.99 * len(shared)


def test_a_vocabulary_smaller_than_the_alphabet_is_an_error() -> None:
    with pytest.raises(ValueError, match="more than a vocabulary of 3"):
        train_unigram([("▁abcdef", 2)], UnigramSettings(vocab_size=3, special_tokens=()))
    with pytest.raises(ValueError, match="no words"):
        train_unigram([], SETTINGS)


def test_digamma() -> None:
    for x in (0.5, 1.0, 3.3, 7.0, 250.0, 1e6):
        assert math.isclose(digamma(x), float(reference_digamma(x)), rel_tol=1e-9, abs_tol=1e-9)


def test_the_stage_tokenizer_is_the_same_for_reordered_sentences() -> None:
    """prepare:model's tokenizer file is a function of its corpus as a multiset."""
    from xstilts.jobs.stages.prepare_model import train_tokenizer

    sentences = _sentences()
    first = train_tokenizer(sentences, 600).backend_tokenizer.to_str()
    assert train_tokenizer(sentences[::-1], 600).backend_tokenizer.to_str() == first
