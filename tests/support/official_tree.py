"""A `data_dir` exactly as google-research/xtreme's download leaves it, in miniature.

Why: a researcher who runs the official `scripts/download_data.sh` (which calls
`utils_preprocess.py --task <task>` after each download) gets files whose *shape* the
hand-made fixtures of `tests/support/task_fixtures.py` never had: CRLF tsv rows written
by `csv.writer`, test files without labels or tags, QA test answers blanked to one empty
answer, XCOPA test labels set to 0, Tatoeba's English side sorted, BUCC's test gold
deleted, Mewsli-X sharded per language with its test entity ids blanked. Loaders that
pass on the old fixtures broke on those files. `write_official_tree(root)` writes every
XTREME and XTREME-R target (and the English data their recipes train on) the way the
official tools do, so the loaders are tested on what a cluster really holds.

How: for each dataset, small raw records are generated in the shape of the ORIGINAL
release (XNLI-1.0 tsv with its 19 columns, PAN-X `lang:token<TAB>tag` files, UD conllu
with fused tokens, SQuAD-format json, LASER's aligned Tatoeba files, ...), serialised as
the release serialises them, and then passed through Python mirrors of the official
transformations. Each mirror is a small function named after the official one
(`xnli_preprocess`, `udpos_preprocess`, `conllu_to_conll`, `download_bucc18`, ...) whose
docstring says what the official code does; none of the official code is imported or
run. The official sources read (commit 838c13b of google-research/xtreme):
`scripts/download_data.sh`, `utils_preprocess.py`,
`third_party/ud-conversion-tools/{conllu_to_conll.py,lib/conll.py}`.

Details that could not be read from the official code (the raw releases themselves are
not in the repository) follow the public releases as documented: XNLI/PAWS-X column
layouts, SQuAD json (`json.dumps` defaults), XQuAD-R json (sorted keys), Mewsli-X
schema (`third_party/utils_mewslix.py`, written with `ensure_ascii=False`), BUCC ids
`<lang>-<9 digits>`, TyDiQA ids `<language name>-<hash>-<n>`. Files the official script
leaves out but XTREME-R needs (XQuAD `ro`) are written as the researcher adds them by
hand (the raw release file, with gold) and listed in `OfficialTree.manual`.

Sizes: `per_language` examples per split and language (all Tatoeba languages, the 49
MLQA context/question pairs, ...); the whole tree takes well under 2 s and is a pure
function of `(per_language, seed)`.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xstilts.core.languages import XTREME_LANGUAGES, XTREME_R_LANGUAGES
from xstilts.core.tasks import TATOEBA_ISO3, TYDIQA_LANGUAGE_NAMES, UDPOS_TREEBANKS, get_task

__all__ = ["Expected", "OfficialTree", "TREE_TASKS", "write_official_tree"]

TREE_TASKS: tuple[str, ...] = (
    "xnli", "pawsx", "xcopa", "udpos", "panx", "xquad", "mlqa", "tydiqa", "bucc2018", "tatoeba", "mewslix", "lareqa",
    "squad", "socialiqa",
)
"""The twelve XTREME/XTREME-R targets, then the registered English tasks whose files the
official script also leaves (SQuAD v1.1 for the QA targets, Social IQa for XCOPA)."""

Files = dict[str, str]
"""Relative path -> file text (written as UTF-8, no newline translation)."""


@dataclass(frozen=True)
class Expected:
    """What `load_split(task, split, lang, data_dir=root)` must return on this tree.

    `files`: the official files holding the split (relative to `data_dir`).
    `examples`: the number of canonical examples (retrieval: queries + candidates);
    None where the loader decides it (TyDiQA's English train/dev share one file: see
    `OfficialTree.holdout_pool`). `gold_withheld`: what the official layout implies.
    `why`: the official step that decides it.
    """

    files: tuple[str, ...]
    examples: int | None
    gold_withheld: bool
    why: str


@dataclass
class OfficialTree:
    """What `write_official_tree` wrote.

    `expected[(task, split, lang)]` for every registered split of `TREE_TASKS`;
    `files`: every file written (relative, sorted); `manual`: files the official script
    does not fetch, added as its README tells the researcher; `holdout_pool[task]`: the
    number of English training examples that a task's train and dev splits share when
    the official layout has no usable English dev set (TyDiQA).
    """

    root: Path
    expected: dict[tuple[str, str, str], Expected] = field(default_factory=dict)
    files: tuple[str, ...] = ()
    manual: tuple[str, ...] = ()
    holdout_pool: dict[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------------------
# text in real scripts

_LATIN = "ka lo mi ne su ta ro vi de pa zu fe".split()
_SCRIPTS: dict[str, str] = {
    "arabic": "كا لي مو نا سا تي با را دو",
    "persian": "پا چی گو ژه کا می نو را",
    "urdu": "ٹا ڈو پا چی گو کا نے را",
    "hebrew": "שָׁ לו מי נה דה כא בו רי",
    "devanagari": "क ला मि नी सु ता रो वि दे",
    "bengali": "কা লো মি নে সু তা রো বি",
    "tamil": "கா லோ மி நெ சு தா ரோ வி",
    "telugu": "కా లో మి నె సు తా రో వి",
    "malayalam": "കാ ലോ മി നെ സു താ രോ വി",
    "gujarati": "કા લો મિ ને સુ તા રો વિ",
    "gurmukhi": "ਕਾ ਲੋ ਮਿ ਨੇ ਸੁ ਤਾ ਰੋ ਵਿ",
    "thai": "กา โล มิ เน สุ ตา โร วิ",
    "myanmar": "ကာ လို မိ နေ စု တာ ရို ဝိ",
    "georgian": "კა ლო მი ნე სუ ტა რო ვი",
    "greek": "κα λο μι νε συ τα ρο βι",
    "cyrillic": "ка ло ми не су та ро ви",
    "hangul": "가 로 미 네 수 타 로 비",
    "japanese": "か ろ み ね す た ロ ビ 日 本",
    "han": "我 们 学 生 中 国 你 好 天",
}
_SCRIPT_OF: dict[str, str] = {
    "ar": "arabic", "fa": "persian", "ur": "urdu", "he": "hebrew", "hi": "devanagari", "mr": "devanagari",
    "bn": "bengali", "ta": "tamil", "te": "telugu", "ml": "malayalam", "gu": "gujarati", "pa": "gurmukhi",
    "th": "thai", "my": "myanmar", "ka": "georgian", "el": "greek", "ru": "cyrillic", "bg": "cyrillic",
    "uk": "cyrillic", "kk": "cyrillic", "ko": "hangul", "ja": "japanese", "zh": "han",
}
_LATIN_EXTRA: dict[str, str] = {
    "de": "ä ö ü ß", "fr": "é è ç", "es": "ñ á", "pt": "ã ç", "it": "à ò", "tr": "ş ğ ı", "az": "ə ş",
    "et": "õ ä", "fi": "ä ö", "hu": "ő ű", "pl": "ą ł ż", "lt": "ė š ų", "ro": "ș ț ă", "vi": "ư ơ ế",
    "yo": "ẹ ọ ṣ", "sw": "nga mba", "ht": "è ò", "qu": "ñ qa", "wo": "ë ñ", "jv": "é", "eu": "tx ñ",
    "nl": "ij", "af": "ê ë", "id": "ng", "ms": "ny", "tl": "ng", "en": "th",
}
_UNSPACED = ("zh", "ja", "th")
"""Languages written without spaces between words (their sentences are joined without)."""
_FULL_STOP: dict[str, str] = {"zh": "。", "ja": "。", "hi": "।", "mr": "।", "bn": "।"}


def _syllables(lang: str) -> list[str]:
    if lang in _SCRIPT_OF:
        return _SCRIPTS[_SCRIPT_OF[lang]].split()
    return _LATIN + _LATIN_EXTRA.get(lang, "").split()


def _word(rng: random.Random, lang: str) -> str:
    return "".join(rng.choice(_syllables(lang)) for _ in range(rng.randint(1, 3)))


def _words(rng: random.Random, lang: str, count: int | None = None) -> list[str]:
    return [_word(rng, lang) for _ in range(count or rng.randint(3, 6))]


def _join(words: Sequence[str], lang: str) -> str:
    return ("" if lang in _UNSPACED else " ").join(words)


def _sentence(rng: random.Random, lang: str) -> str:
    return _join(_words(rng, lang), lang) + _FULL_STOP.get(lang, ".")


# --------------------------------------------------------------------------------------
# serialisation as the official code and the releases write


def _csv_tsv(rows: Iterable[Sequence[str]]) -> str:
    """`csv.writer(fout, delimiter='\\t')` with its default '\\r\\n' line terminator, as
    `utils_preprocess.py` writes XNLI and PAWS-X (the file is opened with 'w', so the CR
    stays on disk)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t")
    for row in rows:
        writer.writerow(list(row))
    return buffer.getvalue()


