"""A deterministic Unigram (SentencePiece) tokenizer trainer for the tiny models.

Why not `tokenizers.trainers.UnigramTrainer`: its result changes from one process to
the next. It counts words in a hash map seeded at random per process (ahash), trains on
them in that map's order, sums the E-step's expected counts in chunks sized by the
rayon thread count, and hands the characters it must keep a score in the order of
another hash set. Two runs of the same prepare:model node therefore got vocabularies
whose scores differed in the last bits and whose rarest characters had swapped scores,
so piece ids, and with them every weight of the pretrained model, differed.

This is the same algorithm, step for step (seed pieces from repeated substrings, EM
with the digamma M-step, pruning by the approximate loss of removing a piece, a final
vocabulary that keeps every character), written so that the result is a function of
the input alone: words are processed in sorted order, sums run in a fixed order in one
thread, and every sort breaks ties by the piece itself. It follows `tokenizers` where
that differs from SentencePiece, so that the demo keeps the vocabulary it was tuned on.

The corpora of the tiny models have a few thousand distinct words, so plain Python
trains one in a few seconds. This module is torch-free.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

UNK_PENALTY = 10.0
"""A character without a piece scores this much below the worst piece (as in tokenizers)."""
LOG_EPSILON = 50.0
"""log-sum-exp ignores a term this far (in log space) below the larger one."""
BOUNDARY = "\0"
"""Separates the words of the flat text whose repeated substrings seed the vocabulary."""


@dataclass(frozen=True)
class UnigramSettings:
    """The trainer's knobs, with tokenizers' defaults."""

    vocab_size: int
    special_tokens: tuple[str, ...]
    max_piece_length: int = 16
    n_sub_iterations: int = 2
    shrinking_factor: float = 0.75
    seed_size: int = 1_000_000
    expected_frequency_threshold: float = 0.5


Piece = tuple[str, float]


def train_unigram(word_counts: Iterable[tuple[str, int]], settings: UnigramSettings) -> list[Piece]:
    """The vocabulary ((piece, log-probability), special tokens first with score 0) that
    `tokenizers.models.Unigram` takes, trained on pre-tokenized words and their counts.

    Words are merged and sorted first, so neither their order nor duplicates matter.
    """
    merged: Counter[str] = Counter()
    for word, count in word_counts:
        if word:
            merged[word] += count
    words = sorted(merged.items())
    if not words:
        raise ValueError("no words to train a tokenizer on")
    required = _required_chars(words)
    if len(required) > settings.vocab_size:
        raise ValueError(f"the corpus has {len(required)} characters, more than a vocabulary of {settings.vocab_size}")
    trainer = _Trainer(words, settings)
    pieces = trainer.run()
    return _finalize(pieces, required, settings)


def _required_chars(words: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    """Every character of the corpus with its count, most frequent first (ties by character)."""
    chars: Counter[str] = Counter()
    for word, count in words:
        for char in word:
            chars[char] += count
    return sorted(chars.items(), key=lambda item: (-item[1], item[0]))


def digamma(x: float) -> float:
    """The digamma function (asymptotic series after shifting x above 7), as tokenizers has it."""
    result = 0.0
    while x < 7.0:
        result -= 1.0 / x
        x += 1.0
    x -= 0.5
    xx = 1.0 / x
    xx2 = xx * xx
    xx4 = xx2 * xx2
    result += (math.log(x) + (1.0 / 24.0) * xx2 - 7.0 / 960.0 * xx4 + (31.0 / 8064.0) * xx4 * xx2
               - (127.0 / 30720.0) * xx4 * xx4)
    return result


def _log_sum_exp(x: float, y: float) -> float:
    """log(exp(x) + exp(y)), dropping a negligible term as tokenizers does."""
    low, high = (y, x) if x > y else (x, y)
    if high > low + LOG_EPSILON:
        return high
    return high + math.log(math.exp(low - high) + 1.0)


Edge = tuple[int, int, int, float]
"""(start, end, piece id, score) of one piece occurrence in a word's lattice."""


