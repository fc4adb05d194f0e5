"""Collect an experiment's evaluation results into the tidy frame (`xstilts.analysis.frame.COLUMNS`).

Every analysis starts from this frame, and on a real grid it means reading thousands of
small files, possibly from an object store where each read is a round trip. Two things
keep that cheap:

- the nodes are read through the store's bulk view (`core.index`, the same path as
  `status` and `launch`): a listing per stage, the done index, and parallel reads of
  only what it does not hold;
- a node is immutable once its `DONE` marker exists (keys are content hashes), so the
  rows read from it never change. They are kept in one consolidated cache object in the
  store, `<root>/<experiment>/analysis/rows-cache.parquet`; a later collect reads only
  that object plus the nodes it does not hold yet, and rewrites it only when it learned
  something new.

What is cached is what the nodes say (values, and the wall hours of their attempts); what
depends on the spec or the registry (devices per stage, modality labels) is applied when
the frame is built, so editing `resources` or the registry never leaves stale numbers in
the cache. Torch-free: runs on a login node.
"""

from __future__ import annotations

import io
import json
import logging
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import pandas as pd

from xstilts.analysis.frame import COLUMNS, empty_frame, headline_metric
from xstilts.analysis.table import modality_label
from xstilts.core.atomic import replacing
from xstilts.launcher.experiment import Experiment
from xstilts.core.plan import Node
from xstilts.core.spec import Spec
from xstilts.core.errors import warn
from xstilts.core.index import Snapshot
from xstilts.core.state import STATUSES
from xstilts.core.store import Store

log = logging.getLogger(__name__)

OnRead = Callable[[int, int], None]
"""(nodes read so far, nodes to read): `collect_frame`'s progress callback."""


CACHE_FILE = "rows-cache.parquet"
CACHE_VERSION = "2"
"""Bumped when the cached columns change meaning; an older cache is then rebuilt."""
_CACHE_META = b"xstilts.rows-cache"

CACHED_COLUMNS: tuple[str, ...] = (
    "intermediate", "target", "seed", "language", "metric", "value", "key", "train_hours", "eval_hours",
    "gold_withheld",
)
"""Per row, what its evaluate node (and the cell's train-target nodes) say: immutable once done."""

FORMATS: tuple[str, ...] = ("csv", "parquet", "json")
_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".json": "json"}

_BLOCKING_ORDER = ("failed", "cancelled", "interrupted", "preempted", "running", "queued", "pending")
"""Which status describes an unfinished cell when several of its nodes are unfinished:
a problem that blocks it first, then progress (running before waiting)."""
assert set(_BLOCKING_ORDER) == set(STATUSES) - {"done"}

MISSING_COLUMNS: tuple[str, ...] = ("intermediate", "target", "seed", "status", "stage", "key")


# -- the frame ------------------------------------------------------------------------------
def collect_frame(experiment: Experiment, workers: int = 16, use_cache: bool = True,
                  on_read: OnRead | None = None) -> pd.DataFrame:
    """The tidy frame of every finished evaluate node of the experiment.

    One row per (evaluate node, language, metric key of that language's scores), in plan
    order then language and metric. Unfinished evaluate nodes contribute nothing (see
    `missing_cells`). With `use_cache=False` neither the rows cache nor the done index
    is read or written. `workers` is kept for callers; the store's bulk view
    (`core.index`) bounds its own parallel reads.
    `on_read(read, total)` is called as each new node's rows are assembled (a progress bar).
    """
    evaluations = experiment.plan.evaluations()
    store = experiment.store
    path = cache_path(experiment)
    cached = read_cache(store, path) if use_cache else _empty_cached()
    known = set(cached["key"].unique())
    todo = [node for node in evaluations if node.key not in known]
    fresh = rows_of(experiment.snapshot(use_index=use_cache), todo, on_read) if todo else _empty_cached()
    combined = _concat([cached, fresh])
    if use_cache and not fresh.empty:
        write_cache(store, path, combined)
    return build_frame(combined, evaluations, experiment.spec)


def cache_path(experiment: Experiment) -> str:
    return experiment.store.experiment_path(experiment.spec.name, "analysis", CACHE_FILE)