def _tsv_lines(rows: Iterable[Sequence[str]]) -> str:
    """A release's plain tsv: fields joined by tabs, '\\n' after every line, no quoting."""
    return "".join("\t".join(row) + "\n" for row in rows)


def _json_lines(records: Iterable[Any], ensure_ascii: bool) -> str:
    return "".join(json.dumps(record, ensure_ascii=ensure_ascii) + "\n" for record in records)


# --------------------------------------------------------------------------------------
# XNLI (download_xnli): XNLI-MT-1.0 + XNLI-1.0 -> xnli/{train-en,dev-<l>,test-<l>}.tsv

_XNLI_HEADER = ("language gold_label sentence1_binary_parse sentence2_binary_parse sentence1_parse "
                "sentence2_parse sentence1 sentence2 promptID pairID genre label1 label2 label3 label4 "
                "label5 sentence1_tokenized sentence2_tokenized match").split()
_NLI_RAW = ("entailment", "neutral", "contradiction")


def _quoted(rng: random.Random, lang: str, index: int) -> str:
    """Every third sentence carries double quotes, which `csv.writer` must quote."""
    text = _sentence(rng, lang)
    return f'"{text[:-1]}" {_word(rng, lang)}.' if index % 3 == 0 else text


def _raw_xnli(rng: random.Random, split: str, n: int) -> str:
    """`XNLI-1.0/xnli.<split>.tsv`: a header, then one row per pair, languages interleaved."""
    rows = [_XNLI_HEADER]
    for index in range(n):
        for lang in XTREME_R_LANGUAGES["xnli"]:
            first, second = _quoted(rng, lang, index), _sentence(rng, lang)
            label = _NLI_RAW[index % 3]
            rows.append([lang, label, "( x )", "( y )", "(ROOT x)", "(ROOT y)", first, second, str(index),
                         str(index + 1), "fiction", label, label, label, label, label, first, second, "True"])
    return _tsv_lines(rows)


def _raw_multinli(rng: random.Random, n: int) -> str:
    """`XNLI-MT-1.0/multinli/multinli.train.en.tsv`: premise, hypo, label ('contradictory')."""
    labels = ("entailment", "neutral", "contradictory")
    return _tsv_lines([["premise", "hypo", "label"]] + [
        [_quoted(rng, "en", i), _sentence(rng, "en"), labels[i % 3]] for i in range(n)])


def xnli_preprocess(multinli_train: str, xnli_dev: str, xnli_test: str) -> Files:
    """utils_preprocess.xnli_preprocess: `train-en.tsv` from MultiNLI (columns 0-2,
    'contradictory' renamed 'contradiction'); `dev-<l>.tsv`/`test-<l>.tsv` per language
    from XNLI-1.0 (columns 6, 7 and 1), test rows written WITHOUT their label; all via
    `csv.writer(delimiter='\\t')`. The script then deletes the raw download."""
    files: Files = {}
    train_rows = []
    for line in multinli_train.splitlines()[1:]:
        items = line.strip().split("\t")
        label = "contradiction" if items[2].strip() == "contradictory" else items[2].strip()
        train_rows.append([" ".join(items[0].strip().split(" ")), " ".join(items[1].strip().split(" ")), label])
    files["xnli/train-en.tsv"] = _csv_tsv(train_rows)
    for split, text in (("test", xnli_test), ("dev", xnli_dev)):
        by_lang: dict[str, list[list[str]]] = defaultdict(list)
        for line in text.splitlines()[1:]:
            items = line.strip().split("\t")
            label = "contradiction" if items[1].strip() == "contradictory" else items[1].strip()
            pair = [" ".join(items[6].strip().split(" ")), " ".join(items[7].strip().split(" "))]
            by_lang[items[0].strip()].append(pair if split == "test" else pair + [label])
        for lang, rows in by_lang.items():
            files[f"xnli/{split}-{lang}.tsv"] = _csv_tsv(rows)
    return files


# --------------------------------------------------------------------------------------
# PAWS-X (download_pawsx): x-final/<l>/{train,dev_2k,test_2k}.tsv -> pawsx/<split>-<l>.tsv

_PAWSX_FILES = {"train": "train", "test": "test_2k", "dev": "dev_2k"}


def _raw_pawsx(rng: random.Random, lang: str, n: int) -> str:
    """`x-final/<l>/<file>.tsv`: header `id sentence1 sentence2 label`, labels 0/1."""
    rows = [["id", "sentence1", "sentence2", "label"]]
    rows += [[str(i + 1), _quoted(rng, lang, i), _sentence(rng, lang), str(i % 2)] for i in range(n)]
    return _tsv_lines(rows)