class _Lattice:
    """All ways to cut one word into pieces of the current vocabulary.

    Positions are character offsets; a character no piece of length one covers gets an
    unknown edge (id 0), as in tokenizers. Edges are kept in tokenizers' node order
    (by start, then length), which fixes the order of every sum and the choice among
    equal Viterbi scores.
    """

    def __init__(self, word: str, vocab: dict[str, int], scores: Sequence[float], unk_score: float,
                 max_length: int) -> None:
        self.length = len(word)
        self.starting: list[list[Edge]] = [[] for _ in range(self.length + 1)]
        self.ending: list[list[Edge]] = [[] for _ in range(self.length + 1)]
        for start in range(self.length):
            single = False
            for end in range(start + 1, min(self.length, start + max_length) + 1):
                piece = vocab.get(word[start:end])
                if piece is not None:
                    self._add((start, end, piece, scores[piece]))
                    single = single or end == start + 1
            if not single:
                self._add((start, start + 1, 0, unk_score))

    def _add(self, edge: Edge) -> None:
        self.starting[edge[0]].append(edge)
        self.ending[edge[1]].append(edge)

    def marginals(self, freq: float, expected: list[float]) -> float:
        """Add `freq` x each piece's expected count in this word to `expected` (forward-
        backward); returns `freq` x the log-likelihood of the word."""
        n = self.length
        alpha = [0.0] * (n + 1)
        for pos in range(1, n + 1):
            incoming = self.ending[pos]
            total = incoming[0][3] + alpha[incoming[0][0]]
            for start, _, _, score in incoming[1:]:
                total = _log_sum_exp(total, score + alpha[start])
            alpha[pos] = total
        beta = [0.0] * (n + 1)
        for pos in range(n - 1, -1, -1):
            outgoing = self.starting[pos]
            total = outgoing[0][3] + beta[outgoing[0][1]]
            for _, end, _, score in outgoing[1:]:
                total = _log_sum_exp(total, score + beta[end])
            beta[pos] = total
        z = alpha[n]
        for pos in range(n):
            for start, end, piece, score in self.starting[pos]:
                expected[piece] += freq * math.exp(alpha[start] + score + beta[end] - z)
        return freq * z

    def viterbi(self, without: Edge | None = None) -> list[int] | None:
        """Piece ids of the best segmentation (the first of equal ones, as tokenizers
        picks), optionally not using the edge `without`; None when there is none."""
        n = self.length
        best: list[float] = [0.0] * (n + 1)
        back: list[Edge | None] = [None] * (n + 1)
        for pos in range(1, n + 1):
            for edge in self.ending[pos]:
                start = edge[0]
                if edge is without or (start > 0 and back[start] is None):
                    continue
                score = best[start] + edge[3]
                if back[pos] is None or score > best[pos]:
                    best[pos], back[pos] = score, edge
        if back[n] is None:
            return None
        path: list[int] = []
        pos = n
        while pos > 0:
            step = back[pos]
            assert step is not None  # every position on a found path was reached
            path.append(step[2])
            pos = step[0]
        path.reverse()
        return path


class _Model:
    """The pieces of one EM step as a lookup: piece -> id, scores, and the score of an
    unknown character."""

    def __init__(self, pieces: Sequence[Piece], max_length: int) -> None:
        self.vocab = {piece: index for index, (piece, _) in enumerate(pieces) if index > 0}
        self.scores = [score for _, score in pieces]
        self.unk_score = min(score for score in self.scores[1:] if not math.isnan(score)) - UNK_PENALTY
        self.max_length = max_length

    def lattice(self, word: str) -> _Lattice:
        return _Lattice(word, self.vocab, self.scores, self.unk_score, self.max_length)


