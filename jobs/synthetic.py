"""A deterministic synthetic multilingual benchmark for the xstilts demo.

Why synthetic: the demo must show *real*, measurable STILTs effects on a tiny XLM-R
(2 layers, hidden 64) trained for a few hundred steps on a laptop CPU, without network
access. Real benchmarks are far too hard for such a model, so this module builds a small
world in which the two effects the product is about are present by construction:

1. **Zero-shot cross-lingual transfer that degrades with distance.** There is one
   "English" lexicon of pseudo-words and three synthetic languages (``qaa``, ``qab``,
   ``qac``; ISO 639 reserves ``qaa-qtz`` for local use) that share its grammar and
   meanings but re-spell it. Every English word is a sequence of syllables; a language
   replaces a fraction of the syllable inventory by its own syllables (a *regular sound
   correspondence*, so the same English syllable always becomes the same foreign one).
   The fraction grows ``qaa < qab < qac`` and the changed sets are nested, so subword
   overlap with English shrinks monotonically. ``qab`` and ``qac`` add affixes, and
   ``qac`` also changes word order (adjectives after nouns, postpositions). Names,
   numbers and a handful of loanwords are identical everywhere: the anchors that let an
   encoder pretrained on :func:`corpus` align even the far language.

2. **Intermediate tasks that share structure with the targets.** The two small-data
   targets (``syn-sent``: sentence polarity, ``syn-pos``: POS tags) and the two large
   English intermediate tasks (``syn-rate``: 3-way rating of 2-3 sentence reviews,
   ``syn-chunk``: BIO phrase chunks) are drawn from the same grammar and the same
   lexicon. Words are sampled with Zipfian frequencies, so the 300 training sentences of
   a target see the frequent words often and the long tail (of nouns, verbs and the
   ~90 polar adjectives and adverbs) rarely or never, while the 4000 examples of the
   intermediate task cover it: ``syn-rate`` teaches the polarity of every polar word and
   the negation rule, ``syn-chunk`` teaches which words sit in noun, verb and
   prepositional phrases. Frequent noun/verb and adjective/adverb homographs make POS a
   matter of context, which chunking (NP vs VP) is about.

Polarity is deliberately not a single-word lookup: a clause's score is the sum of the
polarities of its adjectives and adverbs, *flipped* if the clause contains the negator,
and a sentence's score is the sum over its (one or two) clauses.

Everything is deterministic: each random stream is a :class:`random.Random` seeded by a
CRC32 of a descriptive string (never ``hash()``, which is salted per process), and all
iteration is over tuples or sorted collections. Generating all four tasks takes about
half a second.

Public API: :func:`generate` (task splits) and :func:`corpus` (raw text for the tokenizer
and MLM pretraining). This module must stay free of torch.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from xstilts.core.tasks import RATING_LABELS, SYNTHETIC_LANGUAGES, TASKS, get_task
from xstilts.core.rng import stable_rng

__all__ = ["LANGUAGES", "SIZES", "SYNTHETIC_TASKS", "LanguageSpec", "corpus", "generate", "unambiguous_lemmas",
           "word_form"]

SYNTHETIC_TASKS: tuple[str, ...] = tuple(
    sorted(name for name, task in TASKS.items() if task.source.kind == "synthetic")
)

SIZES: dict[str, dict[str, int]] = {
    # Targets: small English training data, test per language.
    "syn-sent": {"train": 300, "dev": 300, "test": 400},
    "syn-pos": {"train": 300, "dev": 300, "test": 400},
    # Intermediate tasks: large, English only.
    "syn-rate": {"train": 4000, "dev": 400, "test": 400},
    "syn-chunk": {"train": 4000, "dev": 400, "test": 400},
}
"""Examples per split (per language for target test sets)."""

SENTENCE_END = "."
"""Closes every sentence in running text (classification inputs and the corpus). It
separates the sentences of a ``syn-rate`` review; tagging examples carry no punctuation
because the POS and chunk label sets have no tag for it."""




# --------------------------------------------------------------------------------------
# Phonology: syllable inventories
# --------------------------------------------------------------------------------------
# Every syllable is onset + vowel + optional coda, with single-letter onsets and codas, so
# a word's syllables can be recovered from its spelling (each vowel owns the consonant in
# front of it). That makes syllable-wise re-spelling injective: two different English
# words can never collapse into one foreign word.

_EN_ONSETS = tuple("bdfgklmnprst")
_EN_VOWELS = tuple("aeiou")
_EN_CODAS = ("", "n", "s")


def _syllables(onsets: Sequence[str], vowels: Sequence[str], codas: Sequence[str]) -> tuple[str, ...]:
    return tuple(o + v + c for o in onsets for v in vowels for c in codas)


_EN_SYLLABLES = _syllables(_EN_ONSETS, _EN_VOWELS, _EN_CODAS)


@dataclass(frozen=True)
class LanguageSpec:
    """How one synthetic language re-spells English.

    `change_rate` is the fraction of English syllables this language replaces. Each
    English syllable draws one uniform number shared by all languages and changes where
    that number is below the rate, so qaa's changes are a subset of qab's, which are a
    subset of qac's: distance is a genuine continuum, not the luck of three draws.
    Replacement syllables come from the language's own inventory and are never English
    syllables, so a changed word cannot accidentally equal another English word (no false
    friends that would make transfer arbitrary).
    """

    code: str
    change_rate: float
    onsets: tuple[str, ...]
    vowels: tuple[str, ...]
    codas: tuple[str, ...]
    near: bool = False
    """Prefer replacements that keep onset and coda and only change the vowel."""
    prefixes: tuple[tuple[str, str], ...] = ()
    """(POS, prefix) pairs applied to every word of that POS (names and numbers excepted)."""
    suffixes: tuple[tuple[str, str], ...] = ()
    adjective_after_noun: bool = False
    postpositions: bool = False


LANGUAGES: dict[str, LanguageSpec] = {
    "en": LanguageSpec("en", 0.0, _EN_ONSETS, _EN_VOWELS, _EN_CODAS),
    # Near: a tenth of the syllables shift their vowel (often to 'y'); same morphology
    # and word order.
    "qaa": LanguageSpec("qaa", 0.1, _EN_ONSETS, (*_EN_VOWELS, "y"), _EN_CODAS, near=True),
    # Medium: a quarter of the syllables replaced by freely chosen ones (some letters
    # English lacks), nouns take a suffix.
    "qab": LanguageSpec(
        "qab", 0.25, (*_EN_ONSETS, "h", "j", "v", "w"), (*_EN_VOWELS, "y"), ("", "n", "s", "r"),
        suffixes=(("NOUN", "ro"),),
    ),
    # Far: 40% of the syllables replaced from a mostly foreign alphabet, affixed nouns
    # and verbs, adjectives after the noun and postpositions.
    "qac": LanguageSpec(
        "qac", 0.4, ("h", "j", "w", "x", "c", "q", "v", "z", "k", "t"), ("a", "e", "o", "u", "y"),
        ("", "h", "x", "l"),
        prefixes=(("VERB", "xu"),), suffixes=(("NOUN", "q"),),
        adjective_after_noun=True, postpositions=True,
    ),
}
assert tuple(LANGUAGES) == SYNTHETIC_LANGUAGES


# --------------------------------------------------------------------------------------
# Lexicon
# --------------------------------------------------------------------------------------

LemmaKind = Literal["native", "loan", "name", "number"]
"""How a lemma is spelled across languages (see `Lemma.kind`)."""


@dataclass(frozen=True)
class Lemma:
    """One word of the shared lexicon; `form` is its English spelling."""

    index: int
    pos: str
    form: str
    syllables: tuple[str, ...]
    polarity: int = 0
    """-1, 0 or +1; only adjectives and adverbs are polar."""
    negator: bool = False
    """The negator flips the polarity of its clause."""
    kind: LemmaKind = "native"
    """'native' (re-spelled per language), 'loan' (same stem everywhere, still affixed),
    'name' or 'number' (identical in every language)."""


# (sampling pool, POS, polarity, count, syllable counts to choose from). Function words are
# short and few; the open classes are large so that 300 target sentences cover them thinly.
_LEXICON_PLAN: tuple[tuple[str, str, int, int, tuple[int, ...]], ...] = (
    ("DET", "DET", 0, 6, (1,)),
    ("PRON", "PRON", 0, 7, (1,)),
    ("ADP", "ADP", 0, 8, (1, 2)),
    ("ADP2", "ADP", 0, 3, (1,)),  # second words of two-word prepositions ("next to")
    ("CONJ", "CONJ", 0, 4, (1,)),
    ("NOUN", "NOUN", 0, 350, (2, 2, 3)),
    ("VERB", "VERB", 0, 130, (2, 2, 3)),
    ("ADJ+", "ADJ", 1, 32, (2, 3)),
    ("ADJ-", "ADJ", -1, 32, (2, 3)),
    ("ADJ0", "ADJ", 0, 60, (2, 3)),
    ("ADV+", "ADV", 1, 8, (2, 3)),
    ("ADV-", "ADV", -1, 8, (2, 3)),
    ("ADV0", "ADV", 0, 10, (2, 3)),
)
# (pool, POS, source pool, count): lemmas spelled like a lemma of another class, as
# English "run" (noun/verb) or "fast" (adjective/adverb). They make POS a matter of
# context, which is exactly what chunking (NP vs VP) teaches; polarity is inherited.
_HOMOGRAPH_PLAN: tuple[tuple[str, str, str, int], ...] = (
    ("VERB", "VERB", "NOUN", 70),
    ("ADV+", "ADV", "ADJ+", 4),
    ("ADV-", "ADV", "ADJ-", 4),
    ("ADV0", "ADV", "ADJ0", 4),
)
_ZIPF_EXPONENT = 1.0
_LOAN_RATE = 0.1  # fraction of open-class lemmas spelled identically in every language
_NAMES = ("Amira", "Bodo", "Cleo", "Dario", "Elif", "Femi", "Goran", "Hana", "Ivo", "Juno",
          "Kemal", "Lior", "Mina", "Nuno", "Oskar", "Priya")
_NUMBERS = tuple(str(n) for n in range(2, 14))


@dataclass(frozen=True)
class _Lexicon:
    lemmas: tuple[Lemma, ...]
    by_class: dict[str, tuple[int, ...]]
    """Sampling pools ('DET', 'PRON', 'ADP', 'ADP2', 'CONJ', 'NOUN', 'VERB', 'NAME',
    'NUM', 'ADJ+', 'ADJ-', 'ADJ0', 'ADV+', 'ADV-', 'ADV0', 'NEG') -> lemma indices in
    frequency-rank order."""
    cum_weights: dict[str, tuple[float, ...]]
    """Zipfian cumulative sampling weights per pool (the i-th lemma has weight 1/(i+1)).
    Real vocabularies are Zipfian: a small target training set sees the frequent words
    often and the long tail rarely or never, which a large intermediate task fills in."""


@lru_cache(maxsize=1)
def _lexicon() -> _Lexicon:
    """Draw the English lexicon once; every language and task shares it."""
    rng = stable_rng("lexicon")
    lemmas: list[Lemma] = []
    pools: dict[str, list[int]] = {}
    seen: set[str] = set()

    def fresh(n_syllables: int) -> tuple[str, ...]:
        while True:
            syllables = tuple(rng.choice(_EN_SYLLABLES) for _ in range(n_syllables))
            if "".join(syllables) not in seen:
                seen.add("".join(syllables))
                return syllables

    def add(pool: str, pos: str, syllables: tuple[str, ...], *, form: str = "", polarity: int = 0,
            negator: bool = False, kind: LemmaKind = "native") -> None:
        index = len(lemmas)
        lemmas.append(Lemma(index, pos, form or "".join(syllables), syllables, polarity, negator, kind))
        pools.setdefault(pool, []).append(index)

    for pool, pos, polarity, count, lengths in _LEXICON_PLAN:
        for _ in range(count):
            open_class = pos in ("NOUN", "VERB", "ADJ", "ADV")
            kind: LemmaKind = "loan" if open_class and rng.random() < _LOAN_RATE else "native"
            add(pool, pos, fresh(rng.choice(lengths)), polarity=polarity, kind=kind)
    # Pool order is frequency rank (Zipf). Homographs copy words from the frequent half of
    # their source class, as ambiguity concentrates in frequent words; then the receiving
    # pool is shuffled so the homographs get ranks spread over the whole range.
    for pool, pos, source_pool, count in _HOMOGRAPH_PLAN:
        frequent = pools[source_pool][: len(pools[source_pool]) // 2]
        for source_index in rng.sample(frequent, count):
            source = lemmas[source_index]
            add(pool, pos, source.syllables, polarity=source.polarity, kind=source.kind)
        rng.shuffle(pools[pool])
    add("NEG", "ADV", fresh(1), negator=True)
    for name in _NAMES:
        add("NAME", "NOUN", (), form=name, kind="name")
    for number in _NUMBERS:
        add("NUM", "DET", (), form=number, kind="number")
    by_class = {k: tuple(v) for k, v in sorted(pools.items())}
    cum_weights = {k: tuple(itertools.accumulate(1.0 / (i + 1) ** _ZIPF_EXPONENT for i in range(len(v))))
                   for k, v in by_class.items()}
    return _Lexicon(tuple(lemmas), by_class, cum_weights)


@lru_cache(maxsize=None)
def _syllable_map(language: str) -> dict[str, str]:
    """English syllable -> this language's syllable, for the syllables it changes."""
    spec = LANGUAGES[language]
    english = sorted({s for lemma in _lexicon().lemmas for s in lemma.syllables})
    change_draw = stable_rng("syllable-change")  # shared by all languages: nested change sets
    draws = {syllable: change_draw.random() for syllable in english}
    english_set = set(_EN_SYLLABLES)
    free = sorted(set(_syllables(spec.onsets, spec.vowels, spec.codas)) - english_set)
    rng = stable_rng("syllable-target", language)
    rng.shuffle(free)
    mapping: dict[str, str] = {}
    for syllable in english:
        if draws[syllable] >= spec.change_rate:
            continue
        target = None
        if spec.near:
            onset, coda = syllable[0], syllable[2:]
            target = next((s for s in free if s[0] == onset and s[2:] == coda), None)
        if target is None:
            if not free:
                raise RuntimeError(f"syllable inventory of {language} too small")
            target = free[0]
        free.remove(target)
        mapping[syllable] = target
    return mapping