def pawsx_preprocess(raw: dict[tuple[str, str], str]) -> Files:
    """utils_preprocess.pawsx_preprocess: for en,de,es,fr,ja,ko,zh and train (English
    only), test, dev: drop the header, keep sentence1, sentence2, label, and write
    `<split>-<l>.tsv` with `csv.writer(delimiter='\\t')`; test rows lose their label."""
    files: Files = {}
    for lang in ("en", "de", "es", "fr", "ja", "ko", "zh"):
        for split in ("train", "test", "dev"):
            if split == "train" and lang != "en":
                continue
            rows = []
            for line in raw[(lang, _PAWSX_FILES[split])].splitlines()[1:]:
                items = line.strip().split("\t")
                pair = [" ".join(items[1].strip().split(" ")), " ".join(items[2].strip().split(" "))]
                rows.append(pair if split == "test" else pair + [items[3]])
            files[f"pawsx/{split}-{lang}.tsv"] = _csv_tsv(rows)
    return files


# --------------------------------------------------------------------------------------
# PAN-X (download_panx): AmazonPhotos.zip/<l>.tar.gz/{train,dev,test} -> panx/<split>-<l>.tsv

_PANX_LANGUAGES = XTREME_R_LANGUAGES["panx"]
_PANX_ENTITY = (("B-PER", "I-PER"), ("B-ORG", "I-ORG"), ("B-LOC", "I-LOC"))


def _raw_panx(rng: random.Random, lang: str, n: int) -> str:
    """WikiANN (Rahimi et al.) file: `<l>:<token><TAB><tag>` per line, a blank line after
    every sentence (so the file ends with one). One token holds a colon of its own."""
    blocks = []
    for index in range(n):
        tokens = _words(rng, lang)
        tags = ["O"] * len(tokens)
        begin, inside = _PANX_ENTITY[index % 3]
        tags[0] = begin
        if len(tokens) > 2:
            tags[1] = inside
        if index == 0:
            tokens[-1] = "10:30"
        blocks.append("".join(f"{lang}:{token}\t{tag}\n" for token, tag in zip(tokens, tags)))
    return "".join(block + "\n" for block in blocks)


def panx_preprocess(raw: dict[str, str]) -> Files:
    """utils_preprocess.panx_preprocess: for every PAN-X language and train/test/dev,
    drop a final blank line, strip the `<l>:` prefix (up to the first colon) and write
    `token<TAB>tag` lines -- test files get the token alone -- with '\\n' for every other
    line; the script then deletes the raw files."""
    files: Files = {}
    for lang in _PANX_LANGUAGES:
        for split in ("train", "test", "dev"):
            lines = raw[f"{lang}-{split}"].splitlines(keepends=True)
            if lines[-1].strip() == "":
                lines = lines[:-1]
            out = []
            for line in lines:
                items = line.strip().split("\t")
                if len(items) == 2:
                    colon = items[0].find(":")
                    if colon != -1:
                        token = items[0][colon + 1:].strip()
                        out.append(f"{token}\n" if split == "test" else f"{token}\t{items[1].strip()}\n")
                else:
                    out.append("\n")
            files[f"panx/{split}-{lang}.tsv"] = "".join(out)
    return files


# --------------------------------------------------------------------------------------
# UD-POS (download_udpos): treebanks -> conllu_to_conll.py -> udpos/<split>-<l>.tsv

_UDPOS_LANGUAGES = XTREME_R_LANGUAGES["udpos"]
_UD_TEST_ONLY = ("th", "tl", "yo")
"""Languages whose (first) treebank is test-only in UD (PUD, TRG, YTB): no train/dev files."""
_UD_OPEN_TAGS = ("NOUN", "VERB", "ADJ", "ADV", "PRON", "PROPN", "NUM")
_FUSED: dict[str, tuple[str, str, str]] = {
    "de": ("zum", "zu", "dem"), "fr": ("du", "de", "le"), "es": ("del", "de", "el"),
    "it": ("della", "di", "la"), "pt": ("do", "de", "o"),
}
"""Fused forms (ADP + DET) of the Romance and German treebanks: fused form, subtokens."""
_POS_PRECEDENCE: dict[str, list[str]] = {
    "default": "VERB NOUN PROPN PRON ADJ NUM ADV INTJ AUX ADP DET PART CCONJ SCONJ X PUNCT ".split(" "),
    "es": "VERB AUX PRON ADP DET".split(" "),
    "fr": "VERB AUX PRON NOUN ADJ ADV ADP DET PART SCONJ CONJ".split(" "),
    "it": "VERB AUX ADV PRON ADP DET INTJ".split(" "),
}


@dataclass
class _UdToken:
    form: str
    lemma: str
    upos: str
    head: int
    deprel: str


def _ud_tokens(rng: random.Random, lang: str, withheld: bool) -> tuple[list[_UdToken], tuple[int, str] | None]:
    """One sentence: token 1 is the root, every other token depends on it; a fused
    ADP+DET pair at positions 2-3 where the language has one (returned as (2, form))."""
    words = _words(rng, lang, rng.randint(3, 5))
    if lang == "vi":
        words[1] = "sinh viên"  # Vietnamese UD words hold spaces; XTREME joins them
    if lang == "fa":
        words[1] = "می\u200cروم"  # zero-width non-joiner, which XTREME removes
    tokens = [_UdToken(w, w.lower(), _UD_OPEN_TAGS[i % len(_UD_OPEN_TAGS)], 0 if i == 0 else 1,
                       "root" if i == 0 else "dep") for i, w in enumerate(words)]
    fused = None
    if lang in _FUSED:
        form, adp, det = _FUSED[lang]
        tokens[1:1] = [_UdToken(adp, adp, "ADP", 1, "case"), _UdToken(det, det, "DET", 1, "det")]
        fused = (2, form)
    tokens.append(_UdToken(_FULL_STOP.get(lang, "."), _FULL_STOP.get(lang, "."), "PUNCT", 1, "punct"))
    if withheld:
        for token in tokens:
            token.form = token.lemma = "_"
    return tokens, fused


def _conllu_sentence(sent_id: str, tokens: list[_UdToken], fused: tuple[int, str] | None) -> str:
    lines = [f"# sent_id = {sent_id}", f"# text = {' '.join(t.form for t in tokens)}"]
    for index, token in enumerate(tokens, start=1):
        if fused and index == fused[0]:
            lines.append(f"{index}-{index + 1}\t{fused[1]}\t_\t_\t_\t_\t_\t_\t_\t_")
        lines.append(f"{index}\t{token.form}\t{token.lemma}\t{token.upos}\t_\t_\t{token.head}\t{token.deprel}\t_\t_")
    return "\n".join(lines) + "\n\n"