def build_frame(cached: pd.DataFrame, evaluations: list[Node], spec: Spec) -> pd.DataFrame:
    """`COLUMNS` rows of the plan's evaluate nodes from cached rows: costs from the spec's
    devices, labels from the registry. Rows of nodes outside the plan (an older spec of
    the same experiment name) stay in the cache but not in the frame."""
    order = {node.key: index for index, node in enumerate(evaluations)}
    rows = cached[cached["key"].isin(order)].copy()
    if rows.empty:
        return empty_frame()
    (train_devices, eval_devices), unit = stage_devices(spec)
    rows["cost_hours"] = rows["train_hours"] * train_devices + rows["eval_hours"] * eval_devices
    rows["cost_unit"] = unit
    labels = {name: modality_label(name) for name in rows["intermediate"].unique()}
    rows["modality"] = rows["intermediate"].map(labels)
    rows["control_of"] = rows["intermediate"].map({name: control_of(name) for name in labels})
    rows["_order"] = rows["key"].map(order)
    rows = rows.sort_values(["_order", "language", "metric"], kind="stable")
    return typed(rows[list(COLUMNS)].reset_index(drop=True))


def stage_devices(spec: Spec) -> tuple[tuple[int, int], str]:
    """((train-target devices, evaluate devices), unit). GPU-hours when either stage uses
    GPUs (a CPU-only stage then costs 0 GPU-hours: mixing CPU- and GPU-hours in one sum
    would mean nothing), else CPU-hours."""
    train, evaluate = spec.resources_for("train-target"), spec.resources_for("evaluate")
    if train.gpus > 0 or evaluate.gpus > 0:
        return (train.gpus, evaluate.gpus), "gpu"
    return (train.cpus, evaluate.cpus), "cpu"


def control_of(intermediate: str) -> str | None:
    """The multimodal task a control intermediate controls for (None otherwise, also for
    the baseline and mixtures, which are not registry tasks)."""
    from xstilts.core.tasks import TASKS

    task = TASKS.get(intermediate)
    return task.control_of if task is not None else None


