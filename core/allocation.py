"""What this process was given: its CPUs, its rank among the node's processes.

Read from the environment the scheduler (SLURM), torchrun or the local runner set, in
one place, so that the launcher (which decides how many processes run side by side) and
the jobs (which size thread pools and process groups) count the same way. Torch-free.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal


def env_int(name: str, default: int) -> int:
    """A non-negative integer variable, or `default` when unset or not a number."""
    value = os.environ.get(name, "").strip()
    return int(value) if value.isdigit() else default


def usable_cpus() -> int:
    """CPU cores this process may run on: the affinity mask (which SLURM and cgroups
    set), or every core where the platform has no masks."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def allocation_cpus(tasks_on_host: int = 1) -> int:
    """The cores the `tasks_on_host` processes of this job on this host may use together:
    the usable cores, capped by SLURM's grant (SLURM_CPUS_PER_TASK per task), because a
    cluster that does not enforce affinity shows every core of a node whose other
    cores belong to other jobs."""
    usable = usable_cpus()
    granted = env_int("SLURM_CPUS_PER_TASK", 0)
    return min(usable, granted * max(1, tasks_on_host)) if granted > 0 else usable


def local_world_size() -> int:
    """Processes of this job on this host, from the launcher's environment.

    torchrun sets LOCAL_WORLD_SIZE; under SLURM, SLURM_NTASKS_PER_NODE (or, for a
    single-node allocation, SLURM_NTASKS). A plain process is alone: 1.
    """
    for name in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE", "SLURM_NTASKS"):
        value = os.environ.get(name, "")
        head = value.split("(")[0].split(",")[0]  # SLURM may write "2(x3)"
        if head.isdigit() and int(head) > 0:
            return int(head)
    return 1


@dataclass(frozen=True)
class ProcessPlace:
    """This process's rank among the processes of one node's run, before any process
    group exists (so that only rank 0 takes the node's lease)."""

    rank: int
    world_size: int
    source: Literal["torchrun", "slurm", "single"]
    """torchrun-style variables (torchrun, the local runner, or submitit's export), a
    multi-task SLURM step (whose variables still need exporting), or a lone process."""


def process_place() -> ProcessPlace:
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return ProcessPlace(env_int("RANK", 0), env_int("WORLD_SIZE", 1), "torchrun")
    if env_int("SLURM_NTASKS", 1) > 1 and "SLURM_PROCID" in os.environ:
        return ProcessPlace(env_int("SLURM_PROCID", 0), env_int("SLURM_NTASKS", 1), "slurm")
    return ProcessPlace(0, 1, "single")


def process_rank() -> tuple[int, int]:
    """(rank, world size) of this process (see `process_place`)."""
    place = process_place()
    return place.rank, place.world_size