def _raw_conllu(rng: random.Random, lang: str, treebank: str, n: int, withheld: bool = False) -> str:
    """A UD `.conllu` file: comments, 10 columns, fused-token ranges, a blank line after
    every sentence. `withheld`: every form '_' (as UD ships Arabic-NYUAD)."""
    return "".join(_conllu_sentence(f"{treebank}-{i}", *_ud_tokens(rng, lang, withheld)) for i in range(n))


def _parse_conllu(text: str) -> list[tuple[dict[int, list[str]], dict[int, tuple[int, int, str]]]]:
    sentences = []
    rows: dict[int, list[str]] = {}
    multi: dict[int, tuple[int, int, str]] = {}
    for line in text.split("\n"):
        if not line:
            if rows or multi:
                sentences.append((rows, multi))
            rows, multi = {}, {}
        elif not line.startswith("#"):
            parts = line.split("\t")
            if "-" in parts[0]:
                first, last = map(int, parts[0].split("-"))
                multi[first] = (first, last, parts[1])
            elif "." not in parts[0]:
                rows[int(parts[0])] = parts
    return sentences


def _depth(rows: dict[int, list[str]], node: int) -> int:
    depth, head = 0, int(rows[node][6])
    while head != 0:
        depth, head = depth + 1, int(rows[head][6])
    return depth


def conllu_to_conll(text: str, lang: str) -> str:
    """third_party/ud-conversion-tools/conllu_to_conll.py with
    `--replace_subtokens_with_fused_forms --print_fused_forms` (lib/conll.py): per fused
    range, the subtoken nearest the root (ties: the language's POS precedence list) takes
    the fused form, the other subtokens are removed and their dependents re-attached, the
    tokens renumbered; the ranges are then gone, so nothing is printed for them. Output is
    CoNLL-2006 (id form lemma cpostag postag feats head deprel phead pdeprel), a blank
    line between sentences and one after the last."""
    precedence = _POS_PRECEDENCE.get(lang, _POS_PRECEDENCE["default"])
    blocks = []
    for rows, multi in _parse_conllu(text):
        removed: set[int] = set()
        for first, last, form in multi.values():
            span = list(range(first, last + 1))
            depths = [_depth(rows, node) for node in span]
            best = [node for node, d in zip(span, depths) if d == min(depths)]
            head = best[0] if len(best) == 1 else min(best, key=lambda node: precedence.index(rows[node][3]))
            rows[head][1] = form
            for node in span:
                if node != head:
                    removed.add(node)
                    for other in rows.values():
                        if int(other[6]) == node:
                            other[6] = str(head)
        kept = [node for node in sorted(rows) if node not in removed]
        renumber = {old: new for new, old in enumerate([0] + kept)}
        lines = []
        for node in kept:
            parts = rows[node]
            lines.append("\t".join([str(renumber[node]), parts[1], parts[2], parts[3], parts[4], parts[5],
                                    str(renumber[int(parts[6])]), parts[7], "_", "_"]) + "\n")
        blocks.append("".join(lines))
    return "\n".join(blocks) + "\n"


def udpos_preprocess(conll: dict[str, dict[str, str]]) -> Files:
    """utils_preprocess.udpos_preprocess on `conll/<l>/<treebank>-ud-<split>.conll`: per
    language, the treebanks' sentences concatenated per split (files sorted by name),
    sentences whose words are withheld ('_' for all but at most one word) dropped, spaces
    and zero-width non-joiners removed inside words, then `<split>-<l>.tsv` written for
    every split with sentences: `word<TAB>tag` lines (test: the word alone), a blank line
    between sentences and no blank line after the last."""
    files: Files = {}
    for lang in sorted(conll):
        data: dict[str, list[tuple[list[str], list[str]]]] = {"train": [], "dev": [], "test": []}
        for name in sorted(conll[lang]):
            split = next(s for s in ("train", "dev", "test") if s in name)
            data[split].extend(_read_conll(conll[lang][name]))
        for split, sentences in data.items():
            if sentences:
                files[f"udpos/{split}-{lang}.tsv"] = _udpos_tsv(split, sentences)
    return files


def _read_conll(text: str) -> list[tuple[list[str], list[str]]]:
    sentences = []
    words: list[str] = []
    tags: list[str] = []
    for line in text.splitlines(keepends=True):
        items = line.strip().split("\t")
        if len(items) != 10:
            empty = sum(word == "_" for word in words)
            if empty == 0 or empty < len(words) - 1:
                sentences.append((["".join(w.replace("\u200c", "").split(" ")) for w in words], tags))
            words, tags = [], []
        else:
            words.append(items[1].strip())
            tags.append(items[3].strip())
    return sentences


def _udpos_tsv(split: str, sentences: list[tuple[list[str], list[str]]]) -> str:
    out = []
    for sentence_index, (words, tags) in enumerate(sentences):
        for word_index, (word, tag) in enumerate(zip(words, tags)):
            last = sentence_index == len(sentences) - 1 and word_index == len(words) - 1
            out.append(word if split == "test" else f"{word}\t{tag}")
            out.append("" if last else "\n")
        out.append("\n")
    return "".join(out)


# --------------------------------------------------------------------------------------
# Tatoeba (download_tatoeba): LASER data/tatoeba/v1 -> tatoeba/<l>-en.{<l>,en}


def tatoeba_preprocess(raw: dict[str, str]) -> Files:
    """utils_preprocess.tatoeba_preprocess: for each of its 41 languages, copy
    `tatoeba.<iso3>-eng.<iso3>` to `<l>-en.<l>` and write the English side stripped and
    SORTED to `<l>-en.en` (hiding the alignment, i.e. the gold); the LASER files are
    deleted with the temporary folder."""
    files: Files = {}
    for lang, iso3 in TATOEBA_ISO3.items():
        files[f"tatoeba/{lang}-en.{lang}"] = raw[f"tatoeba.{iso3}-eng.{iso3}"]
        english = [line.strip() for line in raw[f"tatoeba.{iso3}-eng.eng"].splitlines(keepends=True)]
        files[f"tatoeba/{lang}-en.en"] = "".join(f"{text}\n" for text in sorted(english))
    return files


def _raw_tatoeba(rng: random.Random, n: int) -> Files:
    """LASER's `data/tatoeba/v1/tatoeba.<iso3>-eng.{<iso3>,eng}`: line-aligned sides."""
    files: Files = {}
    for lang, iso3 in TATOEBA_ISO3.items():
        for side, side_lang in ((iso3, lang), ("eng", "en")):
            files[f"tatoeba.{iso3}-eng.{side}"] = "".join(f"{_sentence(rng, side_lang)}\n" for _ in range(n))
    return files


# --------------------------------------------------------------------------------------
# BUCC 2018 (download_bucc18): no Python step, only renames and deletions