class _Trainer:
    """EM over the pieces, pruned step by step to the target size."""

    def __init__(self, words: list[tuple[str, int]], settings: UnigramSettings) -> None:
        self.words = words
        self.settings = settings
        self.desired = settings.vocab_size * 11 // 10

    def run(self) -> list[Piece]:
        pieces: list[Piece] = [("<UNK>", math.nan), *self._seed_pieces()]
        while True:
            for _ in range(self.settings.n_sub_iterations):
                pieces = self._m_step(pieces, self._e_step(pieces))
            if len(pieces) <= self.desired:
                return pieces
            pruned = self._prune(pieces)
            if len(pruned) >= len(pieces):  # nothing left to prune: stop short of the size
                return pruned
            pieces = pruned

    # -- seeds ----------------------------------------------------------------------------
    def _seed_pieces(self) -> list[Piece]:
        """Every character (by count), then the repeated substrings of the distinct words
        by occurrences x length: the suffix-array seeds of SentencePiece."""
        chars = sorted(((count, char) for char, count in _required_chars(self.words)), reverse=True)
        seeds: list[tuple[str, float]] = [(char, float(count)) for count, char in chars]
        repeats = _branching_repeats([word for word, _ in self.words], self.settings.max_piece_length)
        ranked = sorted(((count * len(s), s) for s, count in repeats.items()), reverse=True)
        for score, substring in ranked:
            if len(seeds) >= self.settings.seed_size:
                break
            seeds.append((substring, float(score)))
        logsum = math.log(math.fsum(score for _, score in seeds))
        return [(piece, math.log(score) - logsum) for piece, score in seeds]

    # -- EM -------------------------------------------------------------------------------
    def _lattices(self, pieces: Sequence[Piece]) -> list[_Lattice]:
        model = _Model(pieces, self.settings.max_piece_length)
        return [model.lattice(word) for word, _ in self.words]

    def _e_step(self, pieces: Sequence[Piece]) -> list[float]:
        expected = [0.0] * len(pieces)
        for lattice, (_, count) in zip(self._lattices(pieces), self.words):
            lattice.marginals(float(count), expected)
        return expected

    def _m_step(self, pieces: Sequence[Piece], expected: Sequence[float]) -> list[Piece]:
        """Keep pieces expected at least half a time; Bayesian (digamma) re-estimate,
        which acts as a sparse prior."""
        kept: list[Piece] = [pieces[0]]
        total = 0.0
        for (piece, _), freq in zip(pieces[1:], expected[1:]):
            if freq >= self.settings.expected_frequency_threshold:
                kept.append((piece, freq))
                total += freq
        logsum = digamma(total)
        return [kept[0], *((piece, digamma(freq) - logsum) for piece, freq in kept[1:])]

    # -- pruning --------------------------------------------------------------------------
    def _prune(self, pieces: list[Piece]) -> list[Piece]:
        """Drop the pieces whose removal costs the corpus least likelihood, assuming each
        occurrence is replaced by the piece's second-best segmentation."""
        lattices = self._lattices(pieces)
        always_keep, alternatives = self._alternatives(pieces)
        freq = [0.0] * len(pieces)
        inverted: list[list[int]] = [[] for _ in pieces]
        vsum = 0.0
        for index, (lattice, (_, count)) in enumerate(zip(lattices, self.words)):
            vsum += count
            for piece in lattice.viterbi() or []:
                freq[piece] += count
                inverted[piece].append(index)
        total = math.fsum(freq)
        logsum = math.log(total)
        kept: list[Piece] = [pieces[0]]
        candidates: list[tuple[float, int]] = []
        for index in range(1, len(pieces)):
            if freq[index] == 0.0 and not always_keep[index]:
                continue  # on no best path: removing it changes nothing
            if not alternatives[index]:
                kept.append(pieces[index])
                continue
            share = math.fsum(self.words[n][1] for n in inverted[index])
            if share == 0.0:
                continue
            share /= vsum
            logprob = math.log(freq[index]) - logsum
            # tokenizers counts all pieces here where SentencePiece counts the
            # alternatives; kept for the vocabulary the demo was tuned on
            logsum_alt = math.log(total + freq[index] * (len(alternatives) - 1))
            logprob_alt = sum(math.log(freq[alt] + freq[index]) - logsum_alt for alt in alternatives[index])
            candidates.append((share * (logprob - logprob_alt), index))
        size = max(self.desired, int(len(pieces) * self.settings.shrinking_factor))
        for _, index in sorted(candidates, key=lambda c: (-c[0], c[1])):
            if len(kept) >= size:
                break
            kept.append(pieces[index])
        return kept

    def _alternatives(self, pieces: Sequence[Piece]) -> tuple[list[bool], list[list[int]]]:
        """For each piece: whether it must be kept, and the pieces its occurrences would
        become without it (its second-best segmentation when it is its own best one)."""
        model = _Model(pieces, self.settings.max_piece_length)
        always_keep = [index > 0 for index in range(len(pieces))]
        alternatives: list[list[int]] = [[] for _ in pieces]
        for index in range(1, len(pieces)):
            lattice = model.lattice(pieces[index][0])
            if lattice.viterbi() != [index]:
                always_keep[index] = False  # other pieces cut it better: removable when unused
                continue
            whole = next(edge for edge in lattice.starting[0] if edge[2] == index)
            alternatives[index] = lattice.viterbi(without=whole) or []  # none: nothing replaces it
        return always_keep, alternatives


def _branching_repeats(words: Sequence[str], max_length: int) -> dict[str, int]:
    """Substrings (2 to `max_length` characters, within a word) that occur at least twice
    in the words joined by a boundary and are not always followed by the same character
    (or always end a word): the internal nodes of the text's suffix tree, which
    tokenizers (through esaxx) takes as seeds, with their occurrence counts."""
    counts: Counter[str] = Counter()
    followed: Counter[tuple[str, str]] = Counter()
    for word in words:
        n = len(word)
        for start in range(n):
            for end in range(start + 2, min(n, start + max_length) + 1):
                substring = word[start:end]
                counts[substring] += 1
                followed[(substring, word[end] if end < n else BOUNDARY)] += 1
    most_followed: dict[str, int] = {}
    for (substring, _), count in followed.items():
        most_followed[substring] = max(most_followed.get(substring, 0), count)
    return {s: c for s, c in counts.items() if c >= 2 and most_followed[s] < c}


def _finalize(pieces: Sequence[Piece], required: Sequence[tuple[str, int]], settings: UnigramSettings) -> list[Piece]:
    """Special tokens, then every character and the best pieces up to the size, by score.

    Characters EM dropped come back just above the worst piece, the rarer ones lower,
    so that no text meets an unknown piece (tokenizers ranks them in hash order).
    """
    trained = {piece: score for piece, score in pieces[1:]}
    worst = min(trained.values())
    chosen: dict[str, float] = {}
    missing = [char for char, _ in reversed(required) if char not in trained]
    for rank, char in enumerate(missing):
        chosen[char] = worst + rank * 0.0001
    for char, _ in required:
        if char in trained:
            chosen[char] = trained[char]
    budget = settings.vocab_size - len(settings.special_tokens)
    for piece, score in pieces[1:]:
        if len(chosen) >= budget:
            break
        chosen.setdefault(piece, score)
    ranked = sorted(chosen.items(), key=lambda item: (-item[1], item[0]))
    return [*((token, 0.0) for token in settings.special_tokens), *ranked]
