"""The executor seam: how nodes are run, asked about, stopped and logged.

Modelled on submitit's `Executor` hierarchy: the CLI and `Experiment` talk to one
protocol, and each way of running nodes (processes on this machine, SLURM job arrays)
implements it once. Nothing above this seam asks which executor a profile names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from xstilts.core.plan import Node
from xstilts.launcher.selection import NodeStatuses

if TYPE_CHECKING:
    from rich.console import Console

    from xstilts.launcher.experiment import Experiment

SAFE_PATH_ENV = {"PYTHONSAFEPATH": "1"}
"""Every node process and scheduler runs with Python's safe path (`-P`, and this for
the processes they start): a user's `analysis.py` or `xstilts.py` in the launch folder
must never shadow the package."""


@dataclass(frozen=True)
class LaunchRequest:
    """What `xstilts launch` was asked to do."""

    spec_path: str
    """As the user gave it: repeated in the 'follow with' hint."""
    dry_run: bool
    wait: bool
    retry_failed: bool
    overrides: tuple[str, ...] = ()
    """As the user typed them: repeated in the hint too, since they may move the
    experiment's storage or name (then a bare `status SPEC` finds another one)."""

    def status_hint(self) -> str:
        """`follow with: xstilts status SPEC -o ... --watch`, shell-quoted."""
        return f"follow with: {self.command('status', '--watch')}"

    def command(self, name: str, *extra: str) -> str:
        """`xstilts NAME SPEC -o ... EXTRA`, shell-quoted: a hint the user can paste,
        with every override they typed (they can change node keys)."""
        import shlex

        words = ["xstilts", name, self.spec_path, *(w for o in self.overrides for w in ("-o", o)), *extra]
        return shlex.join(words)


@dataclass(frozen=True)
class LaunchOutcome:
    ok: bool
    """False: the launch ends with exit code 1 (a node failed, or the wait was interrupted)."""
    show_table: bool
    """True after a wait: the CLI prints the results table."""


class Executor(Protocol):
    """One way of running a plan's nodes."""

    live: frozenset[str]
    """Statuses of nodes this executor still runs by itself: a launch leaves them alone."""

    def live_statuses(self, experiment: Experiment, stored: dict[str, tuple[str, dict[str, Any]]],
                      need_cluster: bool) -> dict[str, tuple[str, dict[str, Any]]]:
        """The store's statuses merged with what the executor knows (e.g. SLURM's queue).
        With `need_cluster=False` an unreachable cluster leaves the store's view as it is."""
        ...

    def submit(self, experiment: Experiment, statuses: NodeStatuses, request: LaunchRequest,
               out: Console) -> LaunchOutcome:
        """Submit what `select_nodes` chooses from `statuses` (on a dry run, show what
        would be), saying what it did on `out`; with `request.wait`, stay until nothing
        is left to run."""
        ...

    def cancel(self, experiment: Experiment) -> list[str]:
        """Stop the experiment's running nodes, nothing else; lines saying what stopped."""
        ...

    def log_sources(self, experiment: Experiment, node: Node, state: dict[str, Any]) -> list[Path]:
        """The files the node's submissions through this executor log to, outside the
        store, oldest first (some may not exist yet)."""
        ...
