"""What every command shares: the consoles, the common options, opening an experiment.

Every command validates the spec, the storage URL and the cluster profile before it
touches storage; a problem with the user's input prints one message and exits with 2.
Nothing here imports torch, so commands start instantly on a login node.
"""

from __future__ import annotations

import os
import sys
from enum import Enum
from typing import Annotated, Any, Optional, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from xstilts.core.errors import UserError, did_you_mean
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


out = Console(highlight=False, markup=False, width=_width())
err = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)
"""Both consoles read no markup: what they print is node keys, task names, paths and log
lines, and rich reads `[e4578a5c]` as a style tag and drops it (every key that starts
with a-f). Style is given as data instead: `styled`, `Text`, `print(..., style=)`."""


def styled(*parts: str | tuple[str, str]) -> Text:
    """One line from plain strings and (text, style) pairs; no part is read as markup,
    so keys, names and paths print as they are (`Text.assemble`, named for the reason)."""
    return Text.assemble(*parts)

SpecArg = Annotated[str, typer.Argument(help="experiment spec YAML", metavar="SPEC")]
OverrideOpt = Annotated[
    Optional[list[str]], typer.Option("--override", "-o", metavar="KEY.PATH=VALUE",
                                      help="override a spec value (repeatable)")
]
ProfileOpt = Annotated[Optional[str], typer.Option("--profile", "-p", help="cluster profile name or YAML path")]
FollowProfileOpt = Annotated[Optional[str], typer.Option(
    "--profile", "-p", help="cluster profile name or YAML path (default: the one the experiment was launched with)")]
"""For the commands that follow a launch: the launch record supplies the profile; an
explicit one must agree with it."""
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]
OUTPUT_FLAGS = ("--output", "-O")
"""The one spelling of "write to this file or folder" on every command (`-o` is always
`--override`)."""

E = TypeVar("E", bound=Enum)


def choice_option(choices: type[E], *flags: str, what: str, help: str) -> Any:
    """A `typer.Option` whose value is one member of the Enum `choices` (a list of them
    with a `list[...]` annotation): `--help` lists the values, shell completion offers
    them, and a wrong value is one line naming it and the valid ones (a `UserError`,
    exit 2; click's own choice error is a usage panel), with a did-you-mean."""
    values = [str(member.value) for member in choices]

    def parse(value: Any) -> E:
        if isinstance(value, choices):
            return value
        try:
            return choices(value)
        except ValueError:
            raise UserError(f"{flags[0]}: unknown {what} '{value}'{did_you_mean(str(value), values)}; "
                            f"valid: {', '.join(values)}") from None

    def complete(incomplete: str) -> list[str]:
        return [value for value in values if value.startswith(incomplete)]

    return typer.Option(*flags, parser=parse, metavar="[" + "|".join(values) + "]", autocompletion=complete,
                        help=help)


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
        err.print(note, style="dim")
    return experiment


def node_tasks(node: Node) -> str:
    """What a node trains or evaluates, for tables: 'intermediate -> target' or one task."""
    if node.stage in ("train-target", "evaluate"):
        return f"{node.intermediate} -> {node.task}"
    return node.task or "(model)"
