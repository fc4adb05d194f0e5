"""`xstilts logs`: a node's log, from the store or from where its executor wrote it."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from xstilts.core.errors import UserError
from xstilts.core.plan import Node
from xstilts.launcher.commands.common import FollowProfileOpt, OverrideOpt, SpecArg, open_spec, out
from xstilts.launcher.experiment import Experiment


def node_logs(experiment: Experiment, node: Node) -> list[tuple[str, str]]:
    """(name, text) of a node's logs, oldest first: those in the store, else the files
    its executor's submissions log to (the local runner's, SLURM's)."""
    folder = experiment.store.node_path(node.stage, node.key, "logs")
    names = sorted(n for n in experiment.store.list(folder) if n.endswith(".log"))
    # A log is whatever the node's process printed, so not necessarily UTF-8: undecodable
    # bytes are shown replaced, as for the logs outside the store below.
    texts = [(n, experiment.store.fs.cat_file(f"{folder}/{n}").decode(errors="replace")) for n in names]
    if texts:
        return texts
    return [(path.name, path.read_text(errors="replace")) for path in _executor_logs(experiment, node, None)]


TAIL_BYTES = 64 * 1024
"""Read from the end of a log for its tail: enough for any few lines, however long the log."""


def log_tail(experiment: Experiment, node: Node, lines: int = 8, state: dict[str, Any] | None = None) -> str | None:
    """The last lines of the node's newest log, or None without a log. Only the end of
    the log is read (one ranged GET on object stores), and a node the experiment's last
    snapshot listed needs no listing of its logs folder (`status` on a grid with many
    failures). `state`: the node's state when the caller has it (spares a read)."""
    listed = experiment.listed_files(node)
    folder = experiment.store.node_path(node.stage, node.key, "logs")
    names = listed.log_names() if listed is not None else [
        n for n in experiment.store.list(folder) if n.endswith(".log")]
    if names:
        text = experiment.store.read_tail(f"{folder}/{names[-1]}", TAIL_BYTES)
    else:
        sources = _executor_logs(experiment, node, state)
        text = _file_tail(sources[-1]) if sources else None
    return "\n".join(text.rstrip().splitlines()[-lines:]) if text is not None else None


def _executor_logs(experiment: Experiment, node: Node, state: dict[str, Any] | None) -> list[Path]:
    """The log files outside the store that the node's submissions wrote, oldest first."""
    if state is None:
        state = experiment.store.read_json(f"{experiment.node_dir(node)}/state.json") or {}
    return [path for path in experiment.executor.log_sources(experiment, node, state) if path.exists()]


def _file_tail(path: Path) -> str:
    with path.open("rb") as file:
        size = file.seek(0, os.SEEK_END)
        file.seek(max(0, size - TAIL_BYTES))
        data = file.read()
    text = data.decode(errors="replace")
    return text.split("\n", 1)[1] if size > TAIL_BYTES and "\n" in text else text


def logs(
    spec: SpecArg,
    node: Annotated[str, typer.Argument(help="node key or unique key prefix (see `xstilts status`)")],
    override: OverrideOpt = None,
    profile: FollowProfileOpt = None,
    all_attempts: Annotated[bool, typer.Option("--all", help="every attempt, not only the newest")] = False,
) -> None:
    """Print a node's log."""
    experiment = open_spec(spec, override, profile)
    target = experiment.plan.find(node)
    texts = node_logs(experiment, target)
    if not texts:
        raise UserError(f"no log yet for {target.label} [{target.key}]: it has not started")
    for name, text in texts if all_attempts else texts[-1:]:
        out.print(f"==> {target.label} [{target.key}] {name}", style="dim")
        sys.stdout.write(text)
