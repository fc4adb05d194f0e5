"""Executors: the one place that knows how a profile's nodes run (see `base.Executor`)."""

from __future__ import annotations

from xstilts.launcher.executors.base import Executor, LaunchOutcome, LaunchRequest
from xstilts.launcher.profiles import LocalProfile, SlurmProfile

__all__ = ["Executor", "LaunchOutcome", "LaunchRequest", "executor_for"]


def executor_for(profile: LocalProfile | SlurmProfile) -> Executor:
    """The executor of a profile. Imported on demand: SLURM's side needs submitit."""
    if isinstance(profile, SlurmProfile):
        from xstilts.launcher.executors.slurm import SlurmExecutor

        return SlurmExecutor(profile)
    from xstilts.launcher.executors.local import LocalExecutor

    return LocalExecutor(profile)
