"""Checkpoints of a training node: torch.distributed.checkpoint folders `step-<n>/`.

Layout under the node's checkpoint URL (a plain path, `file://`, `s3://`, ...)::

    step-<n>/metrics.jsonl   rank 0's training curve up to step n (written first)
    step-<n>/__<r>_0.distcp  DCP shards, one or more per rank
    step-<n>/.metadata       written last by DCP, by rank 0, after every rank's shards

A folder is *complete* when its `.metadata` exists; anything else is the debris of a
process killed mid-save, ignored by `latest()` and deleted after a later save completes.
Retention keeps the newest `keep` complete folders and deletes older ones only after a
newer one is complete, so a kill at any moment leaves at least one complete checkpoint.

What goes into the DCP state dict is the trainer's business (`xstilts.jobs.trainer`); this
module only knows where checkpoints live, when they are complete, and how to write them
(synchronously, or with `dcp.async_save` whose future is waited on and checked before
the next save and at `close()`).

DCP raises `CheckpointException`, a BaseException; here it becomes `CheckpointError`
(an Exception), so that the entry records a failed save as the node's failure rather
than as an interruption.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, cast

import fsspec
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint._fsspec_filesystem import FsspecWriter
from torch.distributed.checkpoint.api import CheckpointException

from xstilts.core.failpoints import failpoint

log = logging.getLogger("xstilts.checkpoint")

# A lone process without a process group is a supported mode here (we pass no_dist), yet
# DCP warns about it on every save and load, also from async saves' worker threads.
warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")

METADATA = ".metadata"
METRICS = "metrics.jsonl"
_STEP_DIR = re.compile(r"^step-(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read."""


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _unfenced() -> None:
    """A checkpoint folder owned by nobody else (tests, a stage run by hand)."""


class _FencedCommit:
    """A DCP storage writer whose commit (`finish`, which writes `.metadata` on rank 0)
    first checks the node's lease: a process that stalled past its lease and was taken
    over must not complete a checkpoint in its successor's folder. Both writes are also
    failpoints, so the fault-injection suite can kill a save between shards and
    `.metadata`."""

    def __init__(self, path: str, fence: Callable[[], None]) -> None:
        super().__init__(path)  # type: ignore[call-arg]
        self._fence = fence

    def write_data(self, plan: Any, planner: Any) -> Any:
        failpoint("checkpoint-shards")
        return super().write_data(plan, planner)  # type: ignore[misc]

    def finish(self, metadata: Any, results: Any) -> None:
        self._fence()
        failpoint("checkpoint-metadata")
        super().finish(metadata, results)  # type: ignore[misc]


class _FencedFsspecWriter(_FencedCommit, FsspecWriter):
    """For URLs (file://, s3://, gs://): the writer DCP picks for them."""


class _FencedFileSystemWriter(_FencedCommit, dcp.FileSystemWriter):
    """For plain paths: the writer DCP picks for them."""