def unambiguous_lemmas(pool: str) -> tuple[int, ...]:
    """Lemma indices of a sampling pool ('NOUN', 'ADJ0', 'ADP', ...; see `_Lexicon`) in
    frequency order, without homographs: words other modules (generated captions) can
    use knowing no other lemma is spelled the same."""
    lexicon = _lexicon()
    spellings: dict[str, int] = {}
    for lemma in lexicon.lemmas:
        spellings[lemma.form] = spellings.get(lemma.form, 0) + 1
    return tuple(i for i in lexicon.by_class[pool] if spellings[lexicon.lemmas[i].form] == 1)


def word_form(lemma_index: int, language: str) -> str:
    """The spelling of a lemma in `language` (English is the lexicon's own spelling)."""
    return _forms(language)[lemma_index]


@lru_cache(maxsize=None)
def _forms(language: str) -> tuple[str, ...]:
    """Every lemma's spelling in `language`; homographs stay homographs, nothing else
    collides (checked, because a collision would silently merge two meanings)."""
    if language not in LANGUAGES:
        raise KeyError(f"unknown synthetic language {language!r}; valid: {', '.join(SYNTHETIC_LANGUAGES)}")
    spec = LANGUAGES[language]
    mapping = _syllable_map(language)
    prefixes, suffixes = dict(spec.prefixes), dict(spec.suffixes)
    forms: list[str] = []
    for lemma in _lexicon().lemmas:
        if lemma.kind in ("name", "number"):
            forms.append(lemma.form)
            continue
        stem = lemma.form if lemma.kind == "loan" else "".join(mapping.get(s, s) for s in lemma.syllables)
        forms.append(prefixes.get(lemma.pos, "") + stem + suffixes.get(lemma.pos, ""))
    owners: dict[str, tuple[str, ...]] = {}
    for lemma, form in zip(_lexicon().lemmas, forms):
        owners.setdefault(form, ())
        owners[form] += (lemma.form,)
    for form, english in owners.items():
        if len(set(english)) > 1:
            raise RuntimeError(f"{language}: {form!r} spells several English words {english}")
    return tuple(forms)


