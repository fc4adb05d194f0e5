"""Every node's status for a whole plan from a few requests: listings, the done index,
and parallel reads of only what changed. The one path behind `status`, `launch`,
relaunch and `analysis collect` (through `Experiment.statuses`).

How (`snapshot`):
1. One recursive listing per stage (`core.listing`) says which nodes have DONE,
   result.json, state.json and lease files, with each file's fingerprint.
2. A finished node never changes (its key is a content hash), so its state and result
   are kept in one object per experiment, the done index
   `<root>/<experiment>/index/done.json`. A record is used only when the listing shows
   the node committed (DONE and result.json) with the very fingerprints the record was
   made from: a node whose files were deleted, rewritten or re-run is read again. The
   listing is the truth, the index only spares reads.
3. Everything else that matters is read by a bounded thread pool: the state of nodes
   that have one, the result of newly finished nodes (a torn one means not done, as in
   `core.state.node_done`), the owner and heartbeat of leases not released.
4. The index is rewritten (atomically, one PUT or a rename) when it learned something;
   a missing, torn, foreign or stale index is rebuilt from the store, and a store we
   may not write only costs the speed-up.

The statuses are exactly `core.state.node_status`'s, node by node (tested side by side):
the rule itself is `core.state.derive_status`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from xstilts.core.commit_record import CommitRecord, may_hold_record, parse_marker
from xstilts.core.lease import lease_info, lease_paths
from xstilts.core.listing import READ_WORKERS, NodeFiles, in_parallel, list_stages
from xstilts.core.state import MISSING_DONE, MISSING_RESULT, derive_status, state_from
from xstilts.core.store import DONE, Store

log = logging.getLogger(__name__)

INDEX_VERSION = 1
"""Bumped when a record's meaning changes; an index of another version is rebuilt."""

NodeStatuses = dict[str, tuple[str, dict[str, Any]]]


class PlanNode(Protocol):
    """What the snapshot needs of a plan node (`core.plan.Node`)."""

    @property
    def stage(self) -> str: ...

    @property
    def key(self) -> str: ...


@dataclass
class DoneRecord:
    """A finished node as the index keeps it: what it was read from, its state and result."""

    fingerprint: str
    state: dict[str, Any]
    result: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "state": self.state, "result": self.result}

    @classmethod
    def from_json(cls, value: Any) -> DoneRecord | None:
        if (isinstance(value, dict) and isinstance(value.get("fingerprint"), str)
                and isinstance(value.get("state"), dict) and isinstance(value.get("result"), dict)):
            return cls(value["fingerprint"], value["state"], value["result"])
        return None


@dataclass
class Snapshot:
    """The store's view of a plan at one moment."""

    statuses: NodeStatuses
    """key -> (status, state), as `core.state.node_status` gives them."""
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    """key -> result.json of every done node."""
    reads: int = 0
    """Files read (not counting listings and the index): what the index saved shows here."""
    listed: dict[str, NodeFiles] = field(default_factory=dict)
    """key -> the node's files as the listing found them (its logs, for `status`)."""
    records: dict[str, DoneRecord] = field(default_factory=dict)
    """The done index as this snapshot left it ('stage/key' -> record): handed to the
    next snapshot of the same process (`known`), it spares reading the index again."""


def index_path(store: Store, experiment: str) -> str:
    return store.experiment_path(experiment, "index", "done.json")


def read_index(store: Store, path: str) -> dict[str, DoneRecord]:
    """'stage/key' -> record; empty when the index is absent, torn, foreign or of another
    version (it is rebuilt: rebuilding is always correct). A bad record is dropped alone."""
    data = store.read_json(path)  # a torn file is named in a warning there
    if data is None:
        return {}
    nodes = data.get("nodes")
    if data.get("version") != INDEX_VERSION or not isinstance(nodes, dict):
        log.warning("ignoring done index %s of another version; it is rebuilt", store.url_of(path))
        return {}
    records = {ref: DoneRecord.from_json(value) for ref, value in nodes.items()}
    return {ref: record for ref, record in records.items() if record is not None}


def write_index(store: Store, path: str, records: dict[str, DoneRecord]) -> None:
    """Replace the index atomically; a failure (read-only credentials) is logged only."""
    body = {"version": INDEX_VERSION, "nodes": {ref: records[ref].to_json() for ref in sorted(records)}}
    try:
        store.write_bytes(path, json.dumps(body, separators=(",", ":"), default=str).encode())
    except OSError as exc:
        log.warning("could not write the done index %s: %s", store.url_of(path), exc)