def typed(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with the dtypes of `empty_frame()`, so frames from every path (fresh, cached,
    read back from a file) compare equal."""
    frame = frame.astype(empty_frame().dtypes.to_dict())
    if "control_of" in frame:
        column = frame["control_of"].astype(object)
        frame["control_of"] = column.where(column.notna() & (column != ""), None)  # "" and NaN from files
    return frame


# -- reading nodes ---------------------------------------------------------------------------
def rows_of(snap: Snapshot, nodes: list[Node], on_read: OnRead | None = None) -> pd.DataFrame:
    """Cached-column rows of those evaluate `nodes` that the snapshot shows done: their
    results and the states of their cells' train-target nodes (done too: they are
    inputs) come with the snapshot, so this reads nothing."""
    parts = []
    for index, node in enumerate(nodes):
        part = node_rows_of(snap, node)
        if part is not None:
            parts.append(part)
        if on_read is not None:
            on_read(index + 1, len(nodes))
    if not parts:
        return _empty_cached()
    columns = {name: list(chain.from_iterable(part[name] for part in parts)) for name in CACHED_COLUMNS}
    return pd.DataFrame(columns).astype(_empty_cached().dtypes.to_dict())


def node_rows_of(snap: Snapshot, node: Node) -> dict[str, list[Any]] | None:
    """The rows of one evaluate node (as columns), or None when it is not done."""
    status, state = snap.statuses.get(node.key, ("pending", {}))
    result = snap.results.get(node.key)
    if status != "done" or result is None:
        return None  # not done, or its result.json is torn (named in a warning; a launch reruns it)
    if not _scores_valid(result.get("languages")) or not _withheld_valid(result.get("gold_withheld")):
        warn(f"the result.json of {node.stage}/{node.key} has no per-language scores; the cell is left out")
        return None
    train_hours = sum(wall_hours(snap.statuses.get(n.key, ("pending", {}))[1]) for n in train_chain(node))
    return node_rows(result, node, train_hours, wall_hours(state))


def _scores_valid(languages: Any) -> bool:
    """`{language: {metric: number}}`, the shape the evaluate stage writes."""
    return isinstance(languages, dict) and all(
        isinstance(scores, dict) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scores.values())
        for scores in languages.values())


def _withheld_valid(withheld: Any) -> bool:
    """Absent (results from before withheld gold was recorded) or a list of languages."""
    return withheld is None or (isinstance(withheld, list) and all(isinstance(lang, str) for lang in withheld))


def train_chain(evaluate: Node) -> list[Node]:
    """The train-target nodes of an evaluate node's cell: its `model` input and, for a target
    with a first fine-tuning (XCOPA after SIQA), that node's `init`, and so on. Retrieval
    targets evaluate the intermediate encoder (or the pretrained model): none."""
    chain = []
    node = evaluate.inputs.get("model")
    while node is not None and node.stage == "train-target":
        chain.append(node)
        node = node.inputs.get("init")
    return chain


def wall_hours(state: dict[str, Any] | None) -> float:
    """Wall hours of a node's attempts (ended - started); an attempt without `ended` (killed
    without a word) counts 0: its length is unknown."""
    total = 0.0
    for attempt in (state or {}).get("attempts", []):
        started, ended = attempt.get("started"), attempt.get("ended")
        if isinstance(started, (int, float)) and isinstance(ended, (int, float)):
            total += max(0.0, ended - started)
    return total / 3600.0


def node_rows(result: dict[str, Any], node: Node, train_hours: float, eval_hours: float) -> dict[str, list[Any]]:
    """One row per (language, metric key) of an evaluate result, as column lists (a
    DataFrame per node would cost more than reading the node from a local disk), and one
    row per withheld language (headline metric, value NaN, `gold_withheld` True)."""
    languages, metrics, values, withheld = [], [], [], []
    for language, scores in sorted(result["languages"].items()):
        for metric, value in sorted(scores.items()):
            languages.append(language)
            metrics.append(metric)
            values.append(float(value))
            withheld.append(False)
    for language in sorted(result.get("gold_withheld") or ()):
        languages.append(language)
        metrics.append(headline_metric(str(node.task)))  # what tables and statistics look for
        values.append(math.nan)
        withheld.append(True)
    n = len(values)
    return {
        "intermediate": [node.intermediate] * n, "target": [node.task] * n, "seed": [node.seed] * n,
        "language": languages, "metric": metrics, "value": values, "key": [node.key] * n,
        "train_hours": [train_hours] * n, "eval_hours": [eval_hours] * n, "gold_withheld": withheld,
    }


def _empty_cached() -> pd.DataFrame:
    dtypes = {"seed": "int64", "value": "float64", "train_hours": "float64", "eval_hours": "float64",
              "gold_withheld": "bool"}
    return pd.DataFrame({name: pd.Series(dtype=dtypes.get(name, "object")) for name in CACHED_COLUMNS})


def _concat(parts: Iterable[pd.DataFrame]) -> pd.DataFrame:
    parts = [part for part in parts if not part.empty]
    if not parts:
        return _empty_cached()
    if len(parts) == 1:
        return parts[0]
    return pd.concat(parts, ignore_index=True)[list(CACHED_COLUMNS)]


# -- the cache -------------------------------------------------------------------------------
def read_cache(store: Store, path: str) -> pd.DataFrame:
    """The cached rows, or none when there is no cache or it is unreadable or of another
    version (it is only an accelerator: rebuilding it is always correct)."""
    import pyarrow.parquet as pq

    try:
        data = store.fs.cat_file(path)
    except FileNotFoundError:
        return _empty_cached()
    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as exc:  # a truncated or foreign file: rebuild
        log.warning("ignoring unreadable rows cache %s: %s", path, exc)
        return _empty_cached()
    meta = table.schema.metadata or {}
    if meta.get(_CACHE_META) != CACHE_VERSION.encode() or tuple(table.column_names) != CACHED_COLUMNS:
        log.warning("ignoring rows cache %s of another version", path)
        return _empty_cached()
    return table.to_pandas().astype(_empty_cached().dtypes.to_dict())


def write_cache(store: Store, path: str, rows: pd.DataFrame) -> None:
    """Replace the cache atomically. A store we may not write (read-only credentials) only
    costs the speed-up, so a failure is logged, not raised."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(rows[list(CACHED_COLUMNS)], preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), _CACHE_META: CACHE_VERSION.encode()})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    try:
        store.write_bytes(path, buffer.getvalue())
    except OSError as exc:
        log.warning("could not write rows cache %s: %s", path, exc)


# -- unfinished cells ------------------------------------------------------------------------
def missing_cells(experiment: Experiment, statuses: dict[str, tuple[str, dict[str, Any]]] | None = None) -> pd.DataFrame:
    """One row per cell whose evaluate node is not done: (intermediate, target, seed,
    status, stage, key). The status is the most telling one among the evaluate node and
    its unfinished inputs (`_BLOCKING_ORDER`); `stage` and `key` name that node, so a
    cell waiting on a failed intermediate training says so. `statuses` (from
    `experiment.statuses()`) may be passed when the caller already has them; else the
    store's view of the experiment's last snapshot is used (`collect_frame` just took one)."""
    if statuses is None:
        statuses = experiment.statuses(need_cluster=False, fresh=False)
    rows = []
    for node in experiment.plan.evaluations():
        if statuses[node.key][0] == "done":
            continue
        blocker = _blocking_node(node, statuses)
        rows.append({"intermediate": node.intermediate, "target": node.task, "seed": node.seed,
                     "status": statuses[blocker.key][0], "stage": blocker.stage, "key": blocker.key})
    frame = pd.DataFrame(rows, columns=list(MISSING_COLUMNS))
    return frame.astype({"seed": "int64"}) if not frame.empty else frame


