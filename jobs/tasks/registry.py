"""The task registry: every task xstilts knows, as small declarative records.

This module is deliberately free of torch and transformers so that the launcher can
validate a spec (unknown task names, roles) on a login node in milliseconds. What a task
*does* (loading, heads, metrics) lives in the job modules that read these records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

TaskKind = Literal["classification", "tagging", "multiple_choice", "span_qa", "retrieval", "image_text"]
Modality = Literal["text", "multimodal"]

# Synthetic languages of the demo benchmark. ISO 639 reserves qaa-qtz for local use, so
# these codes can never be mistaken for a real language.
SYNTHETIC_LANGUAGES: tuple[str, ...] = ("en", "qaa", "qab", "qac")

XNLI_LANGUAGES = ("en", "ar", "bg", "de", "el", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")
PAWSX_LANGUAGES = ("en", "de", "es", "fr", "ja", "ko", "zh")


@dataclass(frozen=True)
class DataSource:
    """Where a task's examples come from.

    `kind="synthetic"` means the deterministic demo generator (`jobs.synthetic`);
    `kind="hf"` a Hugging Face dataset (`datasets.load_dataset(name, config)`), where
    `config` may contain `{lang}` to select a per-language configuration.
    """

    kind: Literal["synthetic", "hf"]
    name: str
    config: str | None = None
    train_split: str = "train"
    dev_split: str = "validation"
    test_split: str = "test"
    # Column names in the source; classification: text, text_b, label; tagging: tokens, tags.
    columns: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Task:
    """One task: enough to load it, build its head and score it."""

    name: str
    kind: TaskKind
    source: DataSource
    languages: tuple[str, ...]
    labels: tuple[str, ...]
    metric: str
    roles: tuple[Literal["intermediate", "target"], ...]
    modality: Modality = "text"
    english_training_data: str = ""
    description: str = ""

    @property
    def eval_languages(self) -> tuple[str, ...]:
        """Languages evaluated zero-shot (English included, as XTREME reports it)."""
        return self.languages


POS_TAGS = ("DET", "ADJ", "NOUN", "VERB", "ADP", "PRON", "ADV", "CONJ")
CHUNK_TAGS = ("O", "B-NP", "I-NP", "B-VP", "I-VP", "B-PP", "I-PP")
RATING_LABELS = ("negative", "neutral", "positive")
UDPOS_TAGS = (
    "ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN",
    "PUNCT", "SCONJ", "SYM", "VERB", "X",
)
PANX_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")

_TASKS: tuple[Task, ...] = (
    # --- synthetic demo benchmark -----------------------------------------------------
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
    # --- real XTREME targets (classification and tagging) --------------------------------
    Task(
        name="xnli",
        kind="classification",
        source=DataSource(
            "hf", "facebook/xnli", config="{lang}",
            columns={"text": "premise", "text_b": "hypothesis", "label": "label"},
        ),
        languages=XNLI_LANGUAGES,
        labels=("entailment", "neutral", "contradiction"),
        metric="accuracy",
        roles=("target",),
        english_training_data="MultiNLI (XNLI's English training split)",
    ),
    Task(
        name="pawsx",
        kind="classification",
        source=DataSource(
            "hf", "google-research-datasets/paws-x", config="{lang}",
            columns={"text": "sentence1", "text_b": "sentence2", "label": "label"},
        ),
        languages=PAWSX_LANGUAGES,
        labels=("different", "paraphrase"),
        metric="accuracy",
        roles=("target",),
        english_training_data="PAWS (English)",
    ),
    Task(
        name="panx",
        kind="tagging",
        source=DataSource(
            "hf", "unimelb-nlp/wikiann", config="{lang}",
            columns={"tokens": "tokens", "tags": "ner_tags"},
        ),
        languages=("en", "ar", "de", "es", "fr", "hi", "ja", "ru", "zh"),
        labels=PANX_TAGS,
        metric="seqeval_f1",
        roles=("target",),
        english_training_data="WikiANN English",
    ),
    Task(
        name="udpos",
        kind="tagging",
        source=DataSource(
            "hf", "universal_dependencies", config="{lang}",
            columns={"tokens": "tokens", "tags": "upos"},
        ),
        languages=("en", "ar", "de", "es", "fr", "hi", "ja", "ru", "zh"),
        labels=UDPOS_TAGS,
        metric="seqeval_f1",
        roles=("target",),
        english_training_data="UD English-EWT",
    ),
    # --- real intermediate tasks of X-STILTs (text) -------------------------------------
    Task(
        name="mnli",
        kind="classification",
        source=DataSource(
            "hf", "nyu-mll/glue", config="mnli", dev_split="validation_matched",
            test_split="validation_matched",
            columns={"text": "premise", "text_b": "hypothesis", "label": "label"},
        ),
        languages=("en",),
        labels=("entailment", "neutral", "contradiction"),
        metric="accuracy",
        roles=("intermediate",),
    ),
    Task(
        name="qqp",
        kind="classification",
        source=DataSource(
            "hf", "nyu-mll/glue", config="qqp", test_split="validation",
            columns={"text": "question1", "text_b": "question2", "label": "label"},
        ),
        languages=("en",),
        labels=("not_duplicate", "duplicate"),
        metric="accuracy",
        roles=("intermediate",),
    ),
    Task(
        name="sst2",
        kind="classification",
        source=DataSource(
            "hf", "nyu-mll/glue", config="sst2", test_split="validation",
            columns={"text": "sentence", "label": "label"},
        ),
        languages=("en",),
        labels=("negative", "positive"),
        metric="accuracy",
        roles=("intermediate",),
    ),
)

TASKS: dict[str, Task] = {task.name: task for task in _TASKS}

BASELINE = "none"
"""The intermediate 'task' that trains nothing: the pretrained encoder itself."""


def task_names(role: str | None = None) -> list[str]:
    """Registered task names, optionally only those usable in `role`."""
    return sorted(name for name, task in TASKS.items() if role is None or role in task.roles)


def get_task(name: str) -> Task:
    """The task called `name`; KeyError lists nothing (callers format their own errors)."""
    return TASKS[name]
