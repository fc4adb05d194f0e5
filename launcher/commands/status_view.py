"""What `xstilts status` shows, and how it fits a terminal at paper scale.

A paper grid has 1,299 nodes; a table of all of them shows the first few dozen prepare
and tune rows and cuts the rest, the part a researcher needs (what failed and why,
what runs now) included. So the view is built summary first:

1. per stage, the node counts by state (`stage_table`);
2. the failures, each with its reason and the end of its log (`failure_lines`);
3. the running nodes (`running_lines`);
4. the node table (`node_table`), narrowed by `Filters` (`--stage/--state/--task`).

`fit` gives each part of a live view (`status --watch`) a share of the terminal's
height, in that order, and says how much it left out. Every line is `Text` made from
data, never markup: node keys such as `[e4578a5c]` are what `xstilts logs` takes.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from rich.console import Group
from rich.table import Table
from rich.text import Text

from xstilts.core.errors import UserError, unknown_choice
from xstilts.core.stages import STAGES
from xstilts.core.state import STATUSES

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from xstilts.launcher.commands.status import NodeRow



class Stage(str, Enum):
    """A stage, as `--stage` takes it: `xstilts.core.stages.STAGES` (a test holds them equal)."""

    prepare = "prepare"
    tune = "tune"
    train_intermediate = "train-intermediate"
    train_target = "train-target"
    evaluate = "evaluate"


class State(str, Enum):
    """A node state, as `--state` takes it: `xstilts.core.state.STATUSES` (a test holds them equal)."""

    done = "done"
    running = "running"
    queued = "queued"
    preempted = "preempted"
    failed = "failed"
    interrupted = "interrupted"
    cancelled = "cancelled"
    pending = "pending"


LIVE = frozenset({"queued", "running", "preempted"})
"""States that can still change without a new launch (a job SLURM holds, a process with a
live lease, a local scheduler's queue): `--watch` stops when no node is in one."""

COLOURS = {"done": "green", "running": "cyan", "failed": "red", "interrupted": "yellow", "preempted": "yellow",
           "queued": "blue", "cancelled": "magenta"}
WATCH_ORDER = ("running", "preempted", "queued", "failed", "interrupted", "cancelled", "pending", "done")
"""A live view's table shows nodes in this order: what moves first, what is settled last."""
NARROW = "narrow with --stage, --state or --task"


@dataclass(frozen=True)
class Filters:
    """`--stage`, `--state` and `--task`: a node is shown when it matches each one given
    (any of its values). A task matches a node that trains, tunes, prepares or evaluates
    it, as intermediate or as target."""

    stages: frozenset[str] = frozenset()
    states: frozenset[str] = frozenset()
    tasks: frozenset[str] = frozenset()

    @classmethod
    def make(cls, stages: Iterable[Enum] | None, states: Iterable[Enum] | None, tasks: Iterable[str] | None,
             known_tasks: Iterable[str]) -> Filters:
        """The filters; a task the plan does not hold is a `UserError` naming the valid ones."""
        known = sorted(set(known_tasks))
        for task in tasks or ():
            if task not in known:
                raise UserError(f"--task: {unknown_choice('task', task, known)}")
        return cls(frozenset(str(s.value) for s in stages or ()), frozenset(str(s.value) for s in states or ()),
                   frozenset(tasks or ()))

    @property
    def active(self) -> bool:
        return bool(self.stages or self.states or self.tasks)

    def matches(self, row: NodeRow) -> bool:
        return ((not self.stages or row.stage in self.stages)
                and (not self.states or row.status in self.states)
                and (not self.tasks or bool({row.task, row.intermediate} & self.tasks)))

    def describe(self) -> str:
        parts = [f"--{name} {' '.join(sorted(values))}"
                 for name, values in (("stage", self.stages), ("state", self.states), ("task", self.tasks)) if values]
        return ", ".join(parts)


def line(*parts: str | tuple[str, str]) -> Text:
    """One display line that never wraps (a long one ends in '…'); no markup is read."""
    text = Text.assemble(*parts)
    text.no_wrap, text.overflow = True, "ellipsis"
    return text


def summary_line(rows: Sequence[NodeRow]) -> Text:
    counts = Counter(row.status for row in rows)
    parts: list[str | tuple[str, str]] = [f"{len(rows)} nodes: "]
    for i, state in enumerate(s for s in STATUSES if counts[s]):
        parts.extend([", "] if i else [])
        parts.append((f"{counts[state]} {state}", COLOURS.get(state, "")))
    return line(*parts)


def stage_table(rows: Sequence[NodeRow]) -> Table:
    """Per stage (plan order), how many nodes are in each state; states no node is in
    are left out."""
    by_stage: dict[str, Counter[str]] = {}
    for row in rows:
        by_stage.setdefault(row.stage, Counter())[row.status] += 1
    states = [s for s in STATUSES if any(counts[s] for counts in by_stage.values())]
    table = Table()
    table.add_column("stage", no_wrap=True)
    for state in states:
        table.add_column(state, justify="right", style=COLOURS.get(state, ""), no_wrap=True)
    table.add_column("total", justify="right", no_wrap=True)
    for stage in sorted(by_stage, key=lambda s: STAGES.index(s) if s in STAGES else len(STAGES)):
        counts = by_stage[stage]
        table.add_row(stage, *(str(counts[s]) if counts[s] else "" for s in states), str(sum(counts.values())))
    return table


def failure_entries(rows: Sequence[NodeRow], tail_lines: int | None = None) -> list[list[Text]]:
    """Per failed or cancelled node: its line (state, label, key, reason), then the last
    `tail_lines` lines of its log (all that `NodeRow.log_tail` holds with None)."""
    entries = []
    for row in rows:
        if row.status not in ("failed", "cancelled"):
            continue
        reason = row.last_error or "no reason recorded"
        entry = [line((row.status, COLOURS[row.status]), f" {row.label} [{row.key[:8]}]: {reason}")]
        tail = (row.log_tail or "").splitlines()
        if tail_lines is not None:
            tail = tail[-tail_lines:] if tail_lines > 0 else []
        entry.extend(line(("    " + text, "dim")) for text in tail)
        entries.append(entry)
    return entries


def running_lines(rows: Sequence[NodeRow]) -> list[Text]:
    lines = []
    for row in rows:
        if row.status != "running":
            continue
        elapsed = "" if row.elapsed_s is None else f" {_duration(row.elapsed_s)}"
        lines.append(line(("running", COLOURS["running"]), f" {row.label} [{row.key[:8]}]{elapsed}"
                          + (f"  {row.headline}" if row.headline else "")))
    return lines


def _duration(seconds: float) -> str:
    minutes, _ = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{int(seconds) % 60:02d}s"


def node_table(rows: Sequence[NodeRow], tasks_of: Callable[[NodeRow], str], title: str | None = None) -> Table:
    """One row per node: key (the 8 characters `xstilts logs` takes), stage, tasks, seed,
    state, attempts, elapsed, headline metric. Cells do not wrap, so a row is one line."""
    table = Table(title=title, title_justify="left")
    for column in ("key", "stage", "tasks", "seed", "state", "attempts", "elapsed", "metric"):
        table.add_column(column, no_wrap=True, overflow="ellipsis")
    for row in rows:
        table.add_row(row.key[:8], row.stage if not row.kind else f"{row.stage}:{row.kind}", tasks_of(row),
                      "" if row.seed is None else str(row.seed), Text(row.status, style=COLOURS.get(row.status, "")),
                      f"{row.attempts} ({row.retries} retried)" if row.retries else str(row.attempts),
                      "" if row.elapsed_s is None else f"{row.elapsed_s:.0f}s", row.headline)
    return table


def full_view(title: str, rows: Sequence[NodeRow], shown: Sequence[NodeRow], filters: Filters,
              tasks_of: Callable[[NodeRow], str], limit: int | None = None) -> list[RenderableType]:
    """`status` without --watch: everything, summary first (the summary counts every
    node; the table holds the filtered ones). With `limit`, a table of more rows shows
    the first `limit` (running, queued and failed first, as a live view ranks them) and a
    line counting the rest and naming --all and --json."""
    parts: list[RenderableType] = [line((title, "bold")), summary_line(rows), stage_table(rows)]
    failures = failure_entries(rows)
    if failures:
        parts.append(line(("failures", "bold red")))
        parts.extend(text for entry in failures for text in entry)
    running = running_lines(rows)
    if running:
        parts.append(line((f"running ({len(running)})", "bold cyan")))
        parts.extend(running)
    title = _table_title(rows, shown, filters)
    if limit is None or len(shown) <= limit:
        parts.append(node_table(shown, tasks_of, title=title))
        return parts
    order = {state: i for i, state in enumerate(WATCH_ORDER)}
    ranked = sorted(shown, key=lambda row: order.get(row.status, len(order)))  # stable: plan order within a state
    parts.append(node_table(ranked[:limit], tasks_of, title=f"{title}; the first {limit}, running, queued and "
                                                             "failed first"))
    parts.append(line(f"… {len(shown) - limit} more rows; --all lists every node, --json writes them all; {NARROW}"))
    return parts


TABLE_ROWS_PIPED = 200
"""Node rows `status` prints into a file or a pipe without --all (the summary above counts
every node). Rendering a row costs ~0.85 ms: at 100k nodes a full table is over a minute
of CPU, and nobody reads 100k rows; --json is the complete, machine-readable form."""
TABLE_ROWS_MIN = 20


def table_rows_limit(console: Console) -> int:
    """How many node rows `status` prints without --all: a terminal's height (at least
    `TABLE_ROWS_MIN`: the summary scrolls away before the rows do), else `TABLE_ROWS_PIPED`."""
    if console.is_terminal:
        return max(TABLE_ROWS_MIN, console.size.height)
    return TABLE_ROWS_PIPED


def _table_title(rows: Sequence[NodeRow], shown: Sequence[NodeRow], filters: Filters) -> str:
    return f"{len(shown)} of {len(rows)} nodes ({filters.describe()})" if filters.active else f"{len(rows)} nodes"


def fit(console: Console, height: int, title: str, rows: Sequence[NodeRow], shown: Sequence[NodeRow],
        filters: Filters, tasks_of: Callable[[NodeRow], str], spec: str = "SPEC") -> Group:
    """A live view in `height` lines: the title, the summary and the per-stage table
    always; then the failures (up to 2/5 of what is left, each with the last two lines
    of its log), the running nodes (up to 1/4 of what is then left), and the node table
    (running, queued and failed first) in the rest. Whatever is left out is counted in
    a line saying how to see it (the command to run names `spec`)."""
    width = console.size.width
    head: list[RenderableType] = [line((f"{title}  {time.strftime('%H:%M:%S')}", "bold")), summary_line(rows),
                                  stage_table(rows)]
    used = sum(_height(console, part, width) for part in head)
    left = max(0, height - used - 1)  # the last line stays free: a full screen would scroll
    parts = list(head)

    failures = failure_entries(rows, tail_lines=2)
    if failures:
        budget = left * 2 // 5 if (running_lines(rows) or shown) else left
        block = _entries_within(failures, budget, lambda n: f"… {n} more failed or cancelled: "
                                                                f"xstilts status {spec} --state failed")
        parts.extend(block)
        left -= len(block)

    running = running_lines(rows)
    if running and left > 1:
        budget = left // 4 if shown else left
        block = _entries_within([[text] for text in running], budget,
                                lambda n: f"… {n} more running: xstilts status {spec} --state running")
        parts.extend(block)
        left -= len(block)

    order = {state: i for i, state in enumerate(WATCH_ORDER)}
    ranked = sorted(shown, key=lambda row: order.get(row.status, len(order)))
    overhead = _height(console, node_table([], tasks_of, title="x"), width)  # title, borders, header
    room = left - overhead - 1  # one line for "… n more"
    if room >= len(ranked):
        parts.append(node_table(ranked, tasks_of, title=_table_title(rows, shown, filters)))
    elif room > 0:
        parts.append(node_table(ranked[:room], tasks_of, title=_table_title(rows, shown, filters)))
        parts.append(line(f"… {len(ranked) - room} more rows; {NARROW}"))
    elif left > 0 and ranked:
        parts.append(line(f"table: {len(ranked)} rows do not fit; {NARROW}"))
    return Group(*parts)


def _entries_within(entries: list[list[Text]], budget: int, more: Callable[[int], str]) -> list[Text]:
    """As many entries as fit in `budget` lines, each whole or else its first line only,
    then a line counting those left out (its line is part of the budget)."""
    lines: list[Text] = []
    shown = 0
    for entry in entries:
        reserve = 1 if shown + 1 < len(entries) else 0
        if len(lines) + len(entry) + reserve <= budget:
            lines.extend(entry)
        elif len(lines) + 1 + reserve <= budget:
            lines.append(entry[0])
        else:
            break
        shown += 1
    if shown < len(entries) and budget > 0:
        lines.append(line(more(len(entries) - shown)))
    return lines


def _height(console: Console, renderable: RenderableType, width: int) -> int:
    return len(console.render_lines(renderable, console.options.update(width=width, height=None), pad=False))


def plain_progress(rows: Sequence[NodeRow], seen_failed: set[str]) -> list[str]:
    """`status --watch` into a file or a pipe: the summary as one time-stamped line, and
    one line per node that failed since the last call (`seen_failed` is updated)."""
    counts = Counter(row.status for row in rows)
    lines = [f"{time.strftime('%H:%M:%S')} {len(rows)} nodes: "
             + ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s])]
    for row in rows:
        if row.status in ("failed", "cancelled") and row.key not in seen_failed:
            seen_failed.add(row.key)
            lines.append(f"{row.status} {row.label} [{row.key[:8]}]: {row.last_error or 'no reason recorded'}")
    return lines