def snapshot(store: Store, experiment: str, nodes: Sequence[PlanNode], workers: int = READ_WORKERS,
             use_index: bool = True, known: dict[str, DoneRecord] | None = None) -> Snapshot:
    """Every node's (status, state), and the results of the done ones (module docstring).
    With `use_index=False` the index is neither read nor written. `known` (the `records`
    of an earlier snapshot of this process: a live view refreshing) stands in for the
    index object, which is then not read; its records are checked against the listing
    like the index's."""
    path = index_path(store, experiment)
    keys: dict[str, set[str]] = {}
    for node in nodes:
        keys.setdefault(node.stage, set()).add(node.key)
    if use_index and known is not None:
        listed, index = list_stages(store, keys, workers), dict(known)
    elif use_index:  # the index is read while the stages are listed: one more request in flight
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(read_index, store, path)
            listed = list_stages(store, keys, workers)
            index = pending.result()
    else:
        listed, index = list_stages(store, keys, workers), {}

    plan: list[tuple[PlanNode, NodeFiles, DoneRecord | None]] = []
    wanted: list[tuple[str, bool]] = []  # (path, as JSON)
    for node in nodes:
        files = listed.get((node.stage, node.key)) or NodeFiles(node.stage, node.key)
        record = index.get(f"{node.stage}/{node.key}")
        if record is not None and not (files.committed and record.fingerprint == files.fingerprint()):
            record = None  # stale: the node's files changed since it was indexed
        plan.append((node, files, record))
        if record is None and files.files:  # a node without files (never started) has nothing to read
            wanted.extend(_reads_for(store, files))
    contents = dict(zip(wanted, in_parallel(lambda want: _read(store, *want), wanted, workers)))
    # A committed node's DONE usually carries its state and result (`core.commit_record`);
    # the files themselves are read only where it does not (an older marker) or where
    # the listing shows them changed since.
    markers: dict[str, CommitRecord] = {}
    fallback: list[tuple[str, bool]] = []
    for node, files, record in plan:
        if record is None and files.committed and may_hold_record(files.files):
            node_dir = store.node_path(node.stage, node.key)
            marker = parse_marker(contents.get((f"{node_dir}/{DONE}", False)))  # type: ignore[arg-type]
            if marker is not None and marker.matches(files.files):
                markers[node.key] = marker
            else:
                fallback.extend(_file_reads(node_dir, files))
    contents.update(zip(fallback, in_parallel(lambda want: _read(store, *want), fallback, workers)))

    snap = Snapshot(statuses={}, reads=len(wanted) + len(fallback),
                    listed={node.key: files for node, files, _ in plan})
    asked = {f"{node.stage}/{node.key}" for node in nodes}
    # records of nodes not asked about (another spec of this experiment, a subset) are kept
    records = {ref: record for ref, record in index.items() if ref not in asked}
    for node, files, record in plan:
        if record is None and not files.files:  # never started: pending, nothing read (most of a new grid)
            snap.statuses[node.key] = derive_status(state_from(None), MISSING_DONE, None)
            continue
        node_dir = store.node_path(node.stage, node.key)
        indexable = True
        if record is None and node.key in markers:  # as listed: state.json is whole
            marker = markers[node.key]
            record = DoneRecord(files.fingerprint(), state_from(marker.state), marker.result)
        elif record is None:
            record = _done_record(node_dir, files, contents)
            # a torn state.json stays out of the index, so that every reader names it
            # until the next write repairs it (as a one-by-one read would)
            indexable = not (files.has("state.json") and contents.get((f"{node_dir}/state.json", True)) is None)
        if record is not None:
            if indexable:
                records[f"{node.stage}/{node.key}"] = record
            snap.statuses[node.key] = ("done", dict(record.state))  # callers may annotate it
            snap.results[node.key] = record.result
            continue
        state = state_from(contents.get((f"{node_dir}/state.json", True)))  # type: ignore[arg-type]
        missing = MISSING_DONE if not files.has(DONE) else MISSING_RESULT
        snap.statuses[node.key] = derive_status(state, missing, _lease(store, node_dir, files, contents))
    if use_index and _changed(index, records):
        write_index(store, path, records)
    snap.records = records
    return snap


def _reads_for(store: Store, files: NodeFiles) -> list[tuple[str, bool]]:
    """The files of a node not served by the index that its status needs."""
    node_dir = store.node_path(files.stage, files.key)
    with_record = files.committed and may_hold_record(files.files)
    reads = [(f"{node_dir}/{DONE}", False)] if with_record else _file_reads(node_dir, files)
    generation = files.newest_lease()
    if generation is not None and not files.has(f"lease/{generation:06d}.released"):
        owner, _, beat = lease_paths(node_dir, generation)
        reads.append((owner, True))
        if files.has(f"lease/{generation:06d}.heartbeat"):
            reads.append((beat, False))
    return reads


def _file_reads(node_dir: str, files: NodeFiles) -> list[tuple[str, bool]]:
    """state.json and (when committed) result.json, as far as the listing shows them."""
    reads = [(f"{node_dir}/state.json", True)] if files.has("state.json") else []
    if files.committed:
        reads.append((f"{node_dir}/result.json", True))
    return reads


def _read(store: Store, path: str, as_json: bool) -> dict[str, Any] | str | None:
    return store.read_json(path) if as_json else store.read_text(path)


def _done_record(node_dir: str, files: NodeFiles, contents: dict[tuple[str, bool], Any]) -> DoneRecord | None:
    """The record of a node the listing shows committed and whose result reads whole."""
    if not files.committed:
        return None
    result = contents.get((f"{node_dir}/result.json", True))
    if not isinstance(result, dict):
        return None  # torn: not done (`core.state.node_done`); a launch runs it again
    return DoneRecord(files.fingerprint(), state_from(contents.get((f"{node_dir}/state.json", True))), result)


def _lease(store: Store, node_dir: str, files: NodeFiles, contents: dict[tuple[str, bool], Any]) -> Any:
    generation = files.newest_lease()
    if generation is None:
        return None
    owner, _, beat = lease_paths(node_dir, generation)
    released = files.has(f"lease/{generation:06d}.released")
    text = contents.get((beat, False))
    return lease_info(generation, contents.get((owner, True)), released, text if isinstance(text, str) else None,
                      store.url_of(beat))


def _changed(old: dict[str, DoneRecord], new: dict[str, DoneRecord]) -> bool:
    return old.keys() != new.keys() or any(old[ref].fingerprint != record.fingerprint for ref, record in new.items())