# --------------------------------------------------------------------------------------
# Grammar: language-independent sentence structures
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Chunk:
    """A phrase: kind 'NP', 'VP', 'PP' or 'O' (a conjunction), words in English order."""

    kind: str
    words: tuple[int, ...]


@dataclass(frozen=True)
class Sentence:
    """A sentence as an abstract structure, rendered into any language by `_render`."""

    chunks: tuple[Chunk, ...]
    score: int
    """Sum over clauses of (sum of polar word polarities) * (-1 if negated)."""


@dataclass(frozen=True)
class _Style:
    """Sampling knobs of the grammar for one kind of text."""

    polar_rate: float
    """Probability that an adjective or adverb is polar when the mood is polar."""
    neutral_polar_rate: float
    """The same when the mood is neutral (mood 0)."""
    negation_rate: float
    """Probability that a clause is negated."""
    coherence: float
    """Probability that a polar word follows the mood rather than a coin flip."""
    coordination_rate: float = 0.3
    """Probability that a sentence has a second clause (CONJ + clause)."""


# syn-sent: polar words are frequent and mostly agree, negation is the twist.
_SENT_STYLE = _Style(polar_rate=0.7, neutral_polar_rate=0.7, negation_rate=0.15, coherence=0.85)
# syn-rate: the same rules over several sentences; neutral reviews are mostly non-polar.
_REVIEW_STYLE = _Style(polar_rate=0.6, neutral_polar_rate=0.15, negation_rate=0.15, coherence=0.85)
_REVIEW_COHERENCE = 0.85  # probability that a sentence's mood is the review's mood
_RATING_THRESHOLD = 1  # |score| >= threshold is polar, below it neutral
# Corpus, syn-pos and syn-chunk: the general distribution.
_PLAIN_STYLE = _Style(polar_rate=0.5, neutral_polar_rate=0.3, negation_rate=0.2, coherence=0.75)