_BUCC_LANGUAGES = XTREME_LANGUAGES["bucc2018"]


def _raw_bucc(rng: random.Random, lang: str, stem: str, n: int) -> Files:
    """`bucc2018/<l>-en/<l>-en.<stem>.{<l>,en,gold}`: `<id><TAB><sentence>` lines and
    gold `<l id><TAB><en id>` for the parallel half."""
    foreign = [(f"{lang}-{i + 1:09d}", _sentence(rng, lang)) for i in range(n)]
    english = [(f"en-{i + 1:09d}", _sentence(rng, "en")) for i in range(n)]
    gold = [(foreign[i][0], english[(i * 3) % n][0]) for i in range(0, n, 2)]
    prefix = f"bucc2018/{lang}-en/{lang}-en.{stem}"
    return {f"{prefix}.{lang}": _tsv_lines(foreign), f"{prefix}.en": _tsv_lines(english),
            f"{prefix}.gold": _tsv_lines(gold)}


def download_bucc18(raw: Files) -> Files:
    """download_data.sh download_bucc18: move `bucc2018/*/*` up, rename `training` ->
    `test` and `sample` -> `dev`, then `rm -rf bucc2018/*test.gold` and the language
    folders: the test gold is gone."""
    files: Files = {}
    for path, text in raw.items():
        name = path.split("/")[-1].replace("training", "test").replace("sample", "dev")
        if not name.endswith("test.gold"):
            files[f"bucc2018/{name}"] = text
    return files


# --------------------------------------------------------------------------------------
# SQuAD-format QA: SQuAD v1.1, XQuAD, MLQA, TyDiQA-GoldP


@dataclass(frozen=True)
class _Question:
    qid: str
    question: str
    answer_start: int
    answer: str


def _paragraph(rng: random.Random, lang: str, ids: Sequence[str]) -> tuple[str, list[tuple[int, int]],
                                                                             list[_Question]]:
    """A context of len(ids) + 1 sentences (at least 2) and one question per id whose
    answer is a word of its own sentence; returns (context, sentence spans, questions)."""
    sentences = [_words(rng, lang) for _ in range(max(len(ids) + 1, 2))]
    separator = "" if lang in _UNSPACED else " "
    context, spans, starts = "", [], []
    for words in sentences:
        if context:
            context += " "
        begin = len(context)
        offsets = []
        for word in words:
            offsets.append(len(context))
            context += word + separator
        context = context.rstrip(" ") + _FULL_STOP.get(lang, ".")
        spans.append((begin, len(context)))
        starts.append(offsets)
    questions = []
    for k, qid in enumerate(ids):
        pick = rng.randrange(len(sentences[k]))
        questions.append(_Question(qid, _join(_words(rng, lang, 3), lang) + "?", starts[k][pick], sentences[k][pick]))
    return context, spans, questions


def _squad_json(paragraphs: list[tuple[str, list[_Question]]], title: str, version: str) -> str:
    """SQuAD v1.1 json as the releases ship it (`json.dumps` defaults: ASCII escapes)."""
    def qa(q: _Question) -> dict[str, Any]:
        return {"answers": [{"answer_start": q.answer_start, "text": q.answer}], "question": q.question, "id": q.qid}

    data = [{"title": title, "paragraphs": [{"context": c, "qas": [qa(q) for q in qs]} for c, qs in paragraphs]}]
    return json.dumps({"data": data, "version": version})


def _raw_squad_file(rng: random.Random, lang: str, n: int, prefix: str, title: str, version: str = "1.1") -> str:
    """n questions, two per paragraph."""
    paragraphs = []
    for p in range(0, n, 2):
        ids = [f"{prefix}{p + k:06d}" for k in range(min(2, n - p))]
        context, _, questions = _paragraph(rng, lang, ids)
        paragraphs.append((context, questions))
    return _squad_json(paragraphs, title, version)


def remove_qa_test_annotations(text: str) -> str:
    """utils_preprocess.remove_qa_test_annotations on one file: every question becomes
    its own one-question paragraph (no title) whose answers are `[{'answer_start': 0,
    'text': ''}]`, rewritten with `json.dump` defaults."""
    data = json.loads(text)
    new_data = []
    for doc in data["data"]:
        for par in doc["paragraphs"]:
            for qa in par["qas"]:
                for answer in qa["answers"]:
                    assert par["context"][answer["answer_start"]:answer["answer_start"] + len(answer["text"])] \
                        == answer["text"]
                new_data.append({"paragraphs": [{"context": par["context"], "qas": [
                    {"answers": [{"answer_start": 0, "text": ""}], "question": qa["question"], "id": qa["id"]}]}]})
    return json.dumps({"data": new_data, "version": data["version"]})


def xquad_preprocess(raw: Files) -> Files:
    """utils_preprocess.xquad_preprocess: `remove_qa_test_annotations` on every file of
    `xquad/` (the script fetches xquad.<l>.json for ar de el en es hi ru th tr vi zh)."""
    return {path: remove_qa_test_annotations(text) for path, text in raw.items()}


def mlqa_preprocess(raw: Files) -> Files:
    """utils_preprocess.mlqa_preprocess: `remove_qa_test_annotations` on every file of
    `mlqa/MLQA_V1/test` only; `MLQA_V1/dev` keeps its answers."""
    return {path: remove_qa_test_annotations(text) if "/test/" in path else text for path, text in raw.items()}


_TYDIQA_LANGUAGES = tuple(TYDIQA_LANGUAGE_NAMES)


def tydiqa_preprocess(train: str, dev: Files) -> Files:
    """utils_preprocess.tydiqa_preprocess, then the script's `mv`: the mixed training
    file split into `tydiqa-goldp-v1.1-train/tydiqa.goldp.<iso>.train.json` (one
    paragraph per question, the id cut to the part after its last '-'); the dev files
    renamed `tydiqa-goldp-dev-<name>.json` -> `tydiqa.goldp.<iso>.dev.json` and blanked by
    `remove_qa_test_annotations`; the original training file moved beside the splits."""
    iso_of = {name: iso for iso, name in TYDIQA_LANGUAGE_NAMES.items()}
    data = json.loads(train)
    by_lang: dict[str, list[Any]] = defaultdict(list)
    for doc in data["data"]:
        for par in doc["paragraphs"]:
            for qa in par["qas"]:
                by_lang[qa["id"].split("-")[0]].append({"paragraphs": [{"context": par["context"], "qas": [
                    {"answers": qa["answers"], "question": qa["question"], "id": qa["id"].split("-")[-1]}]}]})
    out = "tydiqa/tydiqa-goldp-v1.1-train"
    files: Files = {f"{out}/tydiqa.goldp.{iso_of[name]}.train.json": json.dumps({"data": docs,
                                                                                   "version": data["version"]})
                    for name, docs in by_lang.items()}
    files[f"{out}/tydiqa-goldp-v1.1-train.json"] = train
    for name, iso in ((name, iso) for iso, name in TYDIQA_LANGUAGE_NAMES.items()):
        text = dev[f"tydiqa/tydiqa-goldp-v1.1-dev/tydiqa-goldp-dev-{name}.json"]
        files[f"tydiqa/tydiqa-goldp-v1.1-dev/tydiqa.goldp.{iso}.dev.json"] = remove_qa_test_annotations(text)
    return files


