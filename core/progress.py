"""Progress of long work: a `rich.progress` bar with an ETA on a terminal, plain lines
everywhere else.

`launch --wait` runs for hours and `analysis collect` reads thousands of files; on a
terminal both show how far they are and how long is left, with their event lines
printed above the bar. Into a file or a pipe (a batch job's log, `| tee`) a bar would be
cursor codes and carriage returns, so there only the event lines are written, one per
line, exactly as they would be without a bar.

Work inside a job (encoding 118k images, tokenizing a task) runs where nobody watches a
terminal: its output is SLURM's log file. Given a `log`, the report writes a plain line
there every `log_every_s` seconds (and at the end) with the count, the rate and the
ETA, so that `xstilts logs` and `status`'s log tail say how far a long stage is.
"""

from __future__ import annotations

import logging
import time
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.progress import Progress, TaskID


class ProgressReport:
    """A bar of `total` steps (already `completed` of them) on `console`, if it is a
    terminal; `line` prints above it (or alone without one). Use as a context manager.
    Safe to advance from worker threads (rich's task updates take a lock)."""

    def __init__(self, console: Console, description: str, total: int, completed: int = 0,
                 transient: bool = False, log: logging.Logger | None = None, log_every_s: float = 60.0,
                 unit: str = "") -> None:
        self.console = console
        self.description = description
        self.total = total
        self.completed = completed
        self.transient = transient
        self.log = log
        self.log_every_s = log_every_s
        self.unit = unit
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._started = time.monotonic()
        self._first = completed
        self._logged_at = self._started

    @property
    def is_bar(self) -> bool:
        return self.console.is_terminal

    def __enter__(self) -> ProgressReport:
        if self.is_bar:
            from rich.progress import (
                BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                TextColumn("elapsed"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=self.console, transient=self.transient)
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=self.total, completed=self.completed)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        elif self.log is not None and error is None:
            self._log_line(time.monotonic(), final=True)

    def line(self, renderable: RenderableType) -> None:
        """An event line: above the bar on a terminal, a plain line otherwise."""
        self.console.print(renderable)

    def update(self, completed: int, total: int | None = None) -> None:
        """`completed` steps of `total` (unchanged if None) are done."""
        self.completed = completed
        self.total = self.total if total is None else total
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=completed, total=self.total)
        self._maybe_log()

    def advance(self, steps: int = 1) -> None:
        self.completed += steps
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, steps)
        self._maybe_log()

    def _maybe_log(self) -> None:
        if self.log is None or self._progress is not None:
            return
        now = time.monotonic()
        if now - self._logged_at >= self.log_every_s and self.completed < self.total:
            self._log_line(now)

    def _log_line(self, now: float, final: bool = False) -> None:
        """'<description>: 12,800/118,287 img (10.8%), 1,240.0 img/s, ETA 1m33s' (at the
        end: 'in <elapsed>' instead of the ETA)."""
        assert self.log is not None
        self._logged_at = now
        elapsed = now - self._started
        rate = (self.completed - self._first) / elapsed if elapsed > 0 else 0.0
        share = f" ({100 * self.completed / self.total:.1f}%)" if self.total else ""
        unit = f" {self.unit}" if self.unit else ""
        if final or self.completed >= self.total:
            when = f"in {duration(elapsed)}"
        else:
            when = f"ETA {duration((self.total - self.completed) / rate)}" if rate > 0 else "ETA unknown"
        self.log.info("%s: %s/%s%s%s, %s%s/s, %s", self.description, f"{self.completed:,}", f"{self.total:,}",
                      unit, share, f"{rate:,.1f}", unit, when)


def duration(seconds: float) -> str:
    """'45s', '3m05s', '2h07m'."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


PROGRESS_EVERY_ENV = "XSTILTS_PROGRESS_EVERY"
"""Seconds between two progress lines in a job's log (default 60)."""


def job_progress(description: str, total: int, completed: int = 0, unit: str = "",
                 log: logging.Logger | None = None, enabled: bool = True) -> ProgressReport:
    """The report of long work inside a job: a bar on stderr when that is a terminal (a
    stage run by hand), else a line in `log` every `XSTILTS_PROGRESS_EVERY` seconds
    (60 by default) and one at the end. `enabled=False`: silent."""
    import os

    from rich.console import Console

    console = Console(stderr=True, markup=False, quiet=not enabled)
    every = float(os.environ.get(PROGRESS_EVERY_ENV) or 60.0)
    return ProgressReport(console, description, total, completed, log=log if enabled else None,
                          log_every_s=every, unit=unit)
