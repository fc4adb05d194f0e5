"""`xstilts logs`: a node's log, from the store or from where its executor wrote it."""

from __future__ import annotations

import sys
from typing import Annotated

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
    state = experiment.store.read_json(f"{experiment.node_dir(node)}/state.json") or {}
    for path in experiment.executor.log_sources(experiment, node, state):
        if path.exists():
            texts.append((path.name, path.read_text(errors="replace")))
    return texts


def log_tail(experiment: Experiment, node: Node, lines: int = 8) -> str | None:
    """The last lines of the node's newest log, or None without a log."""
    texts = node_logs(experiment, node)
    return "\n".join(texts[-1][1].rstrip().splitlines()[-lines:]) if texts else None


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
