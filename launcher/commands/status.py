"""`xstilts status`: every node's state, attempts, elapsed time and headline metric.

The statuses come from `Experiment.statuses()`: the store merged by the executor with
what it knows (SLURM's queue), so this module never asks which executor runs the nodes.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from xstilts.core.errors import UserError
from xstilts.core.plan import Node
from xstilts.core.state import STATUSES
from xstilts.launcher.commands.common import (FollowProfileOpt, JsonOpt, OverrideOpt, SpecArg, node_tasks, open_spec,
                                              out)
from xstilts.launcher.commands.logs import log_tail
from xstilts.launcher.experiment import Experiment

if TYPE_CHECKING:
    from rich.table import Table


def _headline(node: Node, result: dict[str, Any] | None) -> str:
    if not result:
        return ""
    if node.stage == "evaluate" and result.get("average") is None and result.get("gold_withheld"):
        withheld, scored = len(result["gold_withheld"]), len(result.get("languages") or ())
        return f"{result.get('metric', '')}: gold withheld in {withheld} of {withheld + scored} languages"
    if node.stage == "evaluate" and "average" in result:
        return f"{result.get('metric', '')} {result['average']:.1f}"
    if node.stage == "tune" and "best" in result:
        stopped = sum(1 for trial in result.get("trials", []) if trial.get("stopped_early"))
        chosen = ", ".join(f"{k}={v:g}" for k, v in result["best"].items())
        return f"{chosen} (dev {result['best_metric']:.1f}; {len(result.get('trials', []))} trials, {stopped} stopped)"
    dev = result.get("dev")
    if isinstance(dev, dict) and dev:
        name, value = next(iter(dev.items()))
        return f"dev {name} {value:.1f}"
    return ""


def _search_headline(progress: dict[str, Any]) -> str:
    """A running (or stopped) search: trials by state and the best so far."""
    parts = [f"search {progress.get('finished', 0)}/{progress.get('planned', 0)} finished"]
    if progress.get("stopped_early"):
        parts[0] += f" ({progress['stopped_early']} stopped early)"
    for state in ("running", "pending", "errored"):
        if progress.get(state):
            parts.append(f"{progress[state]} {state}")
    if progress.get("best"):
        chosen = ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}"
                           for k, v in progress["best"].items())
        parts.append(f"best {chosen} (dev {progress['best_metric']:.1f})")
    return "; ".join(parts)


def _search_progress(experiment: Experiment, node: Node, status: str) -> dict[str, Any] | None:
    """What `xstilts.jobs.tune_progress` last wrote for a tune node that has started but is not done."""
    if node.stage != "tune" or status in ("done", "pending", "queued", "blocked"):
        return None
    progress = experiment.store.read_json(f"{experiment.node_dir(node)}/progress.json")
    return progress if isinstance(progress, dict) else None


def _elapsed(state: dict[str, Any]) -> float | None:
    attempts = state.get("attempts") or []
    last = attempts[-1] if attempts and isinstance(attempts[-1], dict) else {}
    started, ended = last.get("started"), last.get("ended")
    if not isinstance(started, (int, float)):
        return None  # no attempt yet, or a record that is not ours (edited, older version)
    return (ended if isinstance(ended, (int, float)) else time.time()) - started


@dataclass(frozen=True)
class NodeRow:
    """One node as `status` shows it (and `status --json` writes it, in this order)."""

    key: str
    stage: str
    kind: str | None
    task: str | None
    intermediate: str | None
    seed: int | None
    label: str
    status: str
    attempts: int
    elapsed_s: float | None
    headline: str
    search: dict[str, Any] | None
    """A tune node's search progress (`progress.json`) while it has not finished."""
    last_error: str | None
    log_tail: str | None


