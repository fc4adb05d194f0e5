"""What every stage function receives, and the contract between the launcher and jobs.

A stage function has the signature ``run(ctx: StageContext[ItsConfig]) -> dict``. It
reads its inputs from local directories, writes everything it produces into
``ctx.out_dir`` and returns the metrics that become the node's ``result.json``. It
commits nothing itself: ``xstilts.jobs.entry`` downloads the inputs, uploads ``out_dir``
to the node folder, writes ``result.json`` and finally the ``DONE`` marker, so a stage
cannot half-commit a node.

State that must outlive the process (checkpoints, a search's state, features encoded
chunk by chunk) is the exception: a stage writes it under `ctx.node_url(...)`, inside the
node's folder, where the next attempt finds it.

This module is torch-free.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic

from xstilts.core.nodes import ConfigT, NodeRecord


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


CHECKPOINTS_DIR = "checkpoints"
"""The node folder's subfolder of training checkpoints (DCP, `step-<n>/`)."""


@dataclass
class StageContext(Generic[ConfigT]):
    """Everything a stage needs to run one node.

    Generic in the node's config model: a stage declares the one it runs
    (`run(ctx: StageContext[PrepareDataConfig])`) and reads `ctx.config` typed. The entry
    parses `node.json` with the model of the node's stage (`core.nodes.parse_node_record`)
    and runs the module of the same stage (`core.stages.stage_module`), both keyed by
    `stage[:kind]`.
    """

    node: NodeRecord[ConfigT]
    """The node record (``node.json``): stage, kind, task, seed, key, config, inputs."""
    out_dir: Path
    """Local directory whose whole content becomes the node's folder in the store."""
    inputs: dict[str, Path]
    """Input name (``model``, ``data``, ``init``) -> local directory with that node's files."""
    log: logging.Logger
    node_folder_url: str | None = None
    """fsspec URL of the node's folder in the store (None: a stage run by hand, whose
    state lives only as long as the process). Read through `node_url`."""
    stop: threading.Event = field(default_factory=threading.Event)
    """Set when the preemption/timeout signal arrives: a checkpointable stage saves a
    checkpoint at the current step and raises `Preempted`."""
    checkpoint: CheckpointPolicy = field(default_factory=CheckpointPolicy)
    rank: int = 0
    """This process's rank; only rank 0's `out_dir` is uploaded."""
    world_size: int = 1
    store_url: str | None = None
    """The store's root URL, for work that runs in other processes (tune trials on Ray
    workers fetch their inputs through it)."""
    job_id: str = ""
    """The SLURM job id (or a local stand-in): seeds per-job choices such as Ray's ports."""
    fence: Callable[[], None] = field(default=lambda: None)
    """Raises (`core.lease.LeaseLost`) once this process's lease was taken over: called
    before a stage commits state that outlives it (a checkpoint's `.metadata`, deleting
    old checkpoints), so a stalled process never overwrites its successor's work."""

    @property
    def config(self) -> ConfigT:
        return self.node.config

    def node_url(self, *parts: str) -> str | None:
        """Where state that must survive a restart lives: a URL inside this node's folder
        in the store (training checkpoints, Ray Tune's experiment state, the image
        features written chunk by chunk), so that the next attempt finds it. Everything
        else goes to `out_dir`, uploaded once the stage has finished. None when the node
        has no folder in a store."""
        if self.node_folder_url is None:
            return None
        return "/".join([self.node_folder_url.rstrip("/"), *(part.strip("/") for part in parts if part)])
