"""Stage `prepare` (kind `data`): load and tokenize one task once for the whole grid.

Input `model` is the prepare-model node (its tokenizer decides the token ids). Output:
`<out_dir>/data/<split>/<lang>/` with the head's feature columns (Arrow) and the
canonical examples (`examples.jsonl`), `data/meta.json`, and the gold of every test
language in the official XTREME layout (`gold/<task>/test-<lang>.<ext>`), so that
`xstilts score` can compare submissions with it. Training and evaluation nodes of this
task, for every intermediate task and seed, read these files instead of re-tokenizing.
The result records the data's provenance: per hub split loaded, the revision asked for
and resolved (`sources.hub_provenance`); the pinned `data_revision` and local
`data_files` signature of the config.

A split whose gold the source withholds (the official layout's test files) is prepared
all the same, to be predicted, but has no gold file; result and meta list such splits
under `gold_withheld` (`{split: [languages]}`), and any choice the loader made (TyDiQA's
English dev held out of train) under `notes` (`{split: {lang: {"note", ...extra}}}`).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from xstilts.core.nodes import PrepareDataConfig
from xstilts.core.progress import job_progress
from xstilts.jobs import data
from xstilts.jobs.heads import head_for
from xstilts.jobs.modeling import MODEL_SUBDIR, quiet_progress_bars
from xstilts.jobs.stages.base import StageContext
from xstilts.jobs.tasks import sources
from xstilts.core.tasks import get_task

GOLD_SUBDIR = "gold"


def run(ctx: StageContext[PrepareDataConfig]) -> dict[str, Any]:
    from transformers import AutoConfig, AutoTokenizer

    quiet_progress_bars()
    task = get_task(ctx.config.task)
    max_seq_length = ctx.config.max_seq_length
    model_dir = ctx.inputs["model"] / MODEL_SUBDIR
    positions = AutoConfig.from_pretrained(model_dir).max_position_embeddings
    # XLM-R numbers positions from pad_token_id + 1, so two embeddings are never used.
    if max_seq_length > positions - 2:
        raise ValueError(
            f"max_seq_length {max_seq_length} exceeds what the encoder can embed ({positions - 2} tokens)"
        )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    started = time.perf_counter()
    with sources.recording_hub_loads() as hub_loads:
        loaded = data.load_splits(task, ctx.config.data_dir, ctx.config.data_revision)
    examples = {split: {lang: part.examples for lang, part in by_lang.items()} for split, by_lang in loaded.items()}
    withheld = withheld_languages(loaded)
    if task.kind == "tagging" and not task.labels:  # open tag set (CCG): from the training data
        task = replace(task, labels=data.open_tagset(examples["train"]["en"]))
    head = head_for(task)
    out = ctx.out_dir / data.DATA_SUBDIR
    out.mkdir(parents=True, exist_ok=True)
    if task.kind == "image_text":
        _bind_images(ctx, head, out)
    counts: dict[str, dict[str, int]] = {}
    features: dict[str, dict[str, int]] = {}
    total = sum(len(rows) for by_lang in examples.values() for rows in by_lang.values())
    # tokenizing a big task (MNLI's 393k pairs, 40 PAN-X languages) takes minutes: the job's
    # log says how far it is, one (split, language) part at a time
    with job_progress(f"prepare {task.name}: examples tokenized", total=total, log=ctx.log) as bar:
        for split, by_lang in examples.items():
            for lang, rows in by_lang.items():
                if not rows:
                    raise ValueError(f"task {task.name}: no {split} examples for language '{lang}'")
                given = len(rows)
                rows = head.expand(rows, split)
                columns = head.encode(rows, tokenizer, max_seq_length, split)
                data.save_split(out, split, lang, columns, rows)
                counts.setdefault(split, {})[lang] = len(rows)
                features.setdefault(split, {})[lang] = len(columns["input_ids"])
                if split == "test" and lang not in withheld.get("test", []):
                    write_gold(task.name, lang, head.references(rows), ctx.out_dir / GOLD_SUBDIR)
                bar.advance(given)
    data.write_meta(
        out,
        {
            "task": task.name,
            "kind": task.kind,
            "labels": list(task.labels),
            "metric": task.metric,
            "max_seq_length": max_seq_length,
            "counts": counts,
            "features": features,
            "gold_withheld": withheld,
            "notes": loader_notes(loaded),
        },
    )
    ctx.log.info("prepared %s: %s in %.1fs", task.name, counts, time.perf_counter() - started)
    if withheld:
        ctx.log.info("gold withheld (predicted, not scored): %s", withheld)
    return {"task": task.name, "counts": counts, "features": features, "gold_withheld": withheld,
            "notes": loader_notes(loaded), **_provenance(ctx.config, hub_loads)}


def _provenance(config: PrepareDataConfig, hub_loads: list[dict[str, Any]]) -> dict[str, Any]:
    """Where the examples came from, for the result: per hub dataset, config and split
    the revision asked for and the one resolved (with the table's fingerprint and row
    count); for local data the signature of the files the key was computed from."""
    provenance: dict[str, Any] = {}
    if hub_loads:
        provenance["hub"] = hub_loads
    if config.data_revision is not None:
        provenance["data_revision"] = config.data_revision
    if config.data_files is not None:
        provenance["data_files"] = config.data_files
    return provenance


def withheld_languages(loaded: dict[str, dict[str, sources.LoadedSplit]]) -> dict[str, list[str]]:
    """`{split: [languages whose gold is withheld]}`, splits without any left out."""
    withheld = {split: [lang for lang, part in by_lang.items() if part.gold_withheld]
                for split, by_lang in loaded.items()}
    return {split: langs for split, langs in withheld.items() if langs}


def loader_notes(loaded: dict[str, dict[str, sources.LoadedSplit]]) -> dict[str, dict[str, dict[str, Any]]]:
    """`{split: {lang: {"note": ..., **extra}}}` for the splits the loader noted a choice on."""
    notes: dict[str, dict[str, dict[str, Any]]] = {}
    for split, by_lang in loaded.items():
        for lang, part in by_lang.items():
            if part.note:
                notes.setdefault(split, {})[lang] = {"note": part.note, **part.extra}
    return notes


def _bind_images(ctx: StageContext[PrepareDataConfig], head: Any, out: Any) -> None:
    """Image-caption tasks: the pooled features of the dataset's images (input `images`,
    a prepare-images node) go beside the prepared data, for pairing and for training;
    captions are cut so that they and the image prefix fit `max_seq_length`."""
    from xstilts.jobs.multimodal.features import read_features

    head.configure_prefix(ctx.config.prefix_length)
    if "images" not in ctx.inputs:
        raise ValueError(f"task {ctx.config.task} needs an `images` input (the image features node)")
    features = read_features(str(ctx.inputs["images"] / "features.zarr"))
    head.bind_images(features.ids, features.pooled)
    head.save_images(out)


def write_gold(task: str, lang: str, references: Any, out_dir: Any) -> None:
    """The gold of one test language in the official submission layout."""
    from xstilts.core.official import write_official

    write_official(task, lang, references, out_dir, gold=True)
