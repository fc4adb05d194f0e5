"""What files each node has, for a whole stage at once, and bounded parallel reads.

Why: asking the store about a node file by file (is DONE there? read state.json, list
the lease folder, ...) costs a request per question, one after the other. On the paper
plan (1,299 nodes) that was 6,495 sequential requests for one `status`: 33 s on a local
S3 endpoint, over 6 minutes at 50 ms per request. One recursive listing of
`nodes/<stage>/` answers every existence question of that stage in one paginated LIST
per 1,000 objects, and carries each object's size and ETag (mtime locally), which is
what tells a changed file (`NodeFiles.fingerprint`). What must be read (a state, a
result, a live lease's owner) is then read by a bounded pool of threads: fsspec
backends are safe to call from several threads, and s3fs runs the calls concurrently on
its event loop.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable, Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from xstilts.core.lease import lease_generation
from xstilts.core.store import DONE, Store

READ_WORKERS = 32
"""Reads in flight at once: enough to hide a 50 ms round trip behind 31 others, few
enough that a login node and the store are not flooded (S3 clients allow as many
connections: `core.object_store`)."""

T = TypeVar("T")
R = TypeVar("R")


def fingerprint(info: dict[str, Any]) -> str:
    """Size and version stamp of a listed file (ETag on S3, the MD5 on GCS, mtime locally,
    creation time in memory): a file rewritten with other content lists with another
    fingerprint."""
    stamp = (info.get("ETag") or _gcs_md5(info) or info.get("mtime") or info.get("LastModified")
             or info.get("created"))
    return f"{info.get('size')}:{stamp}"


def _gcs_md5(info: dict[str, Any]) -> str | None:
    """A GCS object's MD5 as hex, the form of an S3 ETag (`core.commit_record` compares
    it with the MD5 a DONE record holds), from the base64 `md5Hash` gcsfs lists; for an
    object without one (composed of parts) its generation, which every rewrite changes."""
    md5 = info.get("md5Hash")
    if isinstance(md5, str) and md5:
        try:
            return base64.b64decode(md5, validate=True).hex()
        except (ValueError, binascii.Error):
            pass
    generation = info.get("generation")
    return f"generation {generation}" if generation else None


@dataclass
class NodeFiles:
    """The files a listing found in one node folder: top-level names, `lease/...` and
    `logs/...` names (checkpoints and predictions are not kept), each with its fingerprint."""

    stage: str
    key: str
    files: dict[str, str] = field(default_factory=dict)

    def has(self, name: str) -> bool:
        return name in self.files

    @property
    def committed(self) -> bool:
        """DONE and result.json are there (whether the result is readable is a read)."""
        return DONE in self.files and "result.json" in self.files

    def fingerprint(self) -> str:
        """What a finished node's cached record depends on: DONE, result.json, state.json."""
        return "|".join(f"{name}={self.files.get(name, '-')}" for name in (DONE, "result.json", "state.json"))

    def log_names(self) -> list[str]:
        """The node's logs in the store (`logs/<name>.log`), oldest first (`xstilts logs`)."""
        return sorted(name[len("logs/"):] for name in self.files
                      if name.startswith("logs/") and name.endswith(".log"))

    def newest_lease(self) -> int | None:
        """The highest lease generation with an owner file, or None (never leased)."""
        generations = [g for g in (lease_generation(n[len("lease/"):]) for n in self.files if n.startswith("lease/"))
                       if g is not None]
        return max(generations) if generations else None


KEPT_FOLDERS = ("lease/", "logs/")
"""Subfolders whose files a stage listing keeps: leases (is a holder live?) and logs
(`status` shows a failed node's log tail with one ranged read, no listing of its own)."""

SHARD_ABOVE = 100
"""A stage with more nodes than this is listed in parallel shards on stores that list
by prefix (`Store.lists_by_prefix`), one per first character of its keys (hex: at most
16): the pages of one listing come one after the other, the shards side by side."""


def list_stage(store: Store, stage: str, prefix: str = "") -> dict[str, NodeFiles]:
    """key -> NodeFiles for every node folder under `nodes/<stage>/` (whose key starts
    with `prefix`) that holds a file."""
    folder = store.path("nodes", stage)
    if store.is_local:
        return _list_local_stage(folder, stage, prefix)
    start = folder + "/"
    nodes: dict[str, NodeFiles] = {}
    for name, info in store.find(folder, prefix).items():
        if not name.startswith(start):
            continue
        key, _, inner = name[len(start):].partition("/")
        if not inner or ("/" in inner and not inner.startswith(KEPT_FOLDERS)):
            continue
        nodes.setdefault(key, NodeFiles(stage, key)).files[inner] = fingerprint(info)
    return nodes


def _list_local_stage(folder: str, stage: str, prefix: str) -> dict[str, NodeFiles]:
    """`list_stage` on a local disk: each node folder and its lease and log folders are
    read, not walked into (checkpoints, models and Ray's state can hold thousands of files)."""
    nodes: dict[str, NodeFiles] = {}
    try:
        folders = [entry for entry in os.scandir(folder) if entry.name.startswith(prefix) and entry.is_dir()]
    except FileNotFoundError:
        return {}
    for entry in folders:
        files = NodeFiles(stage, entry.name)
        pending = [(entry.path, "")]
        while pending:
            inner, where = pending.pop()
            try:
                children = list(os.scandir(inner))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for child in children:
                if child.is_file():
                    stat = child.stat()
                    files.files[where + child.name] = f"{stat.st_size}:{stat.st_mtime_ns}"
                elif not where and f"{child.name}/" in KEPT_FOLDERS:
                    pending.append((child.path, f"{child.name}/"))
        if files.files:
            nodes[entry.name] = files
    return nodes


def list_stages(store: Store, keys: Mapping[str, Collection[str]],
                workers: int = READ_WORKERS) -> dict[tuple[str, str], NodeFiles]:
    """(stage, key) -> NodeFiles for the stages of `keys` (stage -> the plan's keys of
    that stage, which say how to shard a big stage), all listings concurrently."""
    jobs: list[tuple[str, str]] = []
    for stage in sorted(keys):
        big = store.lists_by_prefix and len(keys[stage]) > SHARD_ABOVE
        jobs.extend((stage, shard) for shard in (sorted({key[:1] for key in keys[stage]}) if big else [""]))
    found: dict[tuple[str, str], NodeFiles] = {}
    for (stage, _), nodes in zip(jobs, in_parallel(lambda job: list_stage(store, *job), jobs, workers)):
        found.update(((stage, key), files) for key, files in nodes.items())
    return found


def in_parallel(call: Callable[[T], R], items: Iterable[T], workers: int = READ_WORKERS) -> list[R]:
    """`call` on every item, at most `workers` at once, results in the items' order."""
    items = list(items)
    if len(items) <= 1 or workers <= 1:
        return [call(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(call, items))
