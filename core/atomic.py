"""Replacing a local file in one step, so that a reader or a crash never meets half of it.

The folder store's files and the analysis outputs (tables, figures, reports, leaderboard
files) go through `replacing`: the content is written under a temporary name beside the
target and renamed over it only once it is complete. A failed write leaves the previous
file as it was and no temporary file behind. (A stage's own files in its node folder
need no such care one by one: the node counts only once its DONE marker is written.)
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to; on a clean exit it is renamed
    over `path` (creating the parent folders first), on an error it is removed.

    The temporary name keeps `path`'s suffix, so writers that pick a format from the
    extension (matplotlib's `savefig`) still see `.png` or `.svg`.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.tmp-{uuid.uuid4().hex[:8]}{target.suffix}")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_durably(path: str | os.PathLike[str], data: bytes) -> None:
    """`data` to `path` through `replacing`, synced to disk before the rename, so that
    after a power loss the file holds the old content or the new."""
    with replacing(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