_BARE_NP_RATE = 0.08  # common-noun phrases without determiner ("good dogs")
_NUMBER_RATE = 0.15  # common-noun phrases with a number as determiner
_ADJECTIVE_COUNT_CUM = tuple(itertools.accumulate((0.35, 0.45, 0.2)))  # P(0, 1, 2 adjectives)


class _Grammar:
    """Samples sentences. `mood` (-1, 0, +1) biases which polar words are chosen, so
    words of the same polarity co-occur (as in real text, which gives MLM pretraining a
    distributional signal for polarity); labels are always computed from the words."""

    def __init__(self, rng: random.Random, style: _Style) -> None:
        self.rng = rng
        self.style = style
        self.pools = _lexicon().by_class
        self.cum_weights = _lexicon().cum_weights
        self.lemmas = _lexicon().lemmas

    def _pick(self, pool: str) -> int:
        """A Zipf-weighted draw (what `rng.choices` does, without its per-call overhead)."""
        cum_weights = self.cum_weights[pool]
        rank = bisect.bisect_right(cum_weights, self.rng.random() * cum_weights[-1], 0, len(cum_weights) - 1)
        return self.pools[pool][rank]

    def _modifier(self, pos: str, mood: int) -> int:
        """An adjective or adverb, polar or not according to the style and mood."""
        polar_rate = self.style.polar_rate if mood != 0 else self.style.neutral_polar_rate
        if self.rng.random() >= polar_rate:
            return self._pick(pos + "0")
        if mood != 0 and self.rng.random() < self.style.coherence:
            sign = mood
        else:
            sign = self.rng.choice((-1, 1))
        return self._pick(pos + ("+" if sign > 0 else "-"))

    def noun_phrase(self, mood: int) -> tuple[int, ...]:
        r = self.rng.random()
        if r < 0.12:
            return (self._pick("PRON"),)
        if r < 0.22:
            return (self._pick("NAME"),)
        words: list[int] = []
        r = self.rng.random()
        if r < _NUMBER_RATE:
            words.append(self._pick("NUM"))
        elif r < 1 - _BARE_NP_RATE:
            words.append(self._pick("DET"))
        draw = self.rng.random() * _ADJECTIVE_COUNT_CUM[-1]
        n_adjectives = bisect.bisect_right(_ADJECTIVE_COUNT_CUM, draw, 0, len(_ADJECTIVE_COUNT_CUM) - 1)
        words.extend(self._modifier("ADJ", mood) for _ in range(n_adjectives))
        words.append(self._pick("NOUN"))
        return tuple(words)

    def clause(self, mood: int) -> tuple[list[Chunk], int]:
        chunks = [Chunk("NP", self.noun_phrase(mood))]
        negated = self.rng.random() < self.style.negation_rate
        verb_phrase: list[int] = [self._pick("NEG")] if negated else []
        if self.rng.random() < 0.35:
            verb_phrase.append(self._modifier("ADV", mood))
        verb_phrase.append(self._pick("VERB"))
        chunks.append(Chunk("VP", tuple(verb_phrase)))
        if self.rng.random() < 0.6:
            chunks.append(Chunk("NP", self.noun_phrase(mood)))
        if self.rng.random() < 0.4:
            # CoNLL-2000 style: the PP chunk is the preposition (one or two words), its
            # object is a chunk of its own.
            preposition: tuple[int, ...] = (self._pick("ADP"),)
            if self.rng.random() < 0.25:
                preposition += (self._pick("ADP2"),)
            chunks += [Chunk("PP", preposition), Chunk("NP", self.noun_phrase(mood))]
        polarity = sum(self.lemmas[w].polarity for chunk in chunks for w in chunk.words)
        return chunks, -polarity if negated else polarity

    def sentence(self, mood: int) -> Sentence:
        chunks, score = self.clause(mood)
        if self.rng.random() < self.style.coordination_rate:
            second, second_score = self.clause(mood)
            chunks = [*chunks, Chunk("O", (self._pick("CONJ"),)), *second]
            score += second_score
        return Sentence(tuple(chunks), score)


