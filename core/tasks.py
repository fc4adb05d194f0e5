"""The task registry: every task xstilts knows, as small declarative records.

This module is deliberately free of torch and transformers so that the launcher can
validate a spec (unknown task names, roles) on a login node in milliseconds. What a task
*does* (loading, heads, metrics) lives in the job modules that read these records:
`xstilts.jobs.tasks.sources` turns a record into canonical examples (from the Hugging Face hub
or from local files), `xstilts.core.metrics` implements the metric named here.

Targets are the XTREME (Hu et al. 2020) and XTREME-R (Ruder et al. 2021) tasks with the
official language lists of `xstilts.core.languages`; intermediate tasks are the English
tasks of the X-STILTs study (Phang et al. 2020). Each record says where every split
comes from (a split may concatenate several sources, e.g. ANLI+), which languages each
split has (zero-shot: training and model selection in English, testing in every
language), and which English data the official recipe trains the target on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from xstilts.core.captions import CAPTION_DATASETS
from xstilts.core.languages import XTREME_GROUPS, XTREME_LANGUAGES, XTREME_R_GROUPS, XTREME_R_LANGUAGES

TaskKind = Literal[
    "classification", "tagging", "multiple_choice", "span_qa", "retrieval", "dual_encoder", "image_text", "mixture",
]
"""What a task asks of its head. `mixture` is never registered: the training stage makes
it for an intermediate mixture of member tasks (`xstilts.jobs.heads.mixture`)."""
Modality = Literal["text", "multimodal"]
Role = Literal["intermediate", "target"]
SourceKind = Literal["synthetic", "hf", "local", "captions"]
Objective = Literal["itm", "contrastive", "mcm"]
ImageUse = Literal["paired", "none", "shuffled"]

TASK_KINDS: tuple[str, ...] = (
    "classification", "tagging", "multiple_choice", "span_qa", "retrieval", "dual_encoder", "image_text",
)
METRICS: tuple[str, ...] = (
    "accuracy", "token_accuracy", "seqeval_f1", "squad_em_f1", "squad_v2_em_f1", "mlqa_em_f1", "bucc_f1", "map_at_20",
)
"""Metric names a task may use; `xstilts.core.metrics` implements each (official XTREME scoring)."""
SPLITS: tuple[str, ...] = ("train", "dev", "test")

# Synthetic languages of the demo benchmark. ISO 639 reserves qaa-qtz for local use, so
# these codes can never be mistaken for a real language.
SYNTHETIC_LANGUAGES: tuple[str, ...] = ("en", "qaa", "qab", "qac")

XNLI_LANGUAGES = XTREME_R_LANGUAGES["xnli"]
PAWSX_LANGUAGES = XTREME_LANGUAGES["pawsx"]


@dataclass(frozen=True)
class DataSource:
    """Where (part of) a split comes from.

    `kind="synthetic"`: the deterministic demo generator (`xstilts.jobs.synthetic`).
    `kind="hf"`: a Hugging Face dataset, `datasets.load_dataset(name, config, split=...,
    revision=...)`; `config` may contain `{lang}` (the task's language code), and
    `lang_configs` overrides it per language with one or more configs to concatenate
    (UD treebanks, Tatoeba's ISO 639-3 names).
    `kind="local"`: no hub copy exists; only `data_dir` files can provide it.
    `kind="captions"`: an image-caption dataset of `xstilts.jobs.multimodal.captions` (hub,
    local folder or generated), named by `name`.

    `row_format` names the converter in `xstilts.jobs.tasks.sources` that turns this source's
    rows into canonical examples. `label_names[i]` is the task label of the hub's integer
    label `i` (used when a row carries a bare integer). `split` pins the hub split when
    the source serves one task split (`Task.split_sources`); otherwise the task split
    maps through `train_split`/`dev_split`/`test_split`. `languages` restricts a source
    to some languages (empty: all), `tag` prefixes example ids when a split concatenates
    several sources, so ids stay unique.
    """

    kind: SourceKind
    name: str
    config: str | None = None
    train_split: str = "train"
    dev_split: str = "validation"
    test_split: str = "test"
    # Column names in the source; classification: text, text_b, label; tagging: tokens, tags.
    columns: dict[str, str] = field(default_factory=dict)
    split: str | None = None
    row_format: str = ""
    label_names: tuple[str, ...] = ()
    revision: str | None = None
    lang_configs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    languages: tuple[str, ...] = ()
    tag: str = ""

    def hub_split(self, split: str) -> str:
        """The hub's split name that serves the task split `split` (train/dev/test)."""
        if self.split is not None:
            return self.split
        return {"train": self.train_split, "dev": self.dev_split, "test": self.test_split}[split]

    def configs_for(self, lang: str) -> tuple[str | None, ...]:
        """Hub configs to concatenate for `lang` (one `None` when the dataset has none)."""
        if lang in self.lang_configs:
            return self.lang_configs[lang]
        return (self.config.format(lang=lang) if self.config else None,)

    def serves(self, lang: str) -> bool:
        return not self.languages or lang in self.languages


@dataclass(frozen=True)
class Task:
    """One task: enough to load every split, build its head and score it.

    `source` is the main source (compatibility with callers that read one source);
    `split_sources` overrides it per split ("train"/"dev"/"test") with one or more
    sources that are concatenated. `languages` are the evaluation (test) languages,
    exactly the official list; `train_languages`/`dev_languages` are those of the other
    splits (empty: the task has no such split, e.g. Tatoeba is test-only).
    `retrieval_layer` maps an encoder depth to the transformer layer (0-based, embedding
    output excluded: `hidden_states[layer + 1]` in transformers) whose mean-pooled
    states XTREME uses for zero-shot retrieval; see `retrieval_layer_for`.
    """

    name: str
    kind: TaskKind
    source: DataSource
    languages: tuple[str, ...]
    labels: tuple[str, ...]
    metric: str
    roles: tuple[Role, ...]
    modality: Modality = "text"
    english_training_data: str = ""
    description: str = ""
    split_sources: Mapping[str, tuple[DataSource, ...]] = field(default_factory=dict)
    train_languages: tuple[str, ...] = ("en",)
    dev_languages: tuple[str, ...] = ("en",)
    suites: tuple[str, ...] = ()
    group: str | None = None
    train_first: str | None = None
    retrieval_layer: tuple[tuple[int, int], ...] = ()
    objective: Objective | None = None
    """Image-caption tasks: image-text matching, contrastive alignment or masked caption
    modelling (`xstilts.jobs.heads.image_text`)."""
    images: ImageUse = "paired"
    """Image-caption tasks: each caption with its own image, with no image (a text-only
    control), or with images shuffled across captions (a control that keeps the input
    form but removes what the image says about the caption)."""
    control_of: str | None = None
    """A control task names the multimodal task it controls for (the analysis pairs them)."""

    @property
    def eval_languages(self) -> tuple[str, ...]:
        """Languages evaluated zero-shot (the official list, as XTREME reports it)."""
        return self.languages

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits this task has, in train/dev/test order."""
        return tuple(split for split in SPLITS if self.split_languages(split))

    @property
    def is_pair(self) -> bool:
        """Classification over sentence pairs (NLI, paraphrase) rather than single texts."""
        return "text_b" in self.source.columns

    def split_languages(self, split: str) -> tuple[str, ...]:
        """Languages `split` exists in (empty if the task has no such split)."""
        if split == "test":
            return self.languages
        if split == "train":
            return self.train_languages
        if split == "dev":
            return self.dev_languages
        raise ValueError(f"unknown split '{split}'; valid splits: {', '.join(SPLITS)}")

    def sources_for(self, split: str, lang: str) -> tuple[DataSource, ...]:
        """The sources whose rows make up `split` in `lang`, concatenated in this order."""
        sources = self.split_sources.get(split, (self.source,))
        return tuple(source for source in sources if source.serves(lang))

    def retrieval_layer_for(self, num_layers: int) -> int | None:
        """Layer index for an encoder of `num_layers` layers: the official one where
        XTREME fixed it (12 and 24 layers), else the same relative depth."""
        if not self.retrieval_layer:
            return None
        table = dict(self.retrieval_layer)
        if num_layers in table:
            return table[num_layers]
        depth, layer = min(table.items())
        return max(0, min(num_layers - 1, round(layer * num_layers / depth)))


POS_TAGS = ("DET", "ADJ", "NOUN", "VERB", "ADP", "PRON", "ADV", "CONJ")
CHUNK_TAGS = ("O", "B-NP", "I-NP", "B-VP", "I-VP", "B-PP", "I-PP")
RATING_LABELS = ("negative", "neutral", "positive")
UDPOS_TAGS = (
    "ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN",
    "PUNCT", "SCONJ", "SYM", "VERB", "X",
)
PANX_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")
NLI_LABELS = ("entailment", "neutral", "contradiction")
PARAPHRASE_LABELS = ("different", "paraphrase")

# The hub's ClassLabel orders (universal_dependencies `upos`, wikiann `ner_tags`): a bare
# integer in a hub row is looked up here. Loading from the hub prefers the dataset's own
# feature names, so these only matter for rows that arrive without features.
UD_HUB_UPOS = (
    "NOUN", "PUNCT", "ADP", "NUM", "SYM", "SCONJ", "ADJ", "PART", "DET", "CCONJ", "PROPN", "PRON",
    "X", "_", "ADV", "INTJ", "VERB", "AUX",
)

PARQUET_BRANCH = "refs/convert/parquet"
"""Hub branch with the parquet conversion of datasets that (once) had a loading script,
which `datasets` >= 4 no longer runs."""

UDPOS_VERSIONS: dict[str, str] = {
    **{lang: "2.5" for lang in (
        "af", "ar", "bg", "de", "el", "en", "es", "et", "eu", "fa", "fi", "fr", "he", "hi", "hu", "id", "it", "ja",
        "kk", "ko", "mr", "nl", "pt", "ru", "ta", "te", "th", "tl", "tr", "ur", "vi", "yo", "zh")},
    **{lang: "2.7" for lang in ("lt", "pl", "uk", "wo", "ro")},
}
"""The UD release of each UD-POS language in the official data: XTREME-R's
`download_data.sh` (`download_treebank`) keeps XTREME's v2.5 for its 33 languages and
uses v2.7 only for the five XTREME-R adds (lt, pl, uk, wo, ro). The hub source
(`universal_dependencies`, whose builder reads every treebank at its `r2.7` tag) is
v2.7 for every language, so for the 33 XTREME languages hub data is a later release than
the official files (pass data_dir for the official ones)."""

# Treebanks per language as named on the hub (v2.7): XTREME concatenates *every* treebank
# whose file name starts with the language code, per split, and drops sentences whose
# words are withheld ("_"), e.g. Arabic-NYUAD, English-ESL.
UDPOS_TREEBANKS: dict[str, tuple[str, ...]] = {
    "af": ("af_afribooms",),
    "ar": ("ar_nyuad", "ar_padt", "ar_pud"),
    "bg": ("bg_btb",),
    "de": ("de_gsd", "de_hdt", "de_lit", "de_pud"),
    "el": ("el_gdt",),
    "en": ("en_esl", "en_ewt", "en_gum", "en_gumreddit", "en_lines", "en_partut", "en_pronouns", "en_pud"),
    "es": ("es_ancora", "es_gsd", "es_pud"),
    "et": ("et_edt", "et_ewt"),
    "eu": ("eu_bdt",),
    "fa": ("fa_perdt", "fa_seraji"),
    "fi": ("fi_ftb", "fi_ood", "fi_pud", "fi_tdt"),
    "fr": ("fr_fqb", "fr_ftb", "fr_gsd", "fr_partut", "fr_pud", "fr_sequoia", "fr_spoken"),
    "he": ("he_htb",),
    "hi": ("hi_hdtb", "hi_pud"),
    "hu": ("hu_szeged",),
    "id": ("id_csui", "id_gsd", "id_pud"),
    "it": ("it_isdt", "it_partut", "it_postwita", "it_pud", "it_twittiro", "it_vit"),
    "ja": ("ja_bccwj", "ja_gsd", "ja_modern", "ja_pud"),
    "kk": ("kk_ktb",),
    "ko": ("ko_gsd", "ko_kaist", "ko_pud"),
    "mr": ("mr_ufal",),
    "nl": ("nl_alpino", "nl_lassysmall"),
    "pt": ("pt_bosque", "pt_gsd", "pt_pud"),
    "ru": ("ru_gsd", "ru_pud", "ru_syntagrus", "ru_taiga"),
    "ta": ("ta_mwtt", "ta_ttb"),
    "te": ("te_mtg",),
    "th": ("th_pud",),
    "tl": ("tl_trg", "tl_ugnayan"),
    "tr": ("tr_boun", "tr_gb", "tr_imst", "tr_pud"),
    "ur": ("ur_udtb",),
    "vi": ("vi_vtb",),
    "yo": ("yo_ytb",),
    "zh": ("zh_cfl", "zh_gsd", "zh_gsdsimp", "zh_hk", "zh_pud"),
    "lt": ("lt_alksnis", "lt_hse"),
    "pl": ("pl_lfg", "pl_pdb", "pl_pud"),
    "uk": ("uk_iu",),
    "wo": ("wo_wtb",),
    "ro": ("ro_nonstandard", "ro_rrt", "ro_simonero"),
}

# Tatoeba (LASER v1 test sets) names languages by ISO 639-3; XTREME's own mapping.
TATOEBA_ISO3: dict[str, str] = {
    "af": "afr", "ar": "ara", "bg": "bul", "bn": "ben", "de": "deu", "el": "ell", "es": "spa", "et": "est",
    "eu": "eus", "fa": "pes", "fi": "fin", "fr": "fra", "he": "heb", "hi": "hin", "hu": "hun", "id": "ind",
    "it": "ita", "ja": "jpn", "jv": "jav", "ka": "kat", "kk": "kaz", "ko": "kor", "ml": "mal", "mr": "mar",
    "nl": "nld", "pt": "por", "ru": "rus", "sw": "swh", "ta": "tam", "te": "tel", "th": "tha", "tl": "tgl",
    "tr": "tur", "ur": "urd", "vi": "vie", "zh": "cmn", "az": "aze", "lt": "lit", "pl": "pol", "uk": "ukr",
    "ro": "ron",
}
_TATOEBA_ON_XTREME = tuple(lang for lang in XTREME_LANGUAGES["tatoeba"])
_TATOEBA_XTREME_R_ONLY = tuple(lang for lang in XTREME_R_LANGUAGES["tatoeba"] if lang not in _TATOEBA_ON_XTREME)

# TyDiQA ids start with the language's English name ("arabic-...").
TYDIQA_LANGUAGE_NAMES: dict[str, str] = {
    "ar": "arabic", "bn": "bengali", "en": "english", "fi": "finnish", "id": "indonesian", "ko": "korean",
    "ru": "russian", "sw": "swahili", "te": "telugu",
}


def _suites(task: str) -> tuple[str, ...]:
    return tuple(s for s, table in (("xtreme", XTREME_LANGUAGES), ("xtreme-r", XTREME_R_LANGUAGES)) if task in table)


def _group(task: str) -> str | None:
    for groups in (XTREME_R_GROUPS, XTREME_GROUPS):
        for group, members in groups.items():
            if task in members:
                return group
    return None


def _target_languages(task: str) -> tuple[str, ...]:
    """XTREME-R's list where the task is in XTREME-R (a superset of XTREME's), else XTREME's."""
    return XTREME_R_LANGUAGES.get(task) or XTREME_LANGUAGES[task]


def _hf(name: str, config: str | None = None, **kwargs: object) -> DataSource:
    return DataSource("hf", name, config, **kwargs)  # type: ignore[arg-type]


_NLI_COLUMNS = {"text": "premise", "text_b": "hypothesis", "label": "label"}
_SQUAD_TRAIN = _hf("rajpurkar/squad", split="train", row_format="squad")
_SQUAD_DEV = _hf("rajpurkar/squad", split="validation", row_format="squad")
_COPA = dict(row_format="copa", revision=PARQUET_BRANCH)

_SYNTHETIC: tuple[Task, ...] = (
    Task(
        name="syn-sent",
        kind="classification",
        source=DataSource("synthetic", "syn-sent"),
        languages=SYNTHETIC_LANGUAGES,
        labels=("negative", "positive"),
        metric="accuracy",
        roles=("target",),
        english_training_data="synthetic English sentences, small training set",
        description="sentence polarity from the adjectives it contains",
    ),
    Task(
        name="syn-pos",
        kind="tagging",
        source=DataSource("synthetic", "syn-pos"),
        languages=SYNTHETIC_LANGUAGES,
        labels=POS_TAGS,
        metric="seqeval_f1",
        roles=("target",),
        english_training_data="synthetic English sentences, small training set",
        description="part-of-speech tags of a shared grammar",
    ),
    Task(
        name="syn-rate",
        kind="classification",
        source=DataSource("synthetic", "syn-rate"),
        languages=("en",),
        labels=RATING_LABELS,
        metric="accuracy",
        roles=("intermediate",),
        english_training_data="synthetic English reviews, large training set",
        description="three-way rating of longer texts: related to syn-sent",
    ),
    Task(
        name="syn-chunk",
        kind="tagging",
        source=DataSource("synthetic", "syn-chunk"),
        languages=("en",),
        labels=CHUNK_TAGS,
        metric="seqeval_f1",
        roles=("intermediate",),
        english_training_data="synthetic English sentences, large training set",
        description="phrase chunking (BIO): related to syn-pos",
    ),
)


def _target(name: str, **kwargs: object) -> Task:
    """A benchmark target: official languages, suite membership and score group."""
    return Task(
        name=name, languages=_target_languages(name), roles=("target",), suites=_suites(name),
        group=_group(name), **kwargs,  # type: ignore[arg-type]
    )


_TARGETS: tuple[Task, ...] = (
    # --- classification ------------------------------------------------------------------
    _target(
        "xnli",
        kind="classification",
        source=_hf("facebook/xnli", "{lang}", columns=_NLI_COLUMNS, row_format="classification",
                   label_names=NLI_LABELS),
        labels=NLI_LABELS,
        metric="accuracy",
        english_training_data="MultiNLI train (XNLI's English training set, 393k pairs)",
        description="natural language inference; XNLI dev/test translated into 14 languages",
    ),
    _target(
        "pawsx",
        kind="classification",
        source=_hf("google-research-datasets/paws-x", "{lang}",
                   columns={"text": "sentence1", "text_b": "sentence2", "label": "label"},
                   row_format="classification", label_names=PARAPHRASE_LABELS),
        labels=PARAPHRASE_LABELS,
        metric="accuracy",
        english_training_data="PAWS (Wikipedia, labeled_final) English train, 49k pairs",
        description="adversarial paraphrase identification; dev/test translated into 6 languages",
    ),
    _target(
        "xcopa",
        kind="multiple_choice",
        source=_hf("cambridgeltl/xcopa", "{lang}", split="test", **_COPA),
        split_sources={
            "train": (_hf("aps/super_glue", "copa", split="train", **_COPA),),
            "dev": (_hf("aps/super_glue", "copa", split="validation", **_COPA),),
        },
        labels=(),
        metric="accuracy",
        train_first="socialiqa",
        english_training_data="Social IQa train first, then English COPA train (400), the XTREME-R recipe",
        description="causal commonsense reasoning: pick the more plausible cause/effect of a premise",
    ),
    # --- structured prediction -----------------------------------------------------------
    _target(
        "udpos",
        kind="tagging",
        source=_hf("universal-dependencies/universal_dependencies", columns={"tokens": "tokens", "tags": "upos"},
                   row_format="ud", label_names=UD_HUB_UPOS, revision=PARQUET_BRANCH,
                   lang_configs=UDPOS_TREEBANKS),
        labels=UDPOS_TAGS,
        metric="seqeval_f1",
        english_training_data=(
            "UD v2.5 English treebanks concatenated (EWT, GUM, LinES, ParTUT, ...; "
            "every English treebank's train file, as XTREME's preprocessing; the hub copy is v2.7)"
        ),
        description=(
            "universal part-of-speech tags; all treebanks of a language concatenated: UD v2.5 for XTREME's "
            "33 languages, v2.7 for lt, pl, uk, wo, ro (XTREME-R's download script; UDPOS_VERSIONS)"
        ),
    ),
    _target(
        "panx",
        kind="tagging",
        source=_hf("unimelb-nlp/wikiann", "{lang}", columns={"tokens": "tokens", "tags": "ner_tags"},
                   row_format="tags", label_names=PANX_TAGS),
        labels=PANX_TAGS,
        metric="seqeval_f1",
        english_training_data=(
            "WikiANN (PAN-X) English train, the balanced split of Rahimi et al. (2019), 20k sentences"
        ),
        description="named entities (PER, ORG, LOC) in Wikipedia, BIO tags",
    ),
    # --- question answering --------------------------------------------------------------
    _target(
        "xquad",
        kind="span_qa",
        source=_hf("google/xquad", "xquad.{lang}", split="validation", row_format="squad"),
        split_sources={"train": (_SQUAD_TRAIN,), "dev": (_SQUAD_DEV,)},
        labels=(),
        metric="squad_em_f1",
        english_training_data="SQuAD v1.1 train (dev: SQuAD v1.1 dev)",
        description="extractive QA: 240 SQuAD v1.1 dev paragraphs translated into 11 languages",
    ),
    _target(
        "mlqa",
        kind="span_qa",
        source=_hf("google/xtreme", "MLQA.{lang}.{lang}", split="test", row_format="squad"),
        split_sources={"train": (_SQUAD_TRAIN,), "dev": (_SQUAD_DEV,)},
        labels=(),
        metric="mlqa_em_f1",
        english_training_data="SQuAD v1.1 train (dev: SQuAD v1.1 dev)",
        description="extractive QA; test with context and question in the same language",
    ),
    _target(
        "tydiqa",
        kind="span_qa",
        source=_hf("google/xtreme", "tydiqa", split="validation", row_format="tydiqa"),
        split_sources={"train": (_hf("google/xtreme", "tydiqa", split="train", row_format="tydiqa"),)},
        labels=(),
        metric="squad_em_f1",
        english_training_data=(
            "TyDiQA-GoldP English train (3.7k); dev = the English GoldP dev set, which is also "
            "the English test set, as XTREME's train_qa.sh"
        ),
        description="TyDiQA gold passage task: extractive QA written natively in 9 languages",
    ),
    # --- retrieval -----------------------------------------------------------------------
    _target(
        "mewslix",
        kind="dual_encoder",
        source=DataSource("local", "mewslix", row_format="mewslix"),
        labels=(),
        metric="map_at_20",
        english_training_data=(
            "English Wikipedia mention-entity pairs (Mewsli-X wikipedia_pairs-train.jsonl; "
            "dev: wikipedia_pairs-dev.jsonl)"
        ),
        description=(
            "entity linking as retrieval: WikiNews mentions in 11 languages against ~1M "
            "WikiData entity descriptions; no hub copy, local files only"
        ),
    ),
    _target(
        "lareqa",
        kind="dual_encoder",
        source=_hf("google-research-datasets/xquad_r", "{lang}", split="validation", row_format="xquad_r"),
        split_sources={
            "train": (_hf("rajpurkar/squad", split="train", row_format="squad_pairs"),),
            "dev": (_hf("rajpurkar/squad", split="validation", row_format="squad_pairs"),),
        },
        labels=(),
        metric="map_at_20",
        english_training_data=(
            "SQuAD v1.1 train as retrieval pairs (question -> the sentence containing its answer)"
        ),
        description=(
            "language-agnostic answer retrieval: XQuAD-R questions against the answer "
            "sentences of all 11 languages pooled"
        ),
    ),
    _target(
        "tatoeba",
        kind="retrieval",
        source=_hf("google/xtreme", split="validation", row_format="tatoeba",
                   lang_configs={lang: (f"tatoeba.{TATOEBA_ISO3[lang]}",) for lang in _TATOEBA_ON_XTREME},
                   languages=_TATOEBA_ON_XTREME),
        split_sources={"test": (
            _hf("google/xtreme", split="validation", row_format="tatoeba",
                lang_configs={lang: (f"tatoeba.{TATOEBA_ISO3[lang]}",) for lang in _TATOEBA_ON_XTREME},
                languages=_TATOEBA_ON_XTREME),
            _hf("mteb/tatoeba-bitext-mining", split="test", row_format="tatoeba",
                lang_configs={lang: (f"{TATOEBA_ISO3[lang]}-eng",) for lang in _TATOEBA_XTREME_R_ONLY},
                languages=_TATOEBA_XTREME_R_ONLY),
        )},
        train_languages=(),
        dev_languages=(),
        labels=(),
        metric="accuracy",
        retrieval_layer=((12, 7), (24, 13)),
        english_training_data="none: zero-shot sentence retrieval from the encoder (no training)",
        description="find the English translation of each sentence among ~1000 (LASER Tatoeba v1)",
    ),
    _target(
        "bucc2018",
        kind="retrieval",
        source=_hf("google/xtreme", "bucc18.{lang}", row_format="bucc"),
        train_languages=(),
        dev_languages=XTREME_LANGUAGES["bucc2018"],
        labels=(),
        metric="bucc_f1",
        retrieval_layer=((12, 7), (24, 7)),
        english_training_data="none: zero-shot bitext mining from the encoder (no training)",
        description=(
            "mine parallel sentences from comparable corpora; dev (BUCC 'sample') in every "
            "language picks the score threshold, test is BUCC's 'training' gold set"
        ),
    ),
)


def _intermediate(name: str, **kwargs: object) -> Task:
    """An English intermediate task of the X-STILTs study: every split English only."""
    return Task(name=name, languages=("en",), roles=("intermediate",), **kwargs)  # type: ignore[arg-type]


def _anli(split: str) -> tuple[DataSource, ...]:
    return tuple(
        _hf("facebook/anli", split=f"{split}_r{r}", columns=_NLI_COLUMNS, row_format="classification",
            label_names=NLI_LABELS, tag=f"anli-r{r}")
        for r in (1, 2, 3)
    )


_INTERMEDIATES: tuple[Task, ...] = (
    _intermediate(
        "anli_plus",
        kind="classification",
        source=_hf("facebook/anli", columns=_NLI_COLUMNS, row_format="classification", label_names=NLI_LABELS),
        split_sources={
            "train": (
                _hf("stanfordnlp/snli", split="train", columns=_NLI_COLUMNS, row_format="classification",
                    label_names=NLI_LABELS, tag="snli"),
                _hf("nyu-mll/glue", "mnli", split="train", columns=_NLI_COLUMNS, row_format="classification",
                    label_names=NLI_LABELS, tag="mnli"),
                *_anli("train"),
            ),
            "dev": _anli("dev"),
            "test": _anli("test"),
        },
        labels=NLI_LABELS,
        metric="accuracy",
        english_training_data="SNLI + MultiNLI + ANLI rounds 1-3 train, one 3-way NLI head",
        description="ANLI+: adversarial NLI with SNLI and MNLI; dev/test = ANLI rounds 1-3",
    ),
    _intermediate(
        "mnli",
        kind="classification",
        source=_hf("nyu-mll/glue", "mnli", dev_split="validation_matched", test_split="validation_mismatched",
                   columns=_NLI_COLUMNS, row_format="classification", label_names=NLI_LABELS),
        labels=NLI_LABELS,
        metric="accuracy",
        english_training_data="MultiNLI train (393k); dev = matched, test = mismatched validation",
    ),
    _intermediate(
        "qqp",
        kind="classification",
        source=_hf("nyu-mll/glue", "qqp", test_split="validation",
                   columns={"text": "question1", "text_b": "question2", "label": "label"},
                   row_format="classification", label_names=("not_duplicate", "duplicate")),
        labels=("not_duplicate", "duplicate"),
        metric="accuracy",
        english_training_data="Quora Question Pairs train (364k); test = validation (GLUE test is unlabeled)",
    ),
    _intermediate(
        "squad",
        kind="span_qa",
        source=_hf("rajpurkar/squad", test_split="validation", row_format="squad"),
        labels=(),
        metric="squad_em_f1",
        english_training_data="SQuAD v1.1 train (88k); test = dev",
    ),
    _intermediate(
        "squad_v2",
        kind="span_qa",
        source=_hf("rajpurkar/squad_v2", test_split="validation", row_format="squad"),
        labels=(),
        metric="squad_v2_em_f1",
        english_training_data="SQuAD v2.0 train (130k, with unanswerable questions); test = dev",
        description="unanswerable questions have empty answer lists",
    ),
    _intermediate(
        "hellaswag",
        kind="multiple_choice",
        source=_hf("Rowan/hellaswag", test_split="validation", row_format="hellaswag", revision=PARQUET_BRANCH),
        labels=(),
        metric="accuracy",
        english_training_data="HellaSwag train (40k); test = validation (test labels are hidden)",
    ),
    _intermediate(
        "commonsenseqa",
        kind="multiple_choice",
        source=_hf("tau/commonsense_qa", test_split="validation", row_format="commonsenseqa"),
        labels=(),
        metric="accuracy",
        english_training_data="CommonsenseQA train (9.7k); test = validation (test labels are hidden)",
    ),
    _intermediate(
        "cosmosqa",
        kind="multiple_choice",
        source=_hf("allenai/cosmos_qa", test_split="validation", row_format="cosmosqa", revision=PARQUET_BRANCH),
        labels=(),
        metric="accuracy",
        english_training_data="Cosmos QA train (25k); test = validation (test labels are hidden)",
    ),
    _intermediate(
        "socialiqa",
        kind="multiple_choice",
        source=_hf("allenai/social_i_qa", test_split="validation", row_format="siqa", revision=PARQUET_BRANCH),
        labels=(),
        metric="accuracy",
        english_training_data="Social IQa (SIQA) train (33k); test = dev",
        description="also the first stage of XCOPA's official recipe (xcopa.train_first)",
    ),
    _intermediate(
        "ccg",
        kind="tagging",
        source=DataSource("local", "ccg", row_format="tags"),
        labels=(),
        metric="token_accuracy",
        english_training_data="CCGbank sections 02-21 (train), 00 (dev), 23 (test); licensed (LDC2005T13)",
        description=(
            "CCG supertagging (token accuracy). Not on the hub: local files only. The tag set "
            "comes from the training data (labels are empty here)"
        ),
    ),
    _intermediate(
        "sst2",
        kind="classification",
        source=_hf("nyu-mll/glue", "sst2", test_split="validation", columns={"text": "sentence", "label": "label"},
                   row_format="classification", label_names=("negative", "positive")),
        labels=("negative", "positive"),
        metric="accuracy",
        english_training_data="SST-2 train (67k); test = validation (GLUE test is unlabeled)",
    ),
    _intermediate(
        "paws",
        kind="classification",
        source=_hf("google-research-datasets/paws", "labeled_final",
                   columns={"text": "sentence1", "text_b": "sentence2", "label": "label"},
                   row_format="classification", label_names=PARAPHRASE_LABELS),
        labels=PARAPHRASE_LABELS,
        metric="accuracy",
        english_training_data="PAWS-Wiki labeled_final train (49k)",
    ),
)

CAPTION_OBJECTIVES: tuple[tuple[str, Objective, ImageUse, str], ...] = (
    ("itm", "itm", "paired", "image-text matching: does the caption describe the image "
                             "(negatives: random and the most similar other image)"),
    ("contrastive", "contrastive", "paired", "contrastive image-caption alignment, in-batch negatives, "
                                             "learned temperature"),
    ("mcm", "mcm", "paired", "masked caption modelling with the image as a prefix"),
    ("mcm-text", "mcm", "none", "control: masked caption modelling without the image"),
    ("itm-shuffled", "itm", "shuffled", "control: image-text matching with images shuffled across captions"),
)
"""Task suffix, objective, image use, description. Controls are text-modality tasks whose
`control_of` is the multimodal task with the same objective."""

OBJECTIVE_METRIC: dict[str, str] = {"itm": "accuracy", "contrastive": "accuracy", "mcm": "token_accuracy"}
"""English dev metric of each objective: ITM pair accuracy; contrastive: caption-to-image
recall@1 over the dev images (an accuracy of retrieved image ids); MCM: accuracy on the
masked tokens."""


def _caption_tasks() -> tuple[Task, ...]:
    tasks = []
    for dataset, known in CAPTION_DATASETS.items():
        about = known.description
        for suffix, objective, images, description in CAPTION_OBJECTIVES:
            control = images != "paired"
            tasks.append(Task(
                name=f"{dataset}-{suffix}",
                kind="image_text",
                source=DataSource("captions", dataset),
                languages=(),  # no test split: intermediate training and English dev only
                labels=("mismatch", "match") if objective == "itm" else (),
                metric=OBJECTIVE_METRIC[objective],
                roles=("intermediate",),
                modality="text" if control else "multimodal",
                english_training_data=about,
                description=description,
                objective=objective,
                images=images,
                control_of=f"{dataset}-{objective}" if control else None,
            ))
    return tuple(tasks)


_TASKS: tuple[Task, ...] = _SYNTHETIC + _TARGETS + _INTERMEDIATES + _caption_tasks()

TASKS: dict[str, Task] = {task.name: task for task in _TASKS}

BASELINE = "none"
"""The intermediate 'task' that trains nothing: the pretrained encoder itself."""


def task_names(role: str | None = None) -> list[str]:
    """Registered task names, optionally only those usable in `role`."""
    return sorted(name for name, task in TASKS.items() if role is None or role in task.roles)


def get_task(name: str) -> Task:
    """The task called `name`; KeyError lists nothing (callers format their own errors)."""
    return TASKS[name]