def _tydiqa_ids(rng: random.Random, name: str, n: int) -> list[str]:
    return [f"{name}-{rng.randrange(10**18, 10**19)}-{k % 2}" for k in range(n)]


def _raw_tydiqa(rng: random.Random, n: int) -> tuple[str, Files]:
    """TyDiQA-GoldP v1.1: one training json mixing all languages (ids
    `<language name>-<hash>-<n>`), one dev json per language."""
    version = "TyDiQA-GoldP-1.1-for-SQuAD-1.1"
    paragraphs = []
    for lang, name in TYDIQA_LANGUAGE_NAMES.items():
        ids = _tydiqa_ids(rng, name, n)
        for p in range(0, n, 2):
            context, _, questions = _paragraph(rng, lang, ids[p:p + 2])
            paragraphs.append((context, questions))
    train = _squad_json(paragraphs, "tydiqa", version)
    dev = {}
    for lang, name in TYDIQA_LANGUAGE_NAMES.items():
        ids = _tydiqa_ids(rng, name, n)
        docs = [_paragraph(rng, lang, ids[p:p + 2]) for p in range(0, n, 2)]
        dev[f"tydiqa/tydiqa-goldp-v1.1-dev/tydiqa-goldp-dev-{name}.json"] = _squad_json(
            [(context, questions) for context, _, questions in docs], name, version)
    return train, dev


# --------------------------------------------------------------------------------------
# XCOPA (download_xcopa) and Social IQa (download_siqa)


