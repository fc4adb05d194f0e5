"""`xstilts status`: every node's state, attempts, elapsed time and headline metric.

What is shown, and how it fits a terminal, is `status_view`'s; this module reads the
rows and runs the command (`--watch`: a live view on a terminal, plain lines otherwise).

The statuses come from `Experiment.statuses()`: the store merged by the executor with
what it knows (SLURM's queue), so this module never asks which executor runs the nodes.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import dataclass
from collections.abc import Callable
from typing import Annotated, Any, Optional

import typer

from xstilts.core.errors import UserError, warn
from xstilts.core.plan import Node
from xstilts.core.provenance import attempt_code, count_codes, mixed_code_warning
from xstilts.launcher.commands.common import FollowProfileOpt, JsonOpt, OverrideOpt, SpecArg, choice_option, node_tasks, open_spec, out
from xstilts.launcher.commands.logs import log_tail
from xstilts.launcher.commands.status_view import (
    LIVE, TABLE_ROWS_PIPED, Filters, Stage, State, fit, full_view, plain_progress, table_rows_limit,
)
from xstilts.launcher.experiment import Experiment


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
    retries: int = 0
    """Runs SLURM restarted after an infrastructure failure (NODE_FAIL, BOOT_FAIL)."""
    code: str | None = None
    """A done node: the code version its completed attempt ran (`core.provenance`)."""


LOG_TAIL_WORKERS = 16
"""Failed nodes' log tails read at once: on an object store each is a round trip."""


def status_rows(experiment: Experiment) -> list[NodeRow]:
    from concurrent.futures import ThreadPoolExecutor

    rows = []
    statuses = experiment.statuses()
    failed = [node for node in experiment.plan.nodes if statuses[node.key][0] == "failed"]
    with ThreadPoolExecutor(max_workers=LOG_TAIL_WORKERS) as pool:
        tails = dict(zip((node.key for node in failed),
                         pool.map(lambda node: log_tail(experiment, node, state=statuses[node.key][1]), failed)))
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
            log_tail=tails.get(node.key),
            retries=int(state.get("retries") or 0),
            code=attempt_code(state) if status == "done" else None,
        ))
    return rows


MIN_INTERVAL_S = 2.0
"""`status --watch` reads every node's files per refresh: not more often than this."""
WATCH_INTERVAL_S = 30.0
"""The default between two reads of a watched grid: each asks SLURM (`squeue`, `sacct`)
for the whole grid, and a scheduler is not to be polled every few seconds for hours."""


def status(
    spec: SpecArg,
    override: OverrideOpt = None,
    profile: FollowProfileOpt = None,
    as_json: JsonOpt = False,
    stage: Annotated[Optional[list[Stage]], choice_option(
        Stage, "--stage", what="stage", help="only nodes of this stage (repeatable)")] = None,
    state: Annotated[Optional[list[State]], choice_option(
        State, "--state", what="state", help="only nodes in this state (repeatable)")] = None,
    task: Annotated[Optional[list[str]], typer.Option(
        "--task", help="only nodes that train, tune, prepare or evaluate this task (repeatable)")] = None,
    watch: Annotated[bool, typer.Option("--watch", help="a live view that fits the terminal, until no node is "
                                        "queued or running (plain lines when not on a terminal)")] = False,
    interval: Annotated[float, typer.Option(
        help=f"seconds between reads with --watch (at least {MIN_INTERVAL_S:g}); each asks SLURM")] = WATCH_INTERVAL_S,
    show_all: Annotated[bool, typer.Option(
        "--all", help="a table row for every node (default: as many as the terminal shows, "
                      f"{TABLE_ROWS_PIPED} into a file or pipe; --json writes every node)")] = False,
) -> None:
    """A summary (per stage, nodes by state; failures with reason and log tail; running
    nodes), then the nodes' state, attempts, elapsed time and headline metric: as many
    rows as the terminal shows (running, queued and failed first) unless --all."""
    if not (math.isfinite(interval) and interval >= MIN_INTERVAL_S):
        raise UserError(f"--interval: {interval:g} is not a number of seconds >= {MIN_INTERVAL_S:g}")
    experiment = open_spec(spec, override, profile, cluster_optional=True)
    nodes = {node.key: node for node in experiment.plan.nodes}
    known_tasks = {name for node in experiment.plan.nodes for name in (node.task, node.intermediate) if name}
    filters = Filters.make(stage, state, task, known_tasks)

    def tasks_of(row: NodeRow) -> str:
        return node_tasks(nodes[row.key])

    title = f"{experiment.spec.name} ({experiment.store.url})"
    if as_json:
        shown = [row for row in status_rows(experiment) if filters.matches(row)]
        # no indent: that would select json's pure-Python encoder instead of the C one
        print(json.dumps(status_json(experiment.spec.name, shown)))
        return
    if not watch:
        rows = status_rows(experiment)
        limit = None if show_all else table_rows_limit(out)
        for part in full_view(title, rows, [row for row in rows if filters.matches(row)], filters, tasks_of, limit):
            out.print(part)
        mixed = mixed_code_warning(row_code_versions(rows))
        if mixed:
            warn(mixed)
        return
    try:
        if out.is_terminal:
            _watch_live(experiment, title, filters, tasks_of, interval, spec)
        else:
            _watch_plain(experiment, filters, interval)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def status_json(experiment: str, rows: list[NodeRow]) -> dict[str, Any]:
    """What `status --json` writes: counts by state, code versions and every row's fields
    in `NodeRow`'s order: each row's own field dict (a dataclass keeps its fields there in
    that order), not `dataclasses.asdict`, which deep-copies every row (most of the CPU of
    --json at 100k nodes). The rows are only read."""
    return {"experiment": experiment, "counts": dict(Counter(row.status for row in rows)),
            "code_versions": row_code_versions(rows),
            "nodes": [vars(row) for row in rows]}


def row_code_versions(rows: list[NodeRow]) -> dict[str, int]:
    """Code version -> done nodes among `rows` (`core.provenance.code_versions`)."""
    return count_codes(row.code for row in rows if row.status == "done" and row.code is not None)


def _still_live(rows: list[NodeRow]) -> bool:
    return any(row.status in LIVE for row in rows)


def _watch_live(experiment: Experiment, title: str, filters: Filters, tasks_of: Callable[[NodeRow], str],
                interval: float, spec: str) -> None:
    """Redraw the view (`status_view.fit`) after every read, and when the terminal is
    resized between reads; stop once none of the shown nodes is live."""
    from rich.live import Live

    with Live(console=out, auto_refresh=False, vertical_overflow="crop") as live:
        while True:
            rows = status_rows(experiment)
            shown = [row for row in rows if filters.matches(row)]

            def draw(rows: list[NodeRow] = rows, shown: list[NodeRow] = shown) -> None:
                live.update(fit(out, out.size.height, title, rows, shown, filters, tasks_of, spec), refresh=True)

            draw()
            if not _still_live(shown):
                return
            size, deadline = out.size, time.monotonic() + interval
            while (left := deadline - time.monotonic()) > 0:
                time.sleep(min(1.0, left))
                if out.size != size:
                    size = out.size
                    draw()


def _watch_plain(experiment: Experiment, filters: Filters, interval: float) -> None:
    """Not on a terminal (a file, a pipe, a batch job's log): one time-stamped summary
    line per read, and a line for each node that failed since; no cursor movement."""
    seen: set[str] = set()
    while True:
        shown = [row for row in status_rows(experiment) if filters.matches(row)]
        for text in plain_progress(shown, seen):
            print(text, flush=True)
        if not _still_live(shown):
            return
        time.sleep(interval)
