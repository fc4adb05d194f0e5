"""Every fact about a stage, in one table.

The plan orders nodes by stage, the spec and cluster profiles accept stage names, the
executors decide how many processes a node gets, and the node process decides whether a
stop request means "save and requeue" or "just stop". All of them read this table, so
they cannot disagree (they once did: locally a tune node got `procs_per_node` processes,
on SLURM one task per host).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Processes = Literal["ranks", "one_per_host", "single"]
"""How many processes one node of a stage runs as:
- `ranks`: one torch.distributed rank per GPU (or per `procs_per_node` locally), across
  the job's nodes: FSDP2 training;
- `one_per_host`: one process per host of the allocation (a Ray node each, whose trials
  use that host's CPUs and GPUs); locally one process;
- `single`: one process (prepare, evaluate)."""

StageName = Literal["prepare", "tune", "train-intermediate", "train-target", "evaluate"]
"""A stage as a spec or a profile names it (`resources`, `gpu_hours`, `stages`)."""


@dataclass(frozen=True)
class StageFacts:
    name: StageName
    processes: Processes
    checkpointable: bool
    """Saves its state and asks to be requeued when stopped (training: a DCP checkpoint;
    tune: Ray Tune's experiment state); any other stage is short enough to rerun."""


STAGE_TABLE: tuple[StageFacts, ...] = (
    StageFacts("prepare", processes="single", checkpointable=False),
    StageFacts("tune", processes="one_per_host", checkpointable=True),
    StageFacts("train-intermediate", processes="ranks", checkpointable=True),
    StageFacts("train-target", processes="ranks", checkpointable=True),
    StageFacts("evaluate", processes="single", checkpointable=False),
)
"""In plan order: a stage's nodes only read nodes of stages before it (or of their own)."""

STAGES: tuple[StageName, ...] = tuple(facts.name for facts in STAGE_TABLE)
FACTS: dict[str, StageFacts] = {facts.name: facts for facts in STAGE_TABLE}

PrepareKind = Literal["model", "data", "images"]
"""What a prepare node makes: the pretrained encoder and tokenizer, a task's encoded
data, or a caption dataset's image features."""

STAGE_MODULES: dict[str, str] = {
    "prepare:model": "xstilts.jobs.stages.prepare_model",
    "prepare:data": "xstilts.jobs.stages.prepare_data",
    "prepare:images": "xstilts.jobs.stages.prepare_images",
    "tune": "xstilts.jobs.stages.tune",
    "train-intermediate": "xstilts.jobs.stages.train",
    "train-target": "xstilts.jobs.stages.train",
    "evaluate": "xstilts.jobs.stages.evaluate",
}
"""`stage[:kind]` -> the module in xstilts.jobs.stages whose `run(ctx)` does the work
(named, not imported: this table is read where torch is not available)."""


def facts(stage: str) -> StageFacts:
    return FACTS[stage]


def stage_module(stage: str, kind: str | None = None) -> str:
    """The module implementing a node of `stage` (and `kind`, for prepare)."""
    return STAGE_MODULES[stage if kind is None else f"{stage}:{kind}"]


def is_checkpointable(stage: str) -> bool:
    return FACTS[stage].checkpointable
