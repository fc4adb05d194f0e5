"""Which folders under `data_dir` a task reads, and a signature of their files for keys.

Why: a prepare node's key must change when a local file it reads changes (a re-run of
the official download script, a fixed file), and so must every key downstream; nothing
else may change. The plan is built on a login node, torch-free and often, so the
signature is a stat, not a read: relative path, size and mtime (ns) of every file under
the task's folders, hashed. Content hashes would read gigabytes of UD or Mewsli-X on
every `xstilts status`.

The exact files a task reads are `xstilts.jobs.tasks.sources`' knowledge (the official
XTREME layout, then the generic `<task>/<split>-<lang>.jsonl|tsv`), and core may not
import jobs. What core needs is coarser and stable: the top-level folders those paths
live in, which is the task's name plus the shared folders of the official layout
(`squad/` for the English training data of XQuAD, MLQA and LAReQA, `siqa/` for SocialIQA).
A test checks every path `sources` lists against `task_folders`, so a new layout that
leaves these folders fails there. Hashing whole folders is deliberately a little wide:
an unrelated file in `xnli/` also changes XNLI's key (hidden files are left out), which
costs a re-run but never reuses a stale result.

Image-caption datasets: only their split files (`<dataset>/<split>.jsonl`, which list
every image's path and captions) are signed. Stat'ing 100k+ image files on every plan is
not cheap; an image replaced in place under the same name is therefore not detected.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from xstilts.core.captions import get_caption_dataset, is_generated
from xstilts.core.tasks import Task

SHARED_FOLDERS: dict[str, tuple[str, ...]] = {
    "xquad": ("squad",),
    "mlqa": ("squad",),
    "lareqa": ("squad",),
    "squad_v2": ("squad",),
    "socialiqa": ("siqa",),
}
"""Folders of the official layout a task reads besides `<data_dir>/<task name>/`."""

SIGNATURE_LENGTH = 16


@dataclass(frozen=True, order=True)
class FileStamp:
    """One local file as the signature sees it (path relative to data_dir, '/'-separated)."""

    path: str
    size: int
    mtime_ns: int


def task_folders(task: Task) -> tuple[str, ...]:
    """Top-level folders under data_dir that `task`'s local files live in."""
    if task.source.kind == "captions":
        return (task.source.name,)
    return (task.name, *SHARED_FOLDERS.get(task.name, ()))


def caption_split_files(dataset: str, splits: tuple[str, ...]) -> tuple[str, ...]:
    """The split files of a caption dataset's local format (`jobs.multimodal.captions`)."""
    return tuple(f"{dataset}/{split}.jsonl" for split in splits)


def folder_stamps(data_dir: str | Path, folders: tuple[str, ...]) -> list[FileStamp]:
    """Every non-hidden file under `data_dir/<folder>` for each folder, sorted; folders
    that do not exist contribute nothing (planning never fails on missing data:
    `xstilts data check` reports it)."""
    root = Path(data_dir)
    stamps: set[FileStamp] = set()
    for folder in folders:
        top = root / folder
        if not top.is_dir():
            continue
        for current, dirs, files in os.walk(top):
            dirs[:] = [name for name in dirs if not name.startswith(".")]
            for name in files:
                if name.startswith("."):
                    continue
                path = Path(current) / name
                stamps.add(_stamp(root, path))
    return sorted(stamps)


def file_stamps(data_dir: str | Path, paths: tuple[str, ...]) -> list[FileStamp]:
    """Stamps of the named files (relative to data_dir) that exist, sorted."""
    root = Path(data_dir)
    return sorted(_stamp(root, root / path) for path in paths if (root / path).is_file())


def _stamp(root: Path, path: Path) -> FileStamp:
    stat = path.stat()
    return FileStamp(path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns)


def signature(stamps: list[FileStamp]) -> str | None:
    """A short hex digest of the stamps; None when there are none (so that a config
    built while no file exists keeps the key it had before signatures existed)."""
    if not stamps:
        return None
    digest = hashlib.sha256()
    for stamp in sorted(stamps):
        digest.update(f"{stamp.path}\t{stamp.size}\t{stamp.mtime_ns}\n".encode())
    return digest.hexdigest()[:SIGNATURE_LENGTH]


def task_signature(task: Task, data_dir: str | Path) -> str | None:
    """The signature of the local files `task` reads under `data_dir` (see the module
    docstring); None for synthetic and generated data, which have no files."""
    if task.source.kind == "synthetic" or (task.source.kind == "captions" and is_generated(task.source.name)):
        return None
    if task.source.kind == "captions":
        return caption_signature(task.source.name, data_dir)
    return signature(folder_stamps(data_dir, task_folders(task)))


def caption_signature(dataset: str, data_dir: str | Path) -> str | None:
    """The signature of a caption dataset's split files under `data_dir`."""
    if is_generated(dataset):
        return None
    spec = get_caption_dataset(dataset)
    return signature(file_stamps(data_dir, caption_split_files(spec.name, spec.splits)))
