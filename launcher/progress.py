"""Progress of long work: a `rich.progress` bar with an ETA on a terminal, plain lines
everywhere else.

`launch --wait` runs for hours and `analysis collect` reads thousands of files; on a
terminal both show how far they are and how long is left, with their event lines
printed above the bar. Into a file or a pipe (a batch job's log, `| tee`) a bar would be
cursor codes and carriage returns, so there only the event lines are written, one per
line, exactly as they would be without a bar.
"""

from __future__ import annotations

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
                 transient: bool = False) -> None:
        self.console = console
        self.description = description
        self.total = total
        self.completed = completed
        self.transient = transient
        self._progress: Progress | None = None
        self._task: TaskID | None = None

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

    def line(self, renderable: RenderableType) -> None:
        """An event line: above the bar on a terminal, a plain line otherwise."""
        self.console.print(renderable)

    def update(self, completed: int, total: int | None = None) -> None:
        """`completed` steps of `total` (unchanged if None) are done."""
        self.completed = completed
        self.total = self.total if total is None else total
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=completed, total=self.total)

    def advance(self, steps: int = 1) -> None:
        self.completed += steps
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, steps)