def status_rows(experiment: Experiment) -> list[NodeRow]:
    rows = []
    statuses = experiment.statuses()
    for node in experiment.plan.nodes:
        status, state = statuses[node.key]
        result = experiment.result(node) if status == "done" else None
        progress = _search_progress(experiment, node, status)
        elapsed = _elapsed(state)
        rows.append(NodeRow(
            key=node.key, stage=node.stage, kind=node.kind, task=node.task,
            intermediate=node.intermediate, seed=node.seed, label=node.label, status=status,
            attempts=len(state.get("attempts") or []), elapsed_s=None if elapsed is None else round(elapsed, 1),
            headline=_search_headline(progress) if progress else _headline(node, result),
            search=progress,
            last_error=(state.get("reason") or state.get("last_error")) if status in ("failed", "cancelled") else None,
            log_tail=log_tail(experiment, node) if status == "failed" else None,
        ))
    return rows


def _status_table(experiment: Experiment, rows: list[NodeRow]) -> Table:
    from rich.table import Table

    colours = {"done": "green", "running": "cyan", "failed": "red", "interrupted": "yellow", "preempted": "yellow",
               "queued": "blue"}
    table = Table(title=f"{experiment.spec.name} ({experiment.store.url})")
    for column in ("key", "stage", "tasks", "seed", "state", "attempts", "elapsed", "metric"):
        table.add_column(column)
    for row, node in zip(rows, experiment.plan.nodes):
        colour = colours.get(row.status, "white")
        table.add_row(row.key[:8], row.stage if not row.kind else f"{row.stage}:{row.kind}",
                      node_tasks(node), "" if row.seed is None else str(row.seed),
                      f"[{colour}]{row.status}[/{colour}]", str(row.attempts),
                      "" if row.elapsed_s is None else f"{row.elapsed_s:.0f}s", row.headline)
    return table


def _failures(rows: list[NodeRow]) -> str:
    """Why each failed node failed, and the end of its log."""
    from rich.markup import escape

    parts = []
    for row in rows:
        if row.status in ("failed", "cancelled") and (row.last_error or row.log_tail):
            parts.append(f"[red]{row.status}[/red] " + escape(f"{row.label} [{row.key[:8]}]: {row.last_error or ''}"))
            if row.log_tail:
                parts.append("\n".join(f"    {escape(line)}" for line in row.log_tail.splitlines()))
    return "\n".join(parts)


def _summary_line(rows: list[NodeRow]) -> str:
    counts = Counter(row.status for row in rows)
    parts = [f"{counts[s]} {s}" for s in STATUSES if counts[s]]
    return f"{len(rows)} nodes: " + ", ".join(parts)


MIN_INTERVAL_S = 2.0
"""`status --watch` reads every node's files per refresh: not more often than this."""


def status(
    spec: SpecArg,
    override: OverrideOpt = None,
    profile: FollowProfileOpt = None,
    as_json: JsonOpt = False,
    watch: Annotated[bool, typer.Option("--watch", help="refresh until every node has finished")] = False,
    interval: Annotated[float, typer.Option(
        help=f"seconds between refreshes with --watch (at least {MIN_INTERVAL_S:g})")] = 5.0,
) -> None:
    """Show every node's state, attempts, elapsed time and headline metric."""
    if not (math.isfinite(interval) and interval >= MIN_INTERVAL_S):
        raise UserError(f"--interval: {interval:g} is not a number of seconds >= {MIN_INTERVAL_S:g}")
    experiment = open_spec(spec, override, profile, cluster_optional=True)
    if as_json:
        rows = status_rows(experiment)
        counts = Counter(row.status for row in rows)
        print(json.dumps({"experiment": experiment.spec.name, "counts": dict(counts), "nodes": [asdict(row) for row in rows]}, indent=1))
        return
    if not watch:
        rows = status_rows(experiment)
        out.print(_status_table(experiment, rows))
        failures = _failures(rows)
        if failures:
            out.print(failures, markup=True, highlight=False)
        out.print(_summary_line(rows))
        return
    from rich.console import Group
    from rich.live import Live

    with Live(console=out, auto_refresh=False) as live:
        while True:
            rows = status_rows(experiment)
            live.update(Group(_status_table(experiment, rows), _failures(rows), _summary_line(rows)), refresh=True)
            if all(row.status in ("done", "failed", "cancelled") for row in rows):
                break
            time.sleep(interval)