def _copa_record(rng: random.Random, lang: str, index: int, labelled: bool, xcopa: bool) -> dict[str, Any]:
    record: dict[str, Any] = {"premise": _sentence(rng, lang), "choice1": _sentence(rng, lang),
                              "choice2": _sentence(rng, lang), "question": ("cause", "effect")[index % 2]}
    if labelled:
        record["label"] = (index // 2) % 2
    record["idx"] = index + 1 if xcopa else index
    if xcopa:
        record["changed"] = False
    return record


def xcopa_preprocess(files: Files) -> Files:
    """utils_preprocess.xcopa_preprocess: every `test*` file of `xcopa/` rewritten with
    each example's label set to 0 ('a label is still required by the dataset format'),
    `json.dumps` defaults; COPA's `test-en.jsonl`, which has no label, gains one."""
    out = dict(files)
    for path, text in files.items():
        if path.split("/")[-1].startswith("test"):
            examples = []
            for row in text.splitlines(keepends=True):
                example = json.loads(row)
                example["label"] = 0
                examples.append(example)
            out[path] = _json_lines(examples, ensure_ascii=True)
    return out


def _raw_xcopa(rng: random.Random, n: int) -> Files:
    """SuperGLUE COPA.zip moved to `{train,val,test}-en.jsonl` (test unlabelled), and
    XCOPA's `val.<l>.jsonl`/`test.<l>.jsonl` renamed `val-<l>`/`test-<l>` (raw UTF-8)."""
    files: Files = {}
    for split in ("train", "val", "test"):
        records = [_copa_record(rng, "en", i, split != "test", xcopa=False) for i in range(n)]
        files[f"xcopa/{split}-en.jsonl"] = _json_lines(records, ensure_ascii=True)
    for lang in XTREME_R_LANGUAGES["xcopa"]:
        for split in ("val", "test"):
            records = [_copa_record(rng, lang, i, True, xcopa=True) for i in range(n)]
            files[f"xcopa/{split}-{lang}.jsonl"] = _json_lines(records, ensure_ascii=False)
    return files


def _raw_siqa(rng: random.Random, n: int) -> Files:
    """socialIQa_v1.4.tgz extracted into `siqa/`: one jsonl per split with `correct`."""
    files: Files = {}
    for stem in ("trn", "dev"):
        records = [{"context": _sentence(rng, "en"), "question": f"What will {_word(rng, 'en')} want?",
                    "answerA": _word(rng, "en"), "answerB": _word(rng, "en"), "answerC": _word(rng, "en"),
                    "correct": "ABC"[i % 3]} for i in range(n)]
        files[f"siqa/socialIQa_v1.4_{stem}.jsonl"] = _json_lines(records, ensure_ascii=False)
    return files


# --------------------------------------------------------------------------------------
# Mewsli-X (download_mewslix)

_MEWSLIX_LANGUAGES = XTREME_R_LANGUAGES["mewslix"]


def _spans(parts: Sequence[str]) -> tuple[str, list[dict[str, int]]]:
    text, spans = "", []
    for part in parts:
        if text:
            text += " "
        spans.append({"start": len(text), "end": len(text) + len(part)})
        text += part
    return text, spans


def _entity(rng: random.Random, index: int) -> dict[str, Any]:
    """`utils_mewslix.Entity.to_json` key order."""
    description, spans = _spans([_sentence(rng, "en"), _sentence(rng, "fr")])
    return {"entity_id": f"Q{1000 + index}", "title": _word(rng, "en").title(), "description": description,
            "description_language": "en", "description_url": f"https://en.wikipedia.org/wiki/Q{1000 + index}",
            "sentence_spans": spans}


def _context(rng: random.Random, lang: str, doc: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """`utils_mewslix.Context.to_json` and the TextSpan of a mention (the first word of
    its second sentence)."""
    second = _sentence(rng, lang)
    text, spans = _spans([_sentence(rng, lang), second])
    start = spans[1]["start"]
    word = second.split(" ")[0] if lang not in _UNSPACED else second[:2]
    context = {"document_title": doc, "document_url": f"https://{lang}.wikinews.org/wiki/{doc}",
               "document_id": doc, "language": lang, "text": text, "sentence_spans": spans}
    return context, {"start": start, "end": start + len(word), "text": word}


def _hex(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


def _raw_mewslix(rng: random.Random, n: int, entities: list[dict[str, Any]]) -> Files:
    """The Mewsli-X builder's output moved to `mewslix/`: `candidate_set_entities.jsonl`,
    `wikipedia_pairs-{train,dev}.jsonl` (MentionEntityPair) and
    `wikinews_mentions-{dev,test}.jsonl` (ContextualMentions, two mentions a context),
    all `ensure_ascii=False` as `utils_mewslix.to_jsonl` writes."""
    files: Files = {"mewslix/candidate_set_entities.jsonl": _json_lines(entities, ensure_ascii=False)}
    for split in ("train", "dev"):
        pairs = []
        for i in range(n):
            context, span = _context(rng, "en", f"Q{900 + i}")
            entity = entities[(i * 3) % len(entities)]
            mention = {"example_id": _hex(rng), "mention_span": span, "entity_id": entity["entity_id"]}
            pairs.append({"contextual_mention": {"context": context, "mention": mention}, "entity": entity})
        files[f"mewslix/wikipedia_pairs-{split}.jsonl"] = _json_lines(pairs, ensure_ascii=False)
    for split in ("dev", "test"):
        records = []
        for lang in _MEWSLIX_LANGUAGES:
            for c in range(0, n, 2):
                context, span = _context(rng, lang, f"{lang}-{split}-{c}")
                mentions = [{"example_id": _hex(rng), "mention_span": span,
                             "entity_id": entities[(c + m) % len(entities)]["entity_id"]} for m in range(min(2, n - c))]
                records.append({"context": context, "mentions": mentions})
        files[f"mewslix/wikinews_mentions-{split}.jsonl"] = _json_lines(records, ensure_ascii=False)
    return files


def mewslix_preprocess(raw: Files) -> Files:
    """utils_preprocess.mewslix_preprocess, then the script's `rm`: each of
    `wikinews_mentions-{dev,test}.jsonl` sharded into `wikinews_mentions/<split>-<l>.jsonl`
    and `wikinews_labels/<split>-<l>.json` ({example_id: [entity_id]}) for the 11
    languages, `json.dumps` defaults; test entity ids set to '' first, so the test labels
    files hold [''] too; the unsharded files are deleted."""
    files = {path: text for path, text in raw.items() if "wikinews_mentions-" not in path}
    for split in ("dev", "test"):
        inputs: dict[str, list[Any]] = defaultdict(list)
        labels: dict[str, dict[str, list[str]]] = defaultdict(dict)
        for row in raw[f"mewslix/wikinews_mentions-{split}.jsonl"].splitlines():
            example = json.loads(row)
            language = example["context"]["language"]
            for mention in example["mentions"]:
                if split == "test":
                    mention["entity_id"] = ""
                labels[language][mention["example_id"]] = [mention["entity_id"]]
            inputs[language].append({"context": example["context"], "mentions": example["mentions"]})
        for lang in _MEWSLIX_LANGUAGES:
            files[f"mewslix/wikinews_mentions/{split}-{lang}.jsonl"] = _json_lines(inputs[lang], ensure_ascii=True)
            files[f"mewslix/wikinews_labels/{split}-{lang}.json"] = json.dumps(labels[lang])
    return files


# --------------------------------------------------------------------------------------
# LAReQA (download_lareqa): the lareqa repository's xquad-r/<l>.json, unchanged

_LAREQA_LANGUAGES = XTREME_R_LANGUAGES["lareqa"]


def _raw_xquad_r(rng: random.Random, n: int) -> tuple[Files, dict[str, int]]:
    """XQuAD-R: SQuAD json with `sentence_breaks` and `sentences`, keys sorted, the same
    question ids in every language (parallel); returns the files and each language's
    number of candidate sentences."""
    files: Files = {}
    sentences_of: dict[str, int] = {}
    for lang in _LAREQA_LANGUAGES:
        paragraphs = []
        for p in range(0, n, 2):
            ids = [f"56beb4343aeaaa14008c{p + k:04x}" for k in range(min(2, n - p))]
            context, spans, questions = _paragraph(rng, lang, ids)
            paragraphs.append({
                "context": context, "sentence_breaks": [list(span) for span in spans],
                "sentences": [context[b:e] for b, e in spans],
                "qas": [{"answers": [{"answer_start": q.answer_start, "text": q.answer}], "id": q.qid,
                         "question": q.question} for q in questions]})
            sentences_of[lang] = sentences_of.get(lang, 0) + len(spans)
        files[f"lareqa/xquad-r/{lang}.json"] = json.dumps(
            {"data": [{"paragraphs": paragraphs, "title": "Super_Bowl_50"}], "version": "1.1"}, sort_keys=True)
    return files, sentences_of


# --------------------------------------------------------------------------------------
# the tree


def _download(per_language: int, seed: int) -> tuple[Files, Files, dict[str, Any]]:
    """Every file of the tree (official output, then the manual extras) and the facts
    the expectations need (sizes the generator chose)."""
    n = per_language
    rng = random.Random(seed)
    files: Files = {}
    files.update(xnli_preprocess(_raw_multinli(rng, n), _raw_xnli(rng, "dev", n), _raw_xnli(rng, "test", n)))
    files.update(pawsx_preprocess({(lang, stem): _raw_pawsx(rng, lang, n)
                                   for lang in ("en", "de", "es", "fr", "ja", "ko", "zh")
                                   for stem in _PAWSX_FILES.values()}))
    files.update(tatoeba_preprocess(_raw_tatoeba(rng, n)))
    bucc: Files = {}
    for lang in _BUCC_LANGUAGES:
        for stem in ("training", "sample"):
            bucc.update(_raw_bucc(rng, lang, stem, n))
    files.update(download_bucc18(bucc))
    files["squad/train-v1.1.json"] = _raw_squad_file(rng, "en", n, "5733be284776f4190066", "University")
    files["squad/dev-v1.1.json"] = _raw_squad_file(rng, "en", n, "56be4db0acb8001400a5", "Super_Bowl_50")
    files.update(xquad_preprocess({f"xquad/xquad.{lang}.json": _raw_squad_file(rng, lang, n, "56beb4343aeaaa14008c",
                                                                               "Super_Bowl_50")
                                   for lang in XTREME_LANGUAGES["xquad"]}))
    mlqa = {f"mlqa/MLQA_V1/{split}/{split}-context-{c}-question-{q}.json":
            _raw_squad_file(rng, c, n, f"{split}{c}{q}", "mlqa", version="1.0")
            for split in ("dev", "test") for c in XTREME_LANGUAGES["mlqa"] for q in XTREME_LANGUAGES["mlqa"]}
    files.update(mlqa_preprocess(mlqa))
    files.update(tydiqa_preprocess(*_raw_tydiqa(rng, n)))
    files.update(udpos_preprocess(_udpos_conll(rng, n)))
    files.update(panx_preprocess({f"{lang}-{split}": _raw_panx(rng, lang, n)
                                  for lang in _PANX_LANGUAGES for split in ("train", "dev", "test")}))
    files.update(xcopa_preprocess(_raw_xcopa(rng, n)))
    files.update(_raw_siqa(rng, n))
    entities = [_entity(rng, i) for i in range(2 * n + 1)]
    files.update(mewslix_preprocess(_raw_mewslix(rng, n, entities)))
    xquad_r, sentences_of = _raw_xquad_r(rng, n)
    files.update(xquad_r)
    manual = {"xquad/xquad.ro.json": _raw_squad_file(rng, "ro", n, "56beb4343aeaaa14008c", "Super_Bowl_50")}
    facts = {"entities": len(entities), "lareqa_sentences": sum(sentences_of.values())}
    return files, manual, facts


def _udpos_conll(rng: random.Random, n: int) -> dict[str, dict[str, str]]:
    """download_treebank: every treebank of a UD-POS language converted to
    `conll/<l>/<treebank>-ud-<split>.conll` (XTREME languages from UD 2.5, XTREME-R's
    new ones from 2.7). One treebank per language (test-only for th, tl, yo) and, for
    Arabic, NYUAD with its withheld words."""
    conll: dict[str, dict[str, str]] = {}
    for lang in _UDPOS_LANGUAGES:
        treebank = next(name for name in UDPOS_TREEBANKS[lang] if name != "ar_nyuad")
        splits = ("test",) if lang in _UD_TEST_ONLY else ("train", "dev", "test")
        conll[lang] = {f"{treebank}-ud-{split}.conll": conllu_to_conll(_raw_conllu(rng, lang, treebank, n), lang)
                       for split in splits}
        if lang == "ar":
            for split in splits:
                conll[lang][f"ar_nyuad-ud-{split}.conll"] = conllu_to_conll(
                    _raw_conllu(rng, lang, "ar_nyuad", 1, withheld=True), lang)
    return conll


def _expect(task: str, split: str, lang: str, n: int, facts: dict[str, Any]) -> Expected:
    """What the official layout holds for one registered split, and why (per task)."""
    if task in ("xnli", "pawsx", "panx", "udpos"):
        # xnli/pawsx: test rows written without their label; panx: test files hold the
        # token alone; udpos: test files hold the word alone (utils_preprocess).
        return Expected((f"{task}/{split}-{lang}.tsv",), n, split == "test", f"{task}_preprocess drops test labels")
    if task in ("xquad", "mlqa") and split != "test" or task == "squad":
        # SQuAD v1.1 train/dev are downloaded raw, answers kept; squad's test is its dev.
        path = "squad/train-v1.1.json" if split == "train" else "squad/dev-v1.1.json"
        return Expected((path,), n, False, "download_squad: raw SQuAD v1.1")
    if task == "xquad":
        # xquad_preprocess blanks every file the script fetched; ro is added by hand after
        # the script ran (it fetches no ro), so its answers stay.
        return Expected((f"xquad/xquad.{lang}.json",), n, lang != "ro",
                        "xquad_preprocess blanks answers" if lang != "ro" else "fetched by hand: raw release")
    if task == "mlqa":
        # mlqa_preprocess blanks every file of MLQA_V1/test.
        return Expected((f"mlqa/MLQA_V1/test/test-context-{lang}-question-{lang}.json",), n, True,
                        "mlqa_preprocess blanks test answers")
    if task == "tydiqa":
        # tydiqa_preprocess blanks every dev file, English included: the test split is
        # predict-only, and the English dev split must come out of English train.
        if split == "test":
            return Expected((f"tydiqa/tydiqa-goldp-v1.1-dev/tydiqa.goldp.{lang}.dev.json",), n, True,
                            "tydiqa_preprocess blanks the dev files")
        return Expected(("tydiqa/tydiqa-goldp-v1.1-train/tydiqa.goldp.en.train.json",), None, False,
                        "English dev blanked: held out of English train")
    if task == "xcopa":
        # xcopa_preprocess sets every test label to 0; COPA train/val keep theirs.
        stem = {"train": "train", "dev": "val", "test": "test"}[split]
        return Expected((f"xcopa/{stem}-{'en' if split != 'test' else lang}.jsonl",), n, split == "test",
                        "xcopa_preprocess sets test labels to 0")
    if task == "socialiqa":
        path = "siqa/socialIQa_v1.4_trn.jsonl" if split == "train" else "siqa/socialIQa_v1.4_dev.jsonl"
        return Expected((path,), n, False, "download_siqa: raw release with `correct`")
    if task == "tatoeba":
        # tatoeba_preprocess sorts the English side: the alignment (gold) is gone.
        return Expected((f"tatoeba/{lang}-en.{lang}", f"tatoeba/{lang}-en.en"), 2 * n, True,
                        "tatoeba_preprocess sorts the English side")
    if task == "bucc2018":
        # download_bucc18 deletes *test.gold; the dev (sample) gold stays.
        stem = f"bucc2018/{lang}-en.{split}"
        return Expected((f"{stem}.{lang}", f"{stem}.en"), 2 * n, split == "test", "download_bucc18 rm *test.gold")
    if task == "mewslix":
        # mewslix_preprocess blanks test entity ids (mentions and labels files).
        if split == "test":
            paths = (f"mewslix/wikinews_mentions/test-{lang}.jsonl", f"mewslix/wikinews_labels/test-{lang}.json",
                     "mewslix/candidate_set_entities.jsonl")
            return Expected(paths, n + facts["entities"], True,
                            "mewslix_preprocess blanks test entity ids")
        return Expected((f"mewslix/wikipedia_pairs-{split}.jsonl",), n, False, "raw Mewsli-X pairs")
    if task == "lareqa":
        # download_lareqa unzips the lareqa repository unchanged: gold kept.
        if split == "test":
            return Expected(tuple(f"lareqa/xquad-r/{other}.json" for other in _LAREQA_LANGUAGES),
                            n + facts["lareqa_sentences"], False, "download_lareqa: raw XQuAD-R")
        path = "squad/train-v1.1.json" if split == "train" else "squad/dev-v1.1.json"
        return Expected((path,), n, False, "SQuAD v1.1 as retrieval pairs")
    raise KeyError(task)


def write_official_tree(root: Path, *, per_language: int = 4, seed: int = 0) -> OfficialTree:
    """Write the official `data_dir` under `root` (see the module docstring); returns
    what was written and what each registered split must load as."""
    if per_language < 2:
        raise ValueError("per_language must be at least 2 (BUCC gold and QA paragraphs pair examples)")
    root = Path(root)
    files, manual, facts = _download(per_language, seed)
    for path, text in sorted({**files, **manual}.items()):
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(text.encode("utf-8"))
    tree = OfficialTree(root=root, files=tuple(sorted({**files, **manual})), manual=tuple(sorted(manual)),
                        holdout_pool={"tydiqa": per_language})
    for name in TREE_TASKS:
        task = get_task(name)
        for split in task.splits:
            for lang in task.split_languages(split):
                tree.expected[(name, split, lang)] = _expect(name, split, lang, per_language, facts)
    return tree