def _render(sentence: Sentence, language: str) -> tuple[list[str], list[str], list[str]]:
    """Tokens, POS tags and chunk (BIO) tags of `sentence` in `language`.

    Word order changes keep chunks contiguous (adjectives move behind the noun inside
    their NP; a postposition swaps places with the NP after it), so tags simply travel
    with their words.
    """
    spec = LANGUAGES[language]
    forms = _forms(language)
    lemmas = _lexicon().lemmas
    tokens: list[str] = []
    pos_tags: list[str] = []
    chunk_tags: list[str] = []
    chunks = list(sentence.chunks)
    if spec.postpositions:
        i = 0
        while i < len(chunks) - 1:
            if chunks[i].kind == "PP":  # the grammar always follows a PP by its NP
                chunks[i], chunks[i + 1] = chunks[i + 1], chunks[i]
                i += 1
            i += 1
    for chunk in chunks:
        words = list(chunk.words)
        if spec.adjective_after_noun and chunk.kind == "NP":
            adjectives = [w for w in words if lemmas[w].pos == "ADJ"]
            others = [w for w in words if lemmas[w].pos != "ADJ"]  # (DET) NOUN
            words = others + adjectives
        for position, word in enumerate(words):
            tokens.append(forms[word])
            pos_tags.append(lemmas[word].pos)
            if chunk.kind == "O":
                chunk_tags.append("O")
            else:
                chunk_tags.append(("B-" if position == 0 else "I-") + chunk.kind)
    return tokens, pos_tags, chunk_tags


