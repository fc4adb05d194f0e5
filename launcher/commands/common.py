"""What every command shares: the consoles, the common options, opening an experiment.

Every command validates the spec, the storage URL and the cluster profile before it
touches storage; a problem with the user's input prints one message and exits with 2.
Nothing here imports torch, so commands start instantly on a login node.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from xstilts.core.plan import Node
from xstilts.launcher.experiment import Experiment, RecordUse, open_experiment

PIPED_WIDTH = 400
"""Columns of output that goes to a file or a pipe. Rich assumes 80 there, which cuts a
paper grid's table (ten or twelve targets) to ellipses; a file has no width to respect."""


def _width() -> int | None:
    """None (the terminal's width) on a terminal or with COLUMNS set; else `PIPED_WIDTH`."""
    if "COLUMNS" in os.environ or sys.stdout.isatty():
        return None
    return PIPED_WIDTH


out = Console(highlight=False, width=_width())
err = Console(stderr=True, highlight=False, soft_wrap=True)

SpecArg = Annotated[str, typer.Argument(help="experiment spec YAML")]
OverrideOpt = Annotated[
    Optional[list[str]], typer.Option("--override", "-o", help="override a spec value: key.path=value (repeatable)")
]
LongOverrideOpt = Annotated[
    Optional[list[str]], typer.Option("--override", help="override a spec value: key.path=value (repeatable)")
]
"""For the analysis commands whose -o is their output (as in `collect -o FILE`)."""
ProfileOpt = Annotated[Optional[str], typer.Option("--profile", "-p", help="cluster profile name or YAML path")]
FollowProfileOpt = Annotated[Optional[str], typer.Option(
    "--profile", "-p", help="cluster profile name or YAML path (default: the one the experiment was launched with)")]
"""For the commands that follow a launch: the launch record supplies the profile; an
explicit one must agree with it."""
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def open_spec(spec: str, overrides: list[str] | None, profile: str | None = None,
              reads_store: bool = True, records: RecordUse = "follow", storage_optional: bool = False,
              cluster_optional: bool = False) -> Experiment:
    """The experiment, validated (`open_experiment`); `reads_store=False` for a command
    that never touches the storage (`plan`), so it works offline.

    By default the command follows the experiment's newest launch (its profile and
    overrides: `launcher.launch_record`), and says which on stderr. `cluster_optional`
    (`status`): an unreachable cluster shows the store's view and says so."""
    experiment = open_experiment(spec, overrides or None, profile, reads_store=reads_store,
                                 records=records if reads_store else "none", storage_optional=storage_optional)
    experiment.cluster_optional = cluster_optional
    for note in experiment.notes:
        err.print(f"[dim]{escape(note)}[/dim]")
    return experiment


def node_tasks(node: Node) -> str:
    """What a node trains or evaluates, for tables: 'intermediate -> target' or one task."""
    if node.stage in ("train-target", "evaluate"):
        return f"{node.intermediate} -> {node.task}"
    return node.task or "(model)"