def _blocking_node(evaluate: Node, statuses: dict[str, tuple[str, dict[str, Any]]]) -> Node:
    """The unfinished node (the evaluate node or an input, nearest first) with the most
    telling status."""
    rank = {status: i for i, status in enumerate(_BLOCKING_ORDER)}
    best, seen, frontier = evaluate, {evaluate.key}, [evaluate]
    while frontier:
        following = []
        for node in frontier:
            status = statuses.get(node.key, ("pending", {}))[0]
            if status != "done" and rank.get(status, len(rank)) < rank.get(statuses[best.key][0], len(rank)):
                best = node
            for dep in node.inputs.values():
                if dep.key not in seen:
                    seen.add(dep.key)
                    following.append(dep)
        frontier = following
    return best


# -- files -----------------------------------------------------------------------------------
def infer_format(path: str | Path, fmt: str | None = None) -> str:
    """`fmt`, or the format the file's suffix names; ValueError naming the choices."""
    return format_of(path, fmt, FORMATS, _SUFFIXES)


def format_of(path: str | Path, fmt: str | None, formats: Sequence[str], suffixes: Mapping[str, str]) -> str:
    """`fmt` (one of `formats`), or the format the file's suffix names in `suffixes`;
    ValueError naming the choices. The one rule of every analysis command writing a file."""
    if fmt is None:
        suffix = Path(str(path)).suffix.lower()
        if suffix not in suffixes:
            raise ValueError(f"cannot tell the format of '{path}' from its suffix; "
                             f"name one of {', '.join(formats)} (suffixes {', '.join(suffixes)})")
        return suffixes[suffix]
    if fmt not in formats:
        raise ValueError(f"unknown format '{fmt}'; valid formats: {', '.join(formats)}")
    return fmt


def frame_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The frame as JSON-ready dicts (native ints and floats; NaN and missing as None)."""
    records = []
    for row in frame.to_dict("records"):
        records.append({name: _plain(value) for name, value in row.items()})
    return records


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def write_frame(frame: pd.DataFrame, path: str | Path, fmt: str | None = None) -> None:
    """Write the frame as csv, parquet or json (a list of records). `path` "-" writes to
    stdout (format csv unless given). Raises ValueError for an unknown format."""
    fmt = infer_format(path, fmt if fmt is not None or str(path) != "-" else "csv")
    if str(path) == "-":
        _write_stream(frame, fmt)
        return
    with replacing(path) as tmp:
        if fmt == "csv":
            frame.to_csv(tmp, index=False)
        elif fmt == "parquet":
            frame.to_parquet(tmp, index=False)
        else:
            tmp.write_text(json.dumps(frame_records(frame), indent=1) + "\n")


def _write_stream(frame: pd.DataFrame, fmt: str) -> None:
    if fmt == "csv":
        frame.to_csv(sys.stdout, index=False)
    elif fmt == "parquet":
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        sys.stdout.buffer.write(buffer.getvalue())
        sys.stdout.buffer.flush()
    else:
        sys.stdout.write(json.dumps(frame_records(frame), indent=1) + "\n")


def read_frame(path: str | Path, fmt: str | None = None) -> pd.DataFrame:
    """A frame written by `write_frame`, with the tidy dtypes back. CSV is read without
    pandas' NA guessing: "nan" (Min Nan) and "NA" are language codes, not missing values."""
    fmt = infer_format(path, fmt)
    if fmt == "csv":
        missing = ["", "nan", "NaN"]
        frame = pd.read_csv(path, keep_default_na=False, na_values={"value": missing, "cost_hours": missing},
                            dtype={"seed": "int64", "value": "float64", "cost_hours": "float64"},
                            converters={"gold_withheld": _csv_bool})
    elif fmt == "parquet":
        frame = pd.read_parquet(path)
    else:
        frame = pd.DataFrame(json.loads(Path(path).read_text()), columns=list(COLUMNS))
    if frame.empty:
        return empty_frame()
    if "gold_withheld" not in frame:  # written before the column existed: every row scored
        frame["gold_withheld"] = False
    return typed(frame[list(COLUMNS)])


def _csv_bool(text: str) -> bool:
    """pandas writes booleans as True/False; anything else is a malformed file."""
    if text not in ("True", "False"):
        raise ValueError(f"gold_withheld must be True or False, not {text!r}")
    return text == "True"