def _text(sentences: Sequence[Sentence], language: str) -> str:
    return " ".join(" ".join(_render(s, language)[0]) + " " + SENTENCE_END for s in sentences)


# --------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------

def _polarity_sentences(rng: random.Random, n: int) -> list[Sentence]:
    """`n` sentences with a non-zero score, half positive and half negative."""
    grammar = _Grammar(rng, _SENT_STYLE)
    quota = {1: n - n // 2, -1: n // 2}
    sentences: list[Sentence] = []
    while len(sentences) < n:
        sentence = grammar.sentence(rng.choice((-1, 1)))
        sign = (sentence.score > 0) - (sentence.score < 0)
        if sign != 0 and quota[sign] > 0:
            quota[sign] -= 1
            sentences.append(sentence)
    return sentences


def _rating(score: int) -> str:
    """Review score -> rating; the neutral band is |score| < _RATING_THRESHOLD."""
    if score >= _RATING_THRESHOLD:
        return RATING_LABELS[2]
    return RATING_LABELS[0] if score <= -_RATING_THRESHOLD else RATING_LABELS[1]


def _reviews(rng: random.Random, n: int) -> list[dict]:
    """Reviews of 2-3 sentences, balanced over the three ratings."""
    grammar = _Grammar(rng, _REVIEW_STYLE)
    quota = {label: n // 3 + (i < n % 3) for i, label in enumerate(RATING_LABELS)}
    examples: list[dict] = []
    while len(examples) < n:
        review_mood = rng.choice((-1, 0, 1))
        sentences = [
            grammar.sentence(review_mood if rng.random() < _REVIEW_COHERENCE else rng.choice((-1, 0, 1)))
            for _ in range(rng.choice((2, 3)))
        ]
        label = _rating(sum(s.score for s in sentences))
        if quota[label] > 0:
            quota[label] -= 1
            examples.append({"text": _text(sentences, "en"), "label": label})
    return examples


def _plain_sentences(rng: random.Random, n: int) -> list[Sentence]:
    grammar = _Grammar(rng, _PLAIN_STYLE)
    return [grammar.sentence(rng.choice((-1, 0, 1))) for _ in range(n)]


def _target(task_name: str) -> dict[str, dict[str, list[dict]]]:
    """Targets: English train/dev; the test set is one set of structures rendered in
    every language, so the per-language test sets are exact translations of each other."""
    task = get_task(task_name)
    splits: dict[str, dict[str, list[dict]]] = {}
    for split, n in SIZES[task_name].items():
        rng = stable_rng(task_name, split)
        languages = task.languages if split == "test" else ("en",)
        if task_name == "syn-sent":
            sentences = _polarity_sentences(rng, n)
            negative, positive = task.labels
            splits[split] = {
                lang: [{"text": _text([s], lang), "label": positive if s.score > 0 else negative}
                       for s in sentences]
                for lang in languages
            }
        else:
            sentences = _plain_sentences(rng, n)
            splits[split] = {lang: [_tagged(s, lang, pos=True) for s in sentences] for lang in languages}
    return splits


def _tagged(sentence: Sentence, language: str, pos: bool) -> dict:
    tokens, pos_tags, chunk_tags = _render(sentence, language)
    return {"tokens": tokens, "tags": pos_tags if pos else chunk_tags}


def _intermediate(task_name: str) -> dict[str, dict[str, list[dict]]]:
    splits: dict[str, dict[str, list[dict]]] = {}
    for split, n in SIZES[task_name].items():
        rng = stable_rng(task_name, split)
        if task_name == "syn-rate":
            splits[split] = {"en": _reviews(rng, n)}
        else:
            splits[split] = {"en": [_tagged(s, "en", pos=False) for s in _plain_sentences(rng, n)]}
    return splits


def generate(task_name: str) -> dict[str, dict[str, list[dict]]]:
    """Splits 'train', 'dev', 'test' -> language -> examples.

    Targets (syn-sent, syn-pos): train/dev only 'en', test every language of the task.
    Intermediate tasks (syn-rate, syn-chunk): all splits 'en' only. Classification
    examples are ``{"text", "label"}``, tagging examples ``{"tokens", "tags"}``. Each call
    builds fresh lists (callers may mutate them) with identical content.
    """
    if task_name not in SYNTHETIC_TASKS:
        raise KeyError(f"unknown synthetic task {task_name!r}; valid synthetic tasks: {', '.join(SYNTHETIC_TASKS)}")
    data = _target(task_name) if "target" in get_task(task_name).roles else _intermediate(task_name)
    _check(task_name, data)
    return data


def _check(task_name: str, data: dict[str, dict[str, list[dict]]]) -> None:
    """Cheap invariants; a violation is a bug in this module, not in the caller."""
    labels = set(get_task(task_name).labels)
    for languages in data.values():
        for examples in languages.values():
            for example in examples:
                if "tags" in example:
                    assert len(example["tags"]) == len(example["tokens"]) and set(example["tags"]) <= labels
                else:
                    assert example["label"] in labels


def corpus(languages: Sequence[str], sentences_per_language: int, seed: int = 0) -> list[str]:
    """Raw sentences (space-separated words, ending in ``.``) in the given languages.

    For training the tokenizer and MLM-pretraining the tiny encoder. Each language gets
    its own independent sentences (monolingual, not parallel text, like real pretraining
    data); the lines are interleaved language by language so any prefix is balanced.
    """
    for language in languages:
        if language not in LANGUAGES:
            raise KeyError(f"unknown synthetic language {language!r}; valid: {', '.join(SYNTHETIC_LANGUAGES)}")
    per_language = []
    for language in languages:
        rng = stable_rng("corpus", seed, language)
        per_language.append([_text([s], language) for s in _plain_sentences(rng, sentences_per_language)])
    return [lines[i] for i in range(sentences_per_language) for lines in per_language]
