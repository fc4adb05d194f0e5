"""Canonical examples of every registered task, from the Hugging Face hub or local files.

Why one module: whatever a task's data looks like at its source (hub parquet rows, the
files google-research/xtreme's `scripts/download_data.sh` writes, generic jsonl/tsv), the
rest of xstilts sees one schema per task kind. Hub rows and local files go through the
same row converters, so a converter tested on hand-written hub-shaped rows is the one
that reads a cluster's offline copy.

Canonical examples (every loader returns these dicts):

* classification: `{"id", "text", "text_b" (pair tasks only), "label"}`, label a name
  from `task.labels`;
* tagging: `{"id", "tokens", "tags"}`;
* multiple_choice: `{"id", "context", "question", "choices", "label"}` (label: index);
* span_qa: `{"id", "context", "question", "answers": {"text", "answer_start"}}`, empty
  lists = unanswerable (SQuAD v2.0);
* retrieval (tatoeba, bucc2018) and the dual_encoder test split (lareqa, mewslix): rows
  `{"id", "text", "role": "query"|"candidate", "gold": [candidate ids]}`; candidates
  have `gold: []`. LAReQA candidates also carry `"context"` (their paragraph, which the
  official recipe encodes with the sentence) and every LAReQA row its `"lang"`, because
  its candidate pool mixes all eleven languages;
* dual_encoder train and dev (lareqa, mewslix): `{"id", "query", "positive"}`, the
  in-batch-negatives pairs the official recipe trains and selects on; their test split
  uses the retrieval rows above.

Gold withheld: the official layout strips test labels. `utils_preprocess.py` (at
google-research/xtreme 838c13b) leaves, after `scripts/download_data.sh`:

* XNLI, PAWS-X, PAN-X, UD-POS: `test-<l>.tsv` without the label / tag column;
* XQuAD, MLQA: test answers replaced by one `{"answer_start": 0, "text": ""}`;
* TyDiQA: every file of `tydiqa-goldp-v1.1-dev/` (renamed in place to
  `tydiqa.goldp.<iso>.dev.json`, English included, and then blanked as XQuAD's): so the
  test languages and the English dev split have no gold (see "TyDiQA's English dev");
* XCOPA: `xcopa/test-<l>.jsonl` rewritten with every `label` set to 0 (the placeholder
  the dataset format needs). The original release's `test.<l>.jsonl` (cambridgeltl/xcopa,
  read first when present) keeps its labels; a `test-<l>.jsonl` whose labels are all 0
  is read as blanked, one with any other label as an unprocessed copy;
* Mewsli-X: test `entity_id`s blanked and `wikinews_labels/test-<l>.json` holding `[""]`;
* BUCC test gold, Tatoeba's sorted English side.

Such examples are still returned, with the gold field (`label`, `tags`, `answers`,
`gold`) set to `None`: they can be predicted (for a leaderboard submission), not scored.

TyDiQA's English dev: when the official layout's `tydiqa.goldp.en.dev.json` is blanked,
model selection has no English dev set, so `load_examples` holds out a fixed slice of the
English training file (`TYDIQA_HOLDOUT_FRACTION`, picked by a seeded hash of each
question, `TYDIQA_HOLDOUT_SEED`): the dev split is that slice and the train split the
rest (no question in both). `load_split` says so in `note` and `extra["holdout"]`. A
`tydiqa.goldp.en.dev.json` that still has its answers (preprocessed without the
blanking) is used as it is, without a holdout. The un-renamed originals
(`tydiqa-goldp-dev-<language>.json`) are never left by the official tools and are not read.

Local files (`data_dir` set): first the official XTREME/XTREME-R layout, then the generic
`<data_dir>/<task>/<split>-<lang>.jsonl` (canonical dicts, one per line) or `.tsv`
(columns per kind: see `GENERIC_TSV_COLUMNS`); `local_layout(task)` lists the paths.
`datasets` is imported only when the hub is asked.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import csv
import functools
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from xstilts.core.tasks import SPLITS, TASKS, TATOEBA_ISO3, TYDIQA_LANGUAGE_NAMES, DataSource, Task, get_task

Example = dict[str, Any]
Row = dict[str, Any]

__all__ = [
    "COPA_QUESTIONS", "GENERIC_TSV_COLUMNS", "GOLD_FIELDS", "TYDIQA_HOLDOUT_FRACTION", "TYDIQA_HOLDOUT_SEED",
    "Holdout", "LoadedSplit", "gold_withheld", "hf_rows_to_examples", "hub_provenance", "load_examples", "load_split",
    "local_layout", "recording_hub_loads", "sentence_spans", "split_languages", "tag_inventory", "task_splits",
    "with_revision",
]

GENERIC_TSV_COLUMNS: dict[str, str] = {
    "classification": "text<TAB>label, or text<TAB>text_b<TAB>label for pair tasks (label optional in test)",
    "tagging": "CoNLL: token<TAB>tag per line, a blank line between sentences (tag optional in test)",
    "multiple_choice": "context<TAB>question<TAB>choice_1<TAB>...<TAB>choice_k<TAB>label (0-based index)",
    "span_qa": "not supported: use jsonl or a SQuAD-format <split>-<lang>.json",
    "retrieval": "id<TAB>role<TAB>text<TAB>gold ids separated by spaces (query rows; empty for candidates)",
    "dual_encoder": "train/dev: id<TAB>query<TAB>positive; test: as retrieval",
}
"""Columns of the generic `<data_dir>/<task>/<split>-<lang>.tsv`, written and read as
`csv` with `delimiter='\\t'` (fields with quotes or tabs are quoted, as XTREME's own
preprocessing writes its tsv files)."""

COPA_QUESTIONS = {"cause": "What was the cause?", "effect": "What was the effect?"}
"""XTREME-R's `run_xcopa.py` renders COPA's question word as "What was the {cause,effect}?"."""

_DROP = object()
"""A row without a usable gold label in a labelled split (SNLI's -1 'no consensus')."""


GOLD_FIELDS: dict[str, str] = {
    "classification": "label", "tagging": "tags", "multiple_choice": "label", "span_qa": "answers",
    "retrieval": "gold", "dual_encoder": "gold",
}
"""The canonical field holding an example's gold, per task kind (dual_encoder: its test
split's query rows; its train/dev pairs always carry their positive)."""


@dataclass(frozen=True)
class LoadedSplit:
    """One split of one language as loaded, with what a caller must know about it.

    `gold_withheld`: the source strips this split's gold (the official layout blanks
    test labels), so it can be predicted but not scored. `files`: the local files read,
    relative to `data_dir` (empty for the hub or generated data). `note`: a choice the
    loader made that a result must record (e.g. a dev split held out of train).
    """

    examples: list[Example]
    gold_withheld: bool = False
    files: tuple[str, ...] = ()
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def gold_withheld(task: Task | str, split: str, examples: Sequence[Example]) -> bool:
    """True when no example of the split carries gold: every gold field is None (for
    retrieval, every query row's). A split with some gold is scoreable on that part."""
    task = _resolve(task)
    key = GOLD_FIELDS.get(task.kind)
    if key is None or (task.kind == "dual_encoder" and split != "test"):
        return False
    rows = [example for example in examples if example.get("role", "query") == "query"] \
        if task.kind in ("retrieval", "dual_encoder") else list(examples)
    return bool(rows) and all(example.get(key) is None for example in rows)


# --------------------------------------------------------------------------------------
# public API


def task_splits(task: Task | str) -> tuple[str, ...]:
    """The splits `task` has, in train/dev/test order (Tatoeba: test only)."""
    return _resolve(task).splits


def split_languages(task: Task | str, split: str) -> tuple[str, ...]:
    """Languages of `split`: English for training and model selection (zero-shot), every
    evaluation language for test, none where the task lacks the split."""
    task = _resolve(task)
    _check_split(task, split)
    return task.split_languages(split)


def load_examples(task: Task | str, split: str, lang: str, data_dir: str | Path | None = None,
                  revision: str | None = None) -> list[Example]:
    """Canonical examples of one split in one language.

    `data_dir=None` reads the hub (`datasets.load_dataset`, or its local cache);
    otherwise local files under `data_dir`. `revision` pins every hub source of the task
    (the spec's `data_revision`). Unknown task, split or language: ValueError naming the
    valid ones; missing local files: FileNotFoundError naming the paths.
    """
    task = with_revision(_resolve(task), revision)
    _check_split(task, split)
    if lang not in task.split_languages(split):
        raise ValueError(
            f"task '{task.name}' has no {split} data in language '{lang}'; "
            f"valid: {', '.join(task.split_languages(split))}"
        )
    if task.source.kind == "synthetic":
        return _synthetic(task.source.name, split, lang)
    if task.source.kind == "captions":  # image-caption datasets: their own loaders (hub, local, generated)
        from xstilts.jobs.multimodal.captions import load_captions

        return load_captions(task.source.name, split, str(data_dir) if data_dir is not None else None)
    if data_dir is not None:
        holdout = tydiqa_holdout(task, split, lang, Path(data_dir))
        if holdout is not None:
            return holdout.examples(split)
        return _load_local(task, split, lang, Path(data_dir))
    return _load_hub(task, split, lang)


def load_split(task: Task | str, split: str, lang: str, data_dir: str | Path | None = None,
               revision: str | None = None) -> LoadedSplit:
    """`load_examples` with what the caller must know: withheld gold, the files read, and
    the TyDiQA English holdout (note and `extra["holdout"]`) when the loader made one."""
    task = _resolve(task)
    holdout = tydiqa_holdout(task, split, lang, Path(data_dir)) if data_dir is not None else None
    if holdout is not None:
        examples = holdout.examples(split)
        return LoadedSplit(examples=examples, gold_withheld=gold_withheld(task, split, examples),
                           files=holdout.files, note=holdout.note(split), extra={"holdout": holdout.record()})
    examples = load_examples(task, split, lang, data_dir, revision)
    files: tuple[str, ...] = ()
    if data_dir is not None and task.source.kind not in ("synthetic", "captions"):
        found = _found_local(task, split, lang, Path(data_dir))
        files = found or ()
    return LoadedSplit(examples=examples, gold_withheld=gold_withheld(task, split, examples), files=files)


def with_revision(task: Task, revision: str | None) -> Task:
    """`task` with every hub source pinned to `revision` (None: as registered). The
    override is on the sources, so the loaders and converters need no parameter for it."""
    if revision is None:
        return task

    def pin(source: DataSource) -> DataSource:
        return replace(source, revision=revision) if source.kind == "hf" else source

    return replace(task, source=pin(task.source), split_sources={
        split: tuple(pin(source) for source in group) for split, group in task.split_sources.items()})


_HUB_LOADS: contextvars.ContextVar[list[dict[str, Any]] | None] = contextvars.ContextVar("hub_loads", default=None)


@contextlib.contextmanager
def recording_hub_loads() -> Iterator[list[dict[str, Any]]]:
    """Collects `hub_provenance` of every hub split loaded inside the block, so the
    prepare stage can record which dataset revision its examples came from."""
    loads: list[dict[str, Any]] = []
    token = _HUB_LOADS.set(loads)
    try:
        yield loads
    finally:
        _HUB_LOADS.reset(token)


_COMMIT = re.compile(r"[0-9a-f]{40}")


def hub_provenance(dataset: Any, name: str, config: str | None, split: str, revision: str | None) -> dict[str, Any]:
    """What a loaded hub split says about its origin, offline included: `datasets` caches
    a hub dataset under `<name>/<config>/<version>/<commit sha>/`, so the folder of its
    Arrow files names the resolved revision; `_fingerprint` identifies the table itself."""
    files = [entry.get("filename") for entry in getattr(dataset, "cache_files", None) or [] if entry.get("filename")]
    folder = Path(files[0]).parent.name if files else ""
    info = getattr(dataset, "info", None)
    version = getattr(info, "version", None)
    return {
        "dataset": name, "config": config, "split": split, "revision": revision,
        "resolved_revision": folder if _COMMIT.fullmatch(folder) else None,
        "fingerprint": getattr(dataset, "_fingerprint", None),
        "version": str(version) if version is not None else None,
        "rows": len(dataset),
    }


def hf_rows_to_examples(
    task: Task | str, split: str, lang: str, rows: Iterable[Row], source: DataSource | None = None
) -> list[Example]:
    """Canonical examples from rows shaped like the hub dataset's rows.

    `source` is the one the rows came from (default: the first source of `split` for
    `lang`). Integer labels map through `source.label_names`; string labels must be
    label names (or their digit/alias spelling). LAReQA's test rows are those of every
    language config, each with the language added under `"_lang"`.
    """
    task = _resolve(task)
    if source is None:
        sources = task.sources_for(split, lang)
        if not sources:
            raise ValueError(f"task '{task.name}' has no source for {split} in '{lang}'")
        source = sources[0]
    converter = _CONVERTERS.get(source.row_format)
    if converter is None:
        raise ValueError(f"task '{task.name}': no row converter '{source.row_format}'; known: {', '.join(_CONVERTERS)}")
    return converter(task, source, split, lang, list(rows))


def tag_inventory(task: Task | str, data_dir: str | Path | None = None, min_count: int = 1) -> tuple[str, ...]:
    """Tags of the English training split seen at least `min_count` times, most frequent
    first: the label set of a tagging task whose tags are open-ended (CCG supertags have
    no fixed list; the standard setup keeps categories seen >= 10 times in CCGbank
    sections 02-21, 425 of them)."""
    counts: dict[str, int] = {}
    for example in load_examples(task, "train", "en", data_dir):
        for tag in example["tags"] or ():
            counts[tag] = counts.get(tag, 0) + 1
    return tuple(tag for tag, count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
                 if count >= min_count)


def local_layout(task: Task | str) -> dict[str, list[str]]:
    """Local paths (relative to `data_dir`, `{lang}` for the language) tried per split:
    the official layout first, then the generic files."""
    task = _resolve(task)
    layout: dict[str, list[str]] = {}
    for split in task.splits:
        layout[split] = [" + ".join(paths) for paths in _alternatives(task, split, "{lang}")]
    return layout


# --------------------------------------------------------------------------------------
# TyDiQA's English dev split, held out of English train

TYDIQA_HOLDOUT_SEED = 0
"""Seed of the hash that picks TyDiQA's held-out English dev questions (module docstring)."""
TYDIQA_HOLDOUT_FRACTION = 0.1
"""Share of the English training questions held out: 370 of TyDiQA-GoldP's 3,696, about
the size of the English dev set (440) that the official layout blanks."""


@dataclass(frozen=True)
class Holdout:
    """English train split in two: `dev` (the held-out slice) and `train` (the rest).

    Which questions are held out depends only on their content and the seed (a sha256
    of seed, id, question and context), not on file order or PYTHONHASHSEED, so the same
    files give the same slice on every machine."""

    dev: list[Example]
    train: list[Example]
    files: tuple[str, ...]
    """The training file split, then the blanked dev file that made the holdout necessary."""
    seed: int = TYDIQA_HOLDOUT_SEED
    fraction: float = TYDIQA_HOLDOUT_FRACTION

    def examples(self, split: str) -> list[Example]:
        return copy.deepcopy(self.dev if split == "dev" else self.train)

    def record(self) -> dict[str, Any]:
        """What a result records about the choice (JSON-ready)."""
        return {"from": self.files[0], "instead_of": self.files[1], "seed": self.seed, "fraction": self.fraction,
                "dev": len(self.dev), "train": len(self.train)}

    def note(self, split: str) -> str:
        held = f"{len(self.dev)} of {len(self.dev) + len(self.train)} English training questions"
        if split == "dev":
            return (f"dev: {held} held out of {self.files[0]} (seed {self.seed}), "
                    f"because the official layout blanks {self.files[1]}")
        return f"train: {self.files[0]} without the {held} held out as the dev split (seed {self.seed})"


def tydiqa_holdout(task: Task, split: str, lang: str, root: Path) -> Holdout | None:
    """The English holdout when `task` is TyDiQA, (split, lang) is English train or dev
    and the official English dev file found under `root` has no gold; else None."""
    if task.name != "tydiqa" or lang != "en" or split not in ("train", "dev"):
        return None
    dev_paths = _found_local(task, "dev", "en", root)
    if dev_paths is None or dev_paths not in _official_files(task, "dev", "en"):
        return None
    if not gold_withheld(task, "dev", _read_official(task, "dev", "en", [root / p for p in dev_paths])):
        return None
    train = _load_local(task, "train", "en", root)
    train_paths = _found_local(task, "train", "en", root) or ()
    held = _held_out(train, TYDIQA_HOLDOUT_SEED, TYDIQA_HOLDOUT_FRACTION)
    return Holdout(dev=[e for i, e in enumerate(train) if i in held],
                   train=[e for i, e in enumerate(train) if i not in held],
                   files=(*train_paths, *dev_paths))


def _held_out(examples: Sequence[Example], seed: int, fraction: float) -> set[int]:
    """Indices of the `fraction` of `examples` (at least one, never all) whose seeded
    content hash is smallest."""
    if len(examples) < 2:
        raise ValueError(f"cannot hold a dev split out of {len(examples)} training example(s)")
    size = min(len(examples) - 1, max(1, round(len(examples) * fraction)))

    def key(index: int) -> tuple[str, int]:
        example = examples[index]
        content = json.dumps([seed, example["id"], example["question"], example["context"]], ensure_ascii=False)
        return hashlib.sha256(content.encode("utf-8")).hexdigest(), index

    return set(sorted(range(len(examples)), key=key)[:size])


# --------------------------------------------------------------------------------------
# validation


def _resolve(task: Task | str) -> Task:
    if isinstance(task, Task):
        return task
    try:
        return get_task(task)
    except KeyError:
        raise ValueError(f"unknown task '{task}'; valid tasks: {', '.join(sorted(TASKS))}") from None


def _check_split(task: Task, split: str) -> None:
    if split not in task.splits:
        valid = ", ".join(task.splits)
        extra = "" if split in SPLITS else f" (splits are named {', '.join(SPLITS)})"
        raise ValueError(f"task '{task.name}' has no split '{split}'{extra}; valid splits: {valid}")


# --------------------------------------------------------------------------------------
# synthetic demo tasks


@functools.lru_cache(maxsize=8)
def _generated(name: str) -> dict[str, dict[str, list[dict]]]:
    from xstilts.jobs import synthetic

    return synthetic.generate(name)


def _synthetic(name: str, split: str, lang: str) -> list[Example]:
    """The generator's examples with an `id` added; copies, so callers may mutate them."""
    examples = _generated(name)[split][lang]
    return [{"id": example.get("id", f"{split}-{lang}-{index}"), **copy.deepcopy(example)}
            for index, example in enumerate(examples)]


# --------------------------------------------------------------------------------------
# the hub


def _load_hub(task: Task, split: str, lang: str) -> list[Example]:
    examples: list[Example] = []
    for source in task.sources_for(split, lang):
        if source.kind != "hf":
            raise ValueError(
                f"task '{task.name}' is not on the Hugging Face hub; pass data_dir with its local files: "
                + "; ".join(local_layout(task)[split])
            )
        rows = _hub_rows(task, source, split, lang)
        examples.extend(hf_rows_to_examples(task, split, lang, rows, source=source))
    return examples


def _hub_rows(task: Task, source: DataSource, split: str, lang: str) -> list[Row]:
    """Rows of `source` for (split, lang), ClassLabel ids decoded to the hub's names."""
    if source.row_format == "xquad_r":  # one pool of all languages' candidates
        rows: list[Row] = []
        for other in task.languages:
            for config in source.configs_for(other):
                rows.extend({**row, "_lang": other} for row in _hub_split(task, source, config, split))
        return rows
    rows = []
    configs = source.configs_for(lang)
    for config in configs:
        try:
            rows.extend(_hub_split(task, source, config, split))
        except ValueError as error:
            # A UD treebank may lack a split (PUD: test only); the language still has it
            # from its other treebanks.
            if len(configs) > 1 and "split" in str(error).lower():
                continue
            raise
    return rows


def _hub_split(task: Task, source: DataSource, config: str | None, split: str) -> list[Row]:
    from datasets import load_dataset

    hub_split = source.hub_split(split)
    try:
        dataset = load_dataset(source.name, config, split=hub_split, revision=source.revision)
    except Exception as error:
        pinned = f" revision={source.revision}" if source.revision else ""
        error.add_note(f"while loading task '{task.name}' {split} from the hub: {source.name} {config or ''} "
                       f"split={hub_split}{pinned}; offline clusters can pass data_dir "
                       "(see xstilts.jobs.tasks.sources.local_layout)")
        raise
    loads = _HUB_LOADS.get()
    if loads is not None:
        loads.append(hub_provenance(dataset, source.name, config, hub_split, source.revision))
    # Label columns of classification/tagging rows come back as the hub's own ClassLabel
    # names (robust to its label order); multiple-choice labels are indices and stay so
    # (super_glue's COPA names them "choice1"/"choice2").
    decode = source.row_format in _DECODED_FORMATS
    decoders = {name: _class_names(feature) if decode else None for name, feature in dataset.features.items()}
    rows = []
    for row in dataset:
        for column, names in decoders.items():
            if names is not None and row.get(column) is not None:
                row[column] = _decode(row[column], names)
        rows.append(row)
    return rows


_DECODED_FORMATS = ("classification", "tags", "ud")


def _class_names(feature: Any) -> tuple[str, ...] | None:
    """ClassLabel names of a column or of its elements (sequence of ClassLabel)."""
    names = getattr(feature, "names", None)
    if names:
        return tuple(names)
    inner = getattr(feature, "feature", None)
    names = getattr(inner, "names", None)
    return tuple(names) if names else None


def _decode(value: Any, names: tuple[str, ...]) -> Any:
    if isinstance(value, list):
        return [_decode(v, names) for v in value]
    if isinstance(value, int) and 0 <= value < len(names):
        return names[value]
    return value  # -1 (no gold label) stays an integer and is dropped by the converter


# --------------------------------------------------------------------------------------
# row converters: hub-shaped rows -> canonical examples

Converter = Callable[[Task, DataSource, str, str, list[Row]], list[Example]]


def _row_id(row: Row, source: DataSource, split: str, lang: str, index: int) -> str:
    for key in ("id", "uid", "idx", "ind", "example_id"):
        if row.get(key) is not None and row.get(key) != "":
            value = str(row[key])
            break
    else:
        value = f"{split}-{lang}-{index}"
    return f"{source.tag}-{value}" if source.tag else value


_LABEL_ALIASES = {"contradictory": "contradiction"}


def _class_label(task: Task, source: DataSource, value: Any) -> Any:
    """A task label name, None (gold withheld) or _DROP (row without a gold label)."""
    if value is None or value == "":
        return None
    names = source.label_names or task.labels
    if isinstance(value, str):
        value = _LABEL_ALIASES.get(value, value)
        if value in task.labels:
            return value
        if value.lstrip("-").isdigit():
            value = int(value)
        else:
            return _DROP
    if isinstance(value, int) and 0 <= value < len(names):
        return names[value]
    return _DROP


def _classification(task: Task, source: DataSource, split: str, lang: str, rows: list[Row]) -> list[Example]:
    columns = source.columns or task.source.columns
    text, text_b, label = columns.get("text", "text"), columns.get("text_b"), columns.get("label", "label")
    examples = []
    for index, row in enumerate(rows):
        gold = _class_label(task, source, row.get(label))
        if gold is _DROP:
            continue
        example: Example = {"id": _row_id(row, source, split, lang, index), "text": row[text]}
        if text_b:
            example["text_b"] = row[text_b]
        example["label"] = gold
        examples.append(example)
    return examples


def _tag_names(source: DataSource, tags: Sequence[Any]) -> list[str]:
    names = source.label_names
    return [names[t] if isinstance(t, int) and 0 <= t < len(names) else str(t) for t in tags]


def _tagging(task: Task, source: DataSource, split: str, lang: str, rows: list[Row]) -> list[Example]:
    columns = source.columns or {}
    tok_col, tag_col = columns.get("tokens", "tokens"), columns.get("tags", "tags")
    examples = []
    for index, row in enumerate(rows):
        tags = row.get(tag_col)
        examples.append({
            "id": _row_id(row, source, split, lang, index),
            "tokens": list(row[tok_col]),
            "tags": None if tags is None else _tag_names(source, tags),
        })
    return examples


def _ud(task: Task, source: DataSource, split: str, lang: str, rows: list[Row]) -> list[Example]:
    """UD sentences as XTREME preprocesses them.

    A hub row (the `universal_dependencies` builder keeps every line `conllu` parses)
    holds a multiword token's surface form (tag `_`) *and* its words, plus empty nodes
    of the enhanced graph. XTREME's conversion (`conllu_to_conll.py
    --replace_subtokens_with_fused_forms`) keeps one token per multiword token, the
    fused form with its head word's tag, and drops empty nodes (`_ud_surface`). Then, as
    `utils_preprocess.py`'s `udpos_preprocess`: sentences whose words are withheld
    ("_", e.g. Arabic-NYUAD) are dropped, zero-width non-joiners and spaces inside words
    removed.
    """
    examples = []
    for row, example in zip(rows, _tagging(task, source, split, lang, rows)):
        if example["tags"] is not None and row.get("head") is not None:
            example["tokens"], example["tags"] = _ud_surface(row, example["tokens"], example["tags"], lang)
        tokens = example["tokens"]
        withheld = sum(token == "_" for token in tokens)
        if withheld and withheld >= len(tokens) - 1:
            continue
        example["tokens"] = ["".join(token.replace("\u200c", "").split(" ")) for token in tokens]
        examples.append(example)
    return examples


UD_HEAD_PRECEDENCE: dict[str, tuple[str, ...]] = {
    "default": ("VERB", "NOUN", "PROPN", "PRON", "ADJ", "NUM", "ADV", "INTJ", "AUX", "ADP", "DET", "PART", "CCONJ",
                "SCONJ", "X", "PUNCT"),
    "es": ("VERB", "AUX", "PRON", "ADP", "DET"),
    "fr": ("VERB", "AUX", "PRON", "NOUN", "ADJ", "ADV", "ADP", "DET", "PART", "SCONJ", "CONJ"),
    "it": ("VERB", "AUX", "ADV", "PRON", "ADP", "DET", "INTJ"),
}
"""`conllu_to_conll.py`'s POSRANKPRECEDENCEDICT (xtreme third_party/ud-conversion-tools):
among a multiword token's words equally close to the root, the first of the best-ranked
tag is its head word (a tag absent from the list ranks last here; the tool would stop)."""


def _absent(value: Any) -> bool:
    return value is None or value in ("None", "_", "")


def _ud_kind(head: Any, deps: Any) -> str:
    """`word`, `range` (a multiword token's line: every column but ID/FORM/MISC is `_`)
    or `empty` (an enhanced-graph empty node `N.1`: no basic head, but enhanced deps)."""
    if not _absent(head):
        return "word"
    return "range" if _absent(deps) else "empty"


def _enhanced_heads(deps: Any) -> list[int]:
    """Integer heads of a DEPS value, as the tool's `parse_deps` keeps them (heads that are
    empty nodes are skipped). The builder stores `str()` of `conllu`'s list of
    (relation, head) pairs; raw CoNLL-U `head:rel|...` is read too."""
    if _absent(deps):
        return []
    if isinstance(deps, str) and deps.startswith("["):
        import ast

        deps = ast.literal_eval(deps)
    if isinstance(deps, str):
        return [int(part.split(":")[0]) for part in deps.split("|") if part.split(":")[0].isdigit()]
    return [int(head) for _, head in deps if isinstance(head, int)]


def _ud_surface(row: Row, tokens: list[str], tags: list[str], lang: str) -> tuple[list[str], list[str]]:
    """(tokens, tags) of one hub row with each multiword token fused and empty nodes dropped."""
    heads, deps = list(row["head"]), list(row.get("deps") or [None] * len(tokens))
    kinds = [_ud_kind(head, dep) for head, dep in zip(heads, deps)]
    if "range" not in kinds and "empty" not in kinds:
        return tokens, tags
    surface = [(tokens[i], kind == "range") for i, kind in enumerate(kinds) if kind != "empty"]
    positions = [i for i, kind in enumerate(kinds) if kind != "empty"]
    lengths = _span_lengths(surface, row.get("text") or "")
    parents = _ud_parents(heads, deps, kinds)
    word_tags = [tags[i] for i, kind in enumerate(kinds) if kind == "word"]
    out_tokens: list[str] = []
    out_tags: list[str] = []
    word = 0  # words before the current surface token (0-based id of the next word)
    spans = iter(lengths)
    index = 0
    while index < len(surface):
        form, is_range = surface[index]
        if not is_range:
            out_tokens.append(form)
            out_tags.append(tags[positions[index]])
            word += 1
            index += 1
            continue
        length = next(spans)
        span = list(range(word + 1, word + 1 + length))  # 1-based word ids
        out_tokens.append(form)
        if span:
            out_tags.append(word_tags[_span_head(span, parents, [word_tags[w - 1] for w in span], lang) - 1])
        else:  # a range with no word after it (malformed): keep its own tag
            out_tags.append(tags[positions[index]])
        word += length
        index += 1 + length
    return out_tokens, out_tags


def _ud_parents(heads: list[Any], deps: list[Any], kinds: list[str]) -> dict[int, set[int]]:
    """Word id -> its heads in the graph the tool builds: the basic head and every
    integer enhanced head (node 0 is the root)."""
    parents: dict[int, set[int]] = {}
    word = 0
    for head, dep, kind in zip(heads, deps, kinds):
        if kind != "word":
            continue
        word += 1
        parents[word] = {int(head), *_enhanced_heads(dep)}
    return parents


def _ancestors(node: int, parents: dict[int, set[int]]) -> int:
    """How many nodes reach `node` (networkx `ancestors`, which the tool counts)."""
    seen: set[int] = set()
    stack = list(parents.get(node, ()))
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        stack.extend(parents.get(current, ()))
    seen.discard(node)
    return len(seen)


def _span_head(span: list[int], parents: dict[int, set[int]], tags: list[str], lang: str) -> int:
    """The word whose tag a fused token keeps (`_choose_spanhead_from_heuristics`): the
    one closest to the root; on a tie, the first of the best-ranked tag."""
    depth = [_ancestors(word, parents) for word in span]
    highest = [index for index, value in enumerate(depth) if value == min(depth)]
    if len(highest) == 1:
        return span[highest[0]]
    ranking = UD_HEAD_PRECEDENCE.get(lang, UD_HEAD_PRECEDENCE["default"])

    def rank(index: int) -> int:
        return ranking.index(tags[index]) if tags[index] in ranking else len(ranking)

    return span[min(highest, key=lambda index: (rank(index), index))]


def _span_lengths(surface: list[tuple[str, bool]], text: str) -> list[int]:
    """How many words each multiword token covers. A hub row has no token ids, so the
    words a range spans are found by aligning the surface forms (words outside ranges
    and the ranges' forms) with the sentence text (UD requires they spell it): the
    shortest span (>= 2 words) that lets the rest of the sentence align. Without an
    alignment (no text), every range spans 2 words, by far the most common case."""

    def skip(cursor: int) -> int:
        while cursor < len(text) and text[cursor].isspace():
            cursor += 1
        return cursor

    def match(form: str, cursor: int) -> int | None:
        cursor = skip(cursor)
        return cursor + len(form) if form and text.startswith(form, cursor) else None

    @functools.lru_cache(maxsize=None)
    def walk(index: int, cursor: int) -> tuple[int, ...] | None:
        while index < len(surface) and not surface[index][1]:
            found = match(surface[index][0], cursor)
            if found is None:
                return None
            index, cursor = index + 1, found
        if index == len(surface):
            return () if skip(cursor) == len(text) else None
        after = match(surface[index][0], cursor)
        if after is None:
            return None
        run = 0
        while index + 1 + run < len(surface) and not surface[index + 1 + run][1]:
            run += 1
        for length in range(2, run + 1):
            rest = walk(index + 1 + length, after)
            if rest is not None:
                return (length,) + rest
        return None

    aligned = walk(0, 0) if text else None
    if aligned is not None:
        return list(aligned)
    lengths = []
    for index, (_, is_range) in enumerate(surface):
        if is_range:
            run = 0
            while index + 1 + run < len(surface) and not surface[index + 1 + run][1]:
                run += 1
            lengths.append(min(2, run))
    return lengths


def _answers(value: Any) -> dict[str, list] | None:
    """SQuAD answers as {"text": [...], "answer_start": [...]}; None when the official
    preprocessing blanked them (a single empty answer text)."""
    if isinstance(value, list):  # SQuAD json: [{"text", "answer_start"}, ...]
        value = {"text": [a["text"] for a in value], "answer_start": [a["answer_start"] for a in value]}
    texts, starts = list(value.get("text", [])), [int(s) for s in value.get("answer_start", [])]
    if texts and all(text == "" for text in texts):
        return None
    return {"text": texts, "answer_start": starts}


def _squad(task: Task, source: DataSource, split: str, lang: str, rows: list[Row]) -> list[Example]:
    return [
        {
            "id": _row_id(row, source, split, lang, index),
            "context": row["context"],
            "question": row["question"],
            "answers": _answers(row["answers"]),
        }
        for index, row in enumerate(rows)
    ]


def _tydiqa(task: Task, source: DataSource, split: str, lang: str, rows: list[Row]) -> list[Example]:
    """The hub's TyDiQA-GoldP mixes languages; ids start with the language's English name."""
    prefix = TYDIQA_LANGUAGE_NAMES[lang] + "-"
    return _squad(task, source, split, lang, [row for row in rows if str(row["id"]).startswith(prefix)])


def _choice_label(value: Any) -> int | None:
    if value is None or value == "" or value == -1:
        return None
    return int(value)


def _copa(task: Task, source: DataSource, split: str, lang: str, rows: list[Row]) -> list[Example]:
    return [
        {
            "id": _row_id(row, source, split, lang, index),
            "context": row["premise"],
            "question": COPA_QUESTIONS[row["question"]],
            "choices": [row["choice1"], row["choice2"]],
            "label": _choice_label(row.get("label")),
        }
        for index, row in enumerate(rows)
    ]


def _siqa(task: Task, source: DataSource, split: str, lang: str, rows: list[Row]) -> list[Example]:
    """Hub rows label the answer "1".."3"; the original jsonl has `correct` "A".."C"."""
    examples = []
    for index, row in enumerate(rows):
        if row.get("correct"):
            label: int | None = "ABC".index(row["correct"])
        else:
            label = None if row.get("label") in (None, "") else int(row["label"]) - 1
        examples.append({
            "id": _row_id(row, source, split, lang, index),
            "context": row["context"],
            "question": row["question"],
            "choices": [row["answerA"], row["answerB"], row["answerC"]],
            "label": label,
        })
    return examples


def _hellaswag(task: Task, source: DataSource, split: str, lang: str, rows: list[Row]) -> list[Example]:
    """Context = the first sentence (`ctx_a`), question = the partial second sentence
    (`ctx_b`) that each ending completes."""
    return [
        {
            "id": _row_id(row, source, split, lang, index),
            "context": row["ctx_a"],
            "question": row["ctx_b"],
            "choices": list(row["endings"]),
            "label": _choice_label(row.get("label")),
        }
        for index, row in enumerate(rows)
    ]


def _commonsenseqa(task: Task, source: DataSource, split: str, lang: str, rows: list[Row]) -> list[Example]:
    examples = []
    for index, row in enumerate(rows):
        keys = list(row["choices"]["label"])
        examples.append({
            "id": _row_id(row, source, split, lang, index),
            "context": "",
            "question": row["question"],
            "choices": list(row["choices"]["text"]),
            "label": keys.index(row["answerKey"]) if row.get("answerKey") else None,
        })
    return examples


def _cosmosqa(task: Task, source: DataSource, split: str, lang: str, rows: list[Row]) -> list[Example]:
    return [
        {
            "id": _row_id(row, source, split, lang, index),
            "context": row["context"],
            "question": row["question"],
            "choices": [row[f"answer{i}"] for i in range(4)],
            "label": _choice_label(row.get("label")),
        }
        for index, row in enumerate(rows)
    ]


def _query(id_: str, text: str, gold: list[str] | None) -> Example:
    return {"id": id_, "text": text, "role": "query", "gold": gold}


def _candidate(id_: str, text: str, **extra: Any) -> Example:
    return {"id": id_, "text": text, "role": "candidate", "gold": [], **extra}


def _tatoeba(task: Task, source: DataSource, split: str, lang: str, rows: list[Row]) -> list[Example]:
    """Line-aligned pairs: sentence i in `lang` (query `<lang>-<i>`) translates English
    sentence i (candidate `en-<i>`). google/xtreme names the sides source/target_sentence,
    mteb's copy sentence1 (the non-English side) and sentence2."""
    queries, candidates = [], []
    for index, row in enumerate(rows):
        foreign = row["source_sentence"] if "source_sentence" in row else row["sentence1"]
        english = row["target_sentence"] if "target_sentence" in row else row["sentence2"]
        queries.append(_query(f"{lang}-{index}", foreign.strip(), [f"en-{index}"]))
        candidates.append(_candidate(f"en-{index}", english.strip()))
    return queries + candidates


def _bucc_hub(task: Task, source: DataSource, split: str, lang: str, rows: list[Row]) -> list[Example]:
    """google/xtreme's bucc18 rows are the gold pairs only: no official ids and none of
    the ~100k non-parallel sentences, so mining among them is far easier than BUCC.
    Comparable numbers need the official files (data_dir)."""
    queries, candidates = [], []
    for index, row in enumerate(rows):
        queries.append(_query(f"{lang}-{index:09d}", row["source_sentence"].strip(), [f"en-{index:09d}"]))
        candidates.append(_candidate(f"en-{index:09d}", row["target_sentence"].strip()))
    return queries + candidates


_SENTENCE_END = re.compile(r"[.!?]+[\"'\u201d\u2019\u00bb)\]]*(?=\s|$)|[\u3002\uff01\uff1f\u0964]+")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of `text`: a rule-based splitter at sentence-final
    punctuation, for SQuAD's training and dev pairs (SQuAD files carry no breaks). Never
    for LAReQA's test pool: it cannot split Thai and differs from XQuAD-R's official
    `sentence_breaks` on many paragraphs (see `_official_breaks`)."""
    spans, position = [], 0
    for match in list(_SENTENCE_END.finditer(text)) + [None]:
        end = match.end() if match else len(text)
        start = position
        while start < end and text[start].isspace():
            start += 1
        if start < end:
            spans.append((start, end))
        position = end
    return spans


def _answer_sentence(context: str, breaks: Sequence[Sequence[int]], start: int) -> int | None:
    for index, (begin, end) in enumerate(breaks):
        if begin <= start < end:
            return index
    return None


def _squad_pairs(task: Task, source: DataSource, split: str, lang: str, rows: list[Row]) -> list[Example]:
    """SQuAD as retrieval pairs: question -> the sentence holding its first answer
    (questions whose answer crosses a sentence break are skipped, as the official code does)."""
    pairs = []
    for index, row in enumerate(rows):
        answers = _answers(row["answers"])
        if not answers or not answers["answer_start"]:
            continue
        breaks = sentence_spans(row["context"])
        sentence = _answer_sentence(row["context"], breaks, answers["answer_start"][0])
        if sentence is None:
            continue
        begin, end = breaks[sentence]
        pairs.append({"id": _row_id(row, source, split, lang, index), "query": row["question"],
                      "positive": row["context"][begin:end]})
    return pairs


def _paragraphs_from_rows(rows: list[Row]) -> dict[str, list[dict]]:
    """Hub XQuAD-R rows (one per question) grouped back into paragraphs per language."""
    by_lang: dict[str, list[dict]] = {}
    for row in rows:
        paragraphs = by_lang.setdefault(row["_lang"], [])
        if not paragraphs or paragraphs[-1]["context"] != row["context"]:
            paragraphs.append({"context": row["context"], "sentence_breaks": row.get("sentence_breaks"), "qas": []})
        paragraphs[-1]["qas"].append({"id": row["id"], "question": row["question"], "answers": row["answers"]})
    return by_lang


LAREQA_NEEDS_BREAKS = (
    "LAReQA's test pool is the answer sentences cut at XQuAD-R's official `sentence_breaks`; the hub copy "
    "(google-research-datasets/xquad_r) drops them and no splitter reproduces them (Thai has no sentence "
    "punctuation), so a pool built without them differs from the official one. Pass data_dir with the "
    "files download_data.sh's download_lareqa leaves: <data_dir>/lareqa/xquad-r/<lang>.json, one per "
    "language ({languages}), from https://github.com/google-research-datasets/lareqa"
)
"""Why LAReQA's test split is never built from rows without the official sentence breaks."""


def _official_breaks(paragraph: dict, lang: str) -> list[tuple[int, int]]:
    """The paragraph's official `sentence_breaks`; a paragraph without them (hub rows)
    is refused rather than split by rule, which would silently change the candidate pool."""
    breaks = paragraph.get("sentence_breaks")
    if not breaks:
        languages = ", ".join(get_task("lareqa").languages)
        raise ValueError(f"LAReQA test ({lang}): a paragraph without sentence_breaks. "
                         + LAREQA_NEEDS_BREAKS.format(languages=languages))
    return [(int(begin), int(end)) for begin, end in breaks]


def _lareqa_examples(paragraphs_by_lang: dict[str, list[dict]], lang: str) -> list[Example]:
    """LAReQA: questions in `lang` against the answer sentences of every language.

    Ids follow the official code: candidate `<lang>_<paragraph number>_<sentence>`, query
    `<question id>_<lang>`; a question's gold is the sentence holding its answer in every
    language (the question id is shared across the 11 parallel languages).
    """
    candidates: list[Example] = []
    answers_of: dict[str, list[str]] = {}
    questions: list[tuple[str, str]] = []
    for other, paragraphs in paragraphs_by_lang.items():
        for number, paragraph in enumerate(paragraphs, start=1):
            context = paragraph["context"]
            breaks = _official_breaks(paragraph, other)
            for position, (begin, end) in enumerate(breaks):
                candidates.append(_candidate(f"{other}_{number}_{position}", context[begin:end],
                                             context=context, lang=other))
            for qa in paragraph["qas"]:
                answers = _answers(qa["answers"])
                if not answers or not answers["answer_start"]:
                    continue
                sentence = _answer_sentence(context, breaks, answers["answer_start"][0])
                if sentence is None:
                    continue
                answers_of.setdefault(qa["id"], []).append(f"{other}_{number}_{sentence}")
                if other == lang:
                    questions.append((qa["id"], qa["question"]))
    queries = [{**_query(f"{qid}_{lang}", text, sorted(answers_of[qid])), "lang": lang} for qid, text in questions]
    return queries + candidates


def _xquad_r(task: Task, source: DataSource, split: str, lang: str, rows: list[Row]) -> list[Example]:
    """XQuAD-R rows (one per question, every language, `_lang` added). The hub's rows
    have no `sentence_breaks`, so they are refused (`LAREQA_NEEDS_BREAKS`); rows that
    carry them (a local copy shaped like the hub's) convert."""
    return _lareqa_examples(_paragraphs_from_rows(rows), lang)


def _local_only(task: Task, source: DataSource, split: str, lang: str, rows: list[Row]) -> list[Example]:
    raise ValueError(f"task '{task.name}' has no hub copy; its rows come only from local files (data_dir)")


_CONVERTERS: dict[str, Converter] = {
    "classification": _classification,
    "tags": _tagging,
    "ud": _ud,
    "squad": _squad,
    "tydiqa": _tydiqa,
    "copa": _copa,
    "siqa": _siqa,
    "hellaswag": _hellaswag,
    "commonsenseqa": _commonsenseqa,
    "cosmosqa": _cosmosqa,
    "tatoeba": _tatoeba,
    "bucc": _bucc_hub,
    "squad_pairs": _squad_pairs,
    "xquad_r": _xquad_r,
    "mewslix": _local_only,
}


# --------------------------------------------------------------------------------------
# local files: the official XTREME / XTREME-R layout

Paths = tuple[str, ...]
"""Relative paths that together hold one split of one language."""


def _official_files(task: Task, split: str, lang: str) -> list[Paths]:
    """The official layout's alternatives for (split, lang), most canonical first."""
    name = task.name
    squad = {"train": "squad/train-v1.1.json", "dev": "squad/dev-v1.1.json"}
    if name in ("xnli", "pawsx", "panx", "udpos"):
        return [(f"{name}/{split}-{lang}.tsv",)]
    if name in ("xquad", "mlqa") and split in squad:
        return [(squad[split],)]
    if name == "xquad":
        return [(f"xquad/xquad.{lang}.json",)]
    if name == "mlqa":
        return [(f"mlqa/MLQA_V1/test/test-context-{lang}-question-{lang}.json",)]
    if name == "tydiqa":
        if split == "train":
            # The original release first: `tydiqa_preprocess` cuts every id of its
            # per-language files to the part after the last "-" (the question's 0/1
            # index), so their ids repeat; download_data.sh moves the original beside them.
            return [(f"tydiqa/tydiqa-goldp-v1.1-train/{TYDIQA_TRAIN_RELEASE}",),
                    ("tydiqa/tydiqa-goldp-v1.1-train/tydiqa.goldp.en.train.json",),
                    ("tydiqa/tydiqa-goldp-v1.1-train/tydiqa.en.train.json",)]
        dev_lang = "en" if split == "dev" else lang
        return [(f"tydiqa/tydiqa-goldp-v1.1-dev/tydiqa.goldp.{dev_lang}.dev.json",)]
    if name == "squad":
        return [(squad.get(split, squad["dev"]),)]
    if name == "squad_v2":
        return [("squad/train-v2.0.json",)] if split == "train" else [("squad/dev-v2.0.json",)]
    if name == "lareqa":
        if split in squad:
            return [(squad[split],)]
        return [tuple(f"lareqa/xquad-r/{other}.json" for other in task.languages)]
    if name == "xcopa":
        file_lang = {"train": "en", "dev": "en"}.get(split, lang)
        stem = {"train": "train", "dev": "val", "test": "test"}[split]
        return [(f"xcopa/{stem}.{file_lang}.jsonl",), (f"xcopa/{stem}-{file_lang}.jsonl",)]
    if name == "socialiqa":
        stem = "trn" if split == "train" else "dev"
        return [(f"siqa/socialIQa_v1.4_{stem}.jsonl",)]
    if name == "tatoeba":
        iso3 = TATOEBA_ISO3.get(lang, "{iso3}" if lang == "{lang}" else lang)  # "{lang}": local_layout
        return [
            (f"tatoeba/tatoeba.{iso3}-eng.{iso3}", f"tatoeba/tatoeba.{iso3}-eng.eng"),
            (f"tatoeba/tatoeba.{lang}-eng.{lang}", f"tatoeba/tatoeba.{lang}-eng.eng"),
            (f"tatoeba/{lang}-en.{lang}", f"tatoeba/{lang}-en.en"),
        ]
    if name == "bucc2018":
        return [(f"bucc2018/{lang}-en.{split}.{lang}", f"bucc2018/{lang}-en.{split}.en")]
    if name == "mewslix":
        if split == "test":
            return _mewslix_test_files(lang)
        return [(f"mewslix/wikipedia_pairs-{split}.jsonl",)]
    if name == "ccg":
        return [(f"ccg/{split}.stagged",)]
    return []


def _generic_files(task: Task, split: str, lang: str) -> list[Paths]:
    stem = f"{task.name}/{split}-{lang}"
    files: list[Paths] = [(f"{stem}.jsonl",), (f"{stem}.tsv",)]
    if task.kind == "span_qa":
        files.append((f"{stem}.json",))
    return files


def _alternatives(task: Task, split: str, lang: str) -> list[Paths]:
    """Official alternatives, then generic ones (a generic path the official layout
    already names, e.g. `xnli/test-de.tsv`, is read the official way)."""
    official = _official_files(task, split, lang)
    return official + [paths for paths in _generic_files(task, split, lang) if paths not in official]


def _found_local(task: Task, split: str, lang: str, root: Path) -> Paths | None:
    """The first alternative whose files all exist (relative paths), or None."""
    for paths in _alternatives(task, split, lang):
        if all((root / path).is_file() for path in paths):
            return paths
    return None


def _load_local(task: Task, split: str, lang: str, root: Path) -> list[Example]:
    official = _official_files(task, split, lang)
    alternatives = _alternatives(task, split, lang)
    paths = _found_local(task, split, lang, root)
    if paths is not None:
        files = [root / path for path in paths]
        if paths in official:
            return _read_official(task, split, lang, files)
        return _read_generic(task, split, lang, files[0])
    expected = " or ".join(" + ".join(str(root / path) for path in paths) for paths in alternatives)
    raise FileNotFoundError(f"task '{task.name}': no local {split} data for language '{lang}'; expected {expected}"
                            + _missing_hint(task, split, lang, root))


_XQUAD_UPSTREAM = "https://github.com/deepmind/xquad/raw/master/xquad.{lang}.json"


def _missing_hint(task: Task, split: str, lang: str, root: Path) -> str:
    """What a user with the official download still lacks: XTREME-R lists XQuAD `ro`,
    but `download_data.sh`'s `download_xquad` fetches only its 11 XTREME languages."""
    if task.name == "xquad" and split == "test" and lang == "ro":
        return ("; XTREME-R's download_data.sh does not fetch xquad.ro.json (its download_xquad loops over "
                "the 11 XTREME languages): download it from github.com/deepmind/xquad "
                f"({_XQUAD_UPSTREAM.format(lang=lang)}) and save it as {root / 'xquad/xquad.ro.json'}")
    return ""


_LOCAL = DataSource("local", "files")


def _read_official(task: Task, split: str, lang: str, files: list[Path]) -> list[Example]:
    name = task.name
    if name in ("xnli", "pawsx"):
        rows = [{"text": r[0], "text_b": r[1], "label": r[2] if len(r) > 2 else None} for r in _tsv(files[0])]
        local = DataSource("local", name, columns={"text": "text", "text_b": "text_b", "label": "label"},
                           label_names=task.source.label_names)
        return _classification(task, local, split, lang, rows)
    if name in ("panx", "udpos"):
        return _tagging(task, _LOCAL, split, lang, _conll(files[0]))
    if name == "lareqa" and split == "test":
        by_lang = {path.stem: _squad_paragraphs(path) for path in files}
        return _lareqa_examples(by_lang, lang)
    if name == "lareqa":
        return _squad_pairs(task, _LOCAL, split, lang, _squad_rows(files[0]))
    if name == "tydiqa" and files[0].name == TYDIQA_TRAIN_RELEASE:
        return _tydiqa(task, _LOCAL, split, lang, _squad_rows(files[0]))
    if task.kind == "span_qa":
        return _unique_ids(_squad(task, _LOCAL, split, lang, _squad_rows(files[0])))
    if name == "xcopa":
        rows = _jsonl(files[0])
        if split == "test" and _xcopa_blanked(files[0], lang, rows):
            rows = [{**row, "label": None} for row in rows]
        return _copa(task, _LOCAL, split, lang, rows)
    if name == "socialiqa":
        return _siqa(task, _LOCAL, split, lang, _jsonl(files[0]))
    if name == "tatoeba":
        return _tatoeba_files(lang, files)
    if name == "bucc2018":
        return _bucc_files(lang, files)
    if name == "mewslix":
        return _mewslix_test(lang, files) if split == "test" else _mewslix_pairs(files[0])
    if name == "ccg":
        return _stagged(files[0], split, lang)
    raise AssertionError(f"no official reader for {name}")  # _official_files and this agree


def _xcopa_blanked(path: Path, lang: str, rows: Sequence[Row]) -> bool:
    """True for the test file `xcopa_preprocess` rewrites: `download_xcopa` renames
    `test.<l>.jsonl` to `test-<l>.jsonl`, then every label becomes the placeholder 0. A
    real test set never has only label 0 (COPA's answers are balanced), so a dash-named
    file with another label is an unprocessed copy whose labels are gold."""
    return path.name == f"test-{lang}.jsonl" and all(row.get("label") == 0 for row in rows)


TYDIQA_TRAIN_RELEASE = "tydiqa-goldp-v1.1-train.json"
"""TyDiQA-GoldP's original training file (all languages, full question ids)."""


def _unique_ids(examples: list[Example]) -> list[Example]:
    """Examples whose ids repeat get `#<position>` appended (every one of them), so
    predictions keyed by id stay one per question: the official per-language TyDiQA
    train files keep only the last "-" part of each id, which repeats."""
    seen: dict[str, int] = {}
    for example in examples:
        seen[example["id"]] = seen.get(example["id"], 0) + 1
    for index, example in enumerate(examples):
        if seen[example["id"]] > 1:
            example["id"] = f"{example['id']}#{index}"
    return examples


def _tsv(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return [row for row in csv.reader(handle, delimiter="\t") if row]


def _jsonl(path: Path) -> list[Row]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _conll(path: Path) -> list[Row]:
    """Sentences of a token<TAB>tag file (tags absent in unlabelled test files)."""
    rows: list[Row] = []
    tokens: list[str] = []
    tags: list[str] = []
    with path.open(encoding="utf-8") as handle:
        for line in list(handle) + [""]:
            line = line.rstrip("\n")
            if not line.strip():
                if tokens:
                    rows.append({"tokens": tokens, "tags": tags if len(tags) == len(tokens) else None})
                tokens, tags = [], []
                continue
            parts = line.split("\t")
            tokens.append(parts[0])
            if len(parts) > 1:
                tags.append(parts[1])
    return rows


def _squad_paragraphs(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        data = json.load(handle)
    return [paragraph for article in data["data"] for paragraph in article["paragraphs"]]


def _squad_rows(path: Path) -> list[Row]:
    """SQuAD-format json flattened to one row per question, as the hub shapes it."""
    return [
        {"id": qa["id"], "context": paragraph["context"], "question": qa["question"],
         "answers": qa.get("answers", [])}
        for paragraph in _squad_paragraphs(path)
        for qa in paragraph["qas"]
    ]


def _lines(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle]


def _tatoeba_files(lang: str, files: list[Path]) -> list[Example]:
    """LASER's files are line-aligned (gold known); XTREME's preprocessed `<l>-en.en`
    is sorted to hide the alignment, so its gold is None."""
    foreign, english = _lines(files[0]), _lines(files[1])
    aligned = files[1].name.endswith(".eng")
    queries = [_query(f"{lang}-{i}", text.strip(), [f"en-{i}"] if aligned else None) for i, text in enumerate(foreign)]
    return queries + [_candidate(f"en-{i}", text.strip()) for i, text in enumerate(english)]


def _bucc_files(lang: str, files: list[Path]) -> list[Example]:
    """BUCC 2018: `<id><TAB><sentence>` per line, gold `<lang id><TAB><en id>` (the
    official script deletes the test gold; then the queries' gold is None)."""
    def sentences(path: Path) -> list[tuple[str, str]]:
        rows: list[tuple[str, str]] = []
        for line in _lines(path):
            if line.strip():
                id_, text = line.split("\t", 1)
                rows.append((id_, text))
        return rows

    gold_file = files[0].with_suffix(".gold")
    gold: dict[str, list[str]] | None = None
    if gold_file.is_file():
        gold = {}
        for line in _lines(gold_file):
            if line.strip():
                source_id, english_id = line.split("\t")[:2]
                gold.setdefault(source_id, []).append(english_id)
    queries = [_query(id_, text, None if gold is None else gold.get(id_, [])) for id_, text in sentences(files[0])]
    return queries + [_candidate(id_, text) for id_, text in sentences(files[1])]


_BRACED = re.compile(r"\{(.*?)\}")


def _mention_query(context: Row, mention: Row) -> str:
    """A mention in its sentence, marked with braces and prefixed by the mention itself,
    the input format of XTREME-R's Mewsli-X baseline."""
    text, span = context["text"], mention["mention_span"]
    begin, end = 0, len(text)
    for sentence in context.get("sentence_spans") or []:
        if sentence["start"] <= span["start"] and span["end"] <= sentence["end"]:
            begin, end = sentence["start"], sentence["end"]
            break
    left = _BRACED.sub(r"(\1)", text[begin:span["start"]])
    right = _BRACED.sub(r"(\1)", text[span["end"]:end])
    return " ".join(f"{span['text']}: {left} {{ {span['text']} }} {right}".split())


def _entity_text(entity: Row) -> str:
    description = entity["description"]
    spans = entity.get("sentence_spans") or [{"start": 0, "end": len(description)}]
    return " ".join(" ".join(description[s["start"]:s["end"]] for s in spans).split())


def _mewslix_pairs(path: Path) -> list[Example]:
    pairs = []
    for record in _jsonl(path):
        mention = record["contextual_mention"]
        pairs.append({"id": str(mention["mention"]["example_id"]),
                      "query": _mention_query(mention["context"], mention["mention"]),
                      "positive": _entity_text(record["entity"])})
    return pairs


_MEWSLIX_CANDIDATES = "mewslix/candidate_set_entities.jsonl"


def _mewslix_test_files(lang: str) -> list[Paths]:
    """Where Mewsli-X's test split lies, most canonical first.

    XTREME-R's `download_mewslix` keeps `candidate_set_entities.jsonl` and
    `wikipedia_pairs-{train,dev}.jsonl`, then `utils_preprocess.py --task mewslix` shards
    `wikinews_mentions-{dev,test}.jsonl` into `wikinews_mentions/<split>-<lang>.jsonl`
    (test `entity_id`s blanked) and `wikinews_labels/<split>-<lang>.json`
    (`{example_id: [QID]}`), and the script deletes the unsharded files. The labels file
    is optional (a copy without it still predicts); the unsharded file of an older
    extraction is read last.
    """
    mentions = f"mewslix/wikinews_mentions/test-{lang}.jsonl"
    return [
        (mentions, _MEWSLIX_CANDIDATES, f"mewslix/wikinews_labels/test-{lang}.json"),
        (mentions, _MEWSLIX_CANDIDATES),
        ("mewslix/wikinews_mentions-test.jsonl", _MEWSLIX_CANDIDATES),
    ]


def _mewslix_labels(path: Path) -> dict[str, list[str]]:
    """`wikinews_labels/<split>-<lang>.json`: example id -> gold QIDs, as evaluate.py reads it."""
    with path.open(encoding="utf-8") as handle:
        data = json.load(handle)
    return {str(key): [str(qid) for qid in value] for key, value in data.items()}


def _mewslix_gold(mention: Row, labelled: Sequence[str] | None) -> list[str] | None:
    """The mention's gold QIDs: from the labels file, else its own `entity_id`; None when
    both are blank, as `utils_preprocess.py` leaves the test split (it blanks `entity_id`
    before writing the labels, so the test labels file holds `[""]`)."""
    gold = [qid for qid in labelled or () if qid]
    if not gold and mention.get("entity_id"):
        gold = [str(mention["entity_id"])]
    return gold or None


def _mewslix_test(lang: str, files: list[Path]) -> list[Example]:
    """WikiNews mentions in `lang` (one context per line with its mentions) against the
    whole candidate set; gold is the mention's WikiData QID (`files`: mentions,
    candidates and, when present, the labels file)."""
    labels = _mewslix_labels(files[2]) if len(files) > 2 else {}
    queries = []
    for record in _jsonl(files[0]):
        context = record["context"]
        if context.get("language") != lang:
            continue
        mentions = record["mentions"] if "mentions" in record else [record["mention"]]
        for mention in mentions:
            example_id = str(mention["example_id"])
            queries.append(_query(example_id, _mention_query(context, mention),
                                  _mewslix_gold(mention, labels.get(example_id))))
    candidates = [_candidate(str(entity["entity_id"]), _entity_text(entity)) for entity in _jsonl(files[1])]
    return queries + candidates


def _stagged(path: Path, split: str, lang: str) -> list[Example]:
    """C&C supertagger format: one sentence per line, tokens `word|POS|category`."""
    examples = []
    for index, line in enumerate(line for line in _lines(path) if line.strip()):
        triples = [token.rsplit("|", 2) for token in line.split()]
        examples.append({"id": f"{split}-{lang}-{index}", "tokens": [t[0] for t in triples],
                         "tags": [t[-1] for t in triples]})
    return examples


# --------------------------------------------------------------------------------------
# local files: generic jsonl / tsv


def _read_generic(task: Task, split: str, lang: str, path: Path) -> list[Example]:
    if path.suffix == ".jsonl":
        examples = _jsonl(path)
    elif path.suffix == ".json":
        return _squad(task, _LOCAL, split, lang, _squad_rows(path))
    else:
        examples = _generic_tsv(task, split, path)
    for index, example in enumerate(examples):
        example["id"] = str(example.get("id", f"{split}-{lang}-{index}"))
    return examples


def _generic_tsv(task: Task, split: str, path: Path) -> list[Example]:
    kind = task.kind
    if kind == "tagging":
        return [{"tokens": row["tokens"], "tags": row["tags"]} for row in _conll(path)]
    rows = _tsv(path)
    if kind == "classification":
        width = 3 if task.is_pair else 2
        examples = []
        for row in rows:
            example: Example = {"text": row[0]}
            if task.is_pair:
                example["text_b"] = row[1]
            label = _class_label(task, task.source, row[width - 1] if len(row) >= width else None)
            if label is _DROP:
                raise ValueError(f"{path}: label '{row[width - 1]}' is not one of {', '.join(task.labels)}")
            example["label"] = label
            examples.append(example)
        return examples
    if kind == "multiple_choice":
        return [{"context": r[0], "question": r[1], "choices": r[2:-1], "label": int(r[-1])} for r in rows]
    if kind == "dual_encoder" and split != "test":
        return [{"id": r[0], "query": r[1], "positive": r[2]} for r in rows]
    if kind in ("retrieval", "dual_encoder"):
        return [{"id": r[0], "role": r[1], "text": r[2], "gold": r[3].split() if len(r) > 3 else []} for r in rows]
    raise ValueError(f"task '{task.name}': {path} — tsv is not a format for {kind} data; use jsonl")
