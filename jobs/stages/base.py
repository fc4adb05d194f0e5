"""What every stage function receives, and the contract between the launcher and jobs.

A stage function has the signature ``run(ctx: StageContext) -> dict``. It reads its
inputs from local directories, writes everything it produces into ``ctx.out_dir`` and
returns the metrics that become the node's ``result.json``. It never touches the store:
``xstilts.jobs.entry`` downloads the inputs, uploads ``out_dir`` to the node folder, writes
``result.json`` and finally the ``DONE`` marker, so a stage cannot half-commit a node.

This module is torch-free: the launcher imports it to know the stage names.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class Preempted(BaseException):
    """Raised by a stage that saved a checkpoint after `ctx.stop` was set.

    The entry records the node as preempted and exits with `EXIT_REQUEUE`, so that the
    executor (the local runner, or submitit on SLURM) runs it again; the next attempt
    resumes from that checkpoint. A BaseException so that no `except Exception` in a
    library swallows it.
    """


@dataclass(frozen=True)
class CheckpointPolicy:
    """How often a training stage checkpoints. Not part of node keys: resume is exact,
    so the policy changes how much work a preemption costs, never the result.

    Read from the environment (`XSTILTS_CHECKPOINT_EVERY`, `_KEEP`, `_ASYNC`), which the
    launcher sets from the spec's `checkpointing` section (`xstilts.core.spec.Checkpointing.env`), so it reaches jobs on any
    executor without being pickled into them.
    """

    every_steps: int = 0
    """Save every N optimizer steps; 0 saves only when preempted (and never otherwise)."""
    keep: int = 2
    """Complete checkpoints kept; older ones are deleted after a newer one is complete."""
    async_save: bool = False
    """Use `dcp.async_save`; the upload is finished and checked before the next save."""

    @classmethod
    def from_env(cls, env: dict[str, str]) -> CheckpointPolicy:
        return cls(
            every_steps=int(env.get("XSTILTS_CHECKPOINT_EVERY", 0)),
            keep=max(1, int(env.get("XSTILTS_CHECKPOINT_KEEP", 2))),
            async_save=env.get("XSTILTS_CHECKPOINT_ASYNC", "0").lower() in ("1", "true", "yes"),
        )


@dataclass
class StageContext:
    """Everything a stage needs to run one node."""

    node: dict[str, Any]
    """The node record (``node.json``): stage, kind, task, seed, key, config, inputs."""
    out_dir: Path
    """Local directory whose whole content becomes the node's folder in the store."""
    inputs: dict[str, Path]
    """Input name (``model``, ``data``, ``init``) -> local directory with that node's files."""
    log: logging.Logger
    checkpoint_url: str | None = None
    """fsspec URL (or plain local path) of the node's `checkpoints/` folder in the store:
    checkpoints written there survive the process and are found again on restart."""
    stop: threading.Event = field(default_factory=threading.Event)
    """Set when the preemption/timeout signal arrives: a checkpointable stage saves a
    checkpoint at the current step and raises `Preempted`."""
    checkpoint: CheckpointPolicy = field(default_factory=CheckpointPolicy)
    rank: int = 0
    """This process's rank; only rank 0's `out_dir` is uploaded."""
    world_size: int = 1
    store_url: str | None = None
    """The store's root URL, for stages whose work runs in other processes (tune trials
    on Ray workers fetch their inputs through it, the search writes its progress)."""
    job_id: str = ""
    """The SLURM job id (or a local stand-in): seeds per-job choices such as Ray's ports."""

    @property
    def config(self) -> dict[str, Any]:
        return self.node["config"]