class CheckpointManager:
    """Saves, finds and loads the `step-<n>` checkpoints under one URL.

    Every method that writes or loads is collective: all ranks call it with the same
    arguments. Filesystem bookkeeping (listing, deleting, extra files) is done by rank 0
    and its decisions are broadcast, so that ranks never disagree on which step exists
    even on an eventually consistent object store.
    """

    def __init__(self, url_or_path: str, keep: int = 2, async_save: bool = False,
                 fence: Callable[[], None] = _unfenced) -> None:
        """`fence` raises when this process no longer holds the node's lease
        (`StageContext.fence`): checked before every write that commits or deletes."""
        if keep < 1:
            raise ValueError("keep must be at least 1: a resume needs a checkpoint")
        self.url = url_or_path.rstrip("/")
        self.keep = keep
        self.async_save = async_save
        self.fence = fence
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self._pending: tuple[int, Future[Any]] | None = None
        # DCP coordinates over its own gloo group: an async save runs its collectives in
        # a background thread, which must not interleave with FSDP's on the default group.
        self._group = dist.new_group(backend="gloo") if _distributed() else None
        self._rank = dist.get_rank() if _distributed() else 0

    # ------------------------------------------------------------------ naming

    def step_url(self, step: int) -> str:
        """What `dcp.save` gets as checkpoint_id: a plain path selects its
        FileSystemWriter, a URI (file://, s3://) the fsspec writer."""
        return f"{self.url}/step-{step}"

    def _step_path(self, step: int) -> str:
        return f"{self.root.rstrip('/')}/step-{step}"

    # ------------------------------------------------------------------ discovery

    def _scan(self) -> tuple[list[int], list[int]]:
        """(complete, incomplete) step numbers found in storage, ascending."""
        self.fs.invalidate_cache()
        try:
            entries = self.fs.ls(self.root, detail=False)
        except FileNotFoundError:
            return [], []
        complete: list[int] = []
        incomplete: list[int] = []
        for entry in entries:
            match = _STEP_DIR.match(entry.rstrip("/").rsplit("/", 1)[-1])
            if not match:
                continue
            step = int(match.group(1))
            (complete if self.fs.exists(f"{self._step_path(step)}/{METADATA}") else incomplete).append(step)
        return sorted(complete), sorted(incomplete)

    def _broadcast(self, value: Any) -> Any:
        if self._group is None:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, group=self._group)
        return box[0]

    def complete_steps(self) -> list[int]:
        """Steps with a complete checkpoint, ascending (rank 0's view, on every rank)."""
        steps = self._scan()[0] if self._rank == 0 else None
        return list(self._broadcast(steps))

    def latest(self) -> int | None:
        """The newest complete step, or None: the only checkpoint a resume may use."""
        steps = self.complete_steps()
        return steps[-1] if steps else None

    # ------------------------------------------------------------------ saving

    def save(self, step: int, state: dict[str, Any], files: dict[str, str] | None = None) -> None:
        """Write `state` as `step-<step>/`, with `files` (name -> text) written before the
        shards so that `.metadata` also vouches for them.

        With `async_save`, returns once the state is staged in memory; the upload is
        finished and checked by the next `save`, `wait` or `close`.
        """
        self.wait()
        if self._rank == 0:
            self.fence()
            path = self._step_path(step)
            if self.fs.exists(path):  # debris of a killed save of this same step
                self.fs.rm(path, recursive=True)
            self.fs.makedirs(path, exist_ok=True)
            for name, text in (files or {}).items():
                failpoint("checkpoint-files")
                with self.fs.open(f"{path}/{name}", "w") as handle:
                    handle.write(text)
        if self._group is not None:
            dist.barrier(group=self._group)  # nobody writes shards into a folder being removed
        kwargs = self._dcp_kwargs(step)
        writer = _FencedFsspecWriter if "://" in self.url else _FencedFileSystemWriter
        kwargs["storage_writer"] = writer(self.step_url(step), self.fence)
        try:
            if self.async_save:
                response = dcp.async_save(state, **kwargs)
                # torch >= 2.8 answers an AsyncSaveResponse, whose upload_completion is the
                # save's end; older versions the Future itself.
                future = cast("Future[Any]", getattr(response, "upload_completion", response))
                self._pending = (step, future)
                return
            dcp.save(state, **kwargs)
        except CheckpointException as exc:
            raise CheckpointError(f"saving {self.step_url(step)} failed: {exc}") from exc
        self._after_complete(step)

    def _dcp_kwargs(self, step: int) -> dict[str, Any]:
        """Where DCP reads or writes `step`, and over which group (none: one process)."""
        kwargs: dict[str, Any] = {"checkpoint_id": self.step_url(step)}
        if self._group is not None:
            kwargs["process_group"] = self._group
        else:
            kwargs["no_dist"] = True
        return kwargs

    def wait(self) -> None:
        """Finish the pending async save, raising if it failed, then apply retention."""
        if self._pending is None:
            return
        step, future = self._pending
        self._pending = None
        try:
            future.result()
        except CheckpointException as exc:
            raise CheckpointError(f"async save of {self.step_url(step)} failed: {exc}") from exc
        self._after_complete(step)

    def close(self) -> None:
        """Wait for the last save: a run must not end (or report preemption) before its
        checkpoint is complete."""
        self.wait()

    def _after_complete(self, step: int) -> None:
        """Retention, by rank 0, once `step` is complete on every rank.

        DCP's save returns on every rank only after rank 0 wrote `.metadata`, so the new
        checkpoint is complete here; older complete ones beyond `keep` and incomplete
        folders older than the newest complete one can go.
        """
        if self._rank != 0:
            return
        self.fence()  # a superseded process must not delete its successor's checkpoints
        complete, incomplete = self._scan()
        if step not in complete:
            raise CheckpointError(f"{self.step_url(step)} has no {METADATA} after a successful save")
        doomed = complete[: max(0, len(complete) - self.keep)]
        doomed += [s for s in incomplete if s < complete[-1]]
        for old in doomed:
            log.info("deleting checkpoint %s", self.step_url(old))
            self.fs.rm(self._step_path(old), recursive=True)

    # ------------------------------------------------------------------ loading

    def load(self, step: int, state: dict[str, Any]) -> None:
        """Load `step-<step>` into `state` in place (tensors, DTensors and placeholders
        for plain values; DCP reshards to the current world size)."""
        kwargs = self._dcp_kwargs(step)
        try:
            dcp.load(state, **kwargs)
        except CheckpointException as exc:
            raise CheckpointError(f"loading {self.step_url(step)} failed: {exc}") from exc

    def saved_keys(self, step: int) -> set[str]:
        """Flattened keys stored in a checkpoint (to load only what exists, e.g. the RNG
        of ranks that a run with another world size did not have)."""
        keys = None
        if self._rank == 0:
            reader = _reader(self.step_url(step))
            keys = set(reader.read_metadata().state_dict_metadata)
        return set(self._broadcast(keys))

    def read_file(self, step: int, name: str) -> str | None:
        """An extra file saved beside the shards (rank 0's view, on every rank)."""
        text = None
        if self._rank == 0:
            path = f"{self._step_path(step)}/{name}"
            if self.fs.exists(path):
                with self.fs.open(path, "r") as handle:
                    text = handle.read()
        return self._broadcast(text)


def _reader(checkpoint_id: str) -> dcp.StorageReader:
    """The storage reader DCP itself would choose for this id."""
    if "://" in checkpoint_id:
        from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader

        return FsspecReader(checkpoint_id)
    return dcp.FileSystemReader(checkpoint_id)
