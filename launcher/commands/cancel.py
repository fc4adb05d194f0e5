"""`xstilts cancel`: stop an experiment's running nodes through its executor."""

from __future__ import annotations

from xstilts.launcher.commands.common import FollowProfileOpt, OverrideOpt, SpecArg, open_spec, out


def cancel(spec: SpecArg, override: OverrideOpt = None, profile: FollowProfileOpt = None) -> None:
    """Stop this experiment's running nodes (and its local scheduler); nothing else."""
    experiment = open_spec(spec, override, profile)
    for line in experiment.executor.cancel(experiment):
        out.print(line)
