"""The paper-style table: rows intermediate tasks, columns target tasks plus the average.

A cell is the mean and standard deviation over seeds of the target's headline metric
averaged over its languages (as XTREME reports a task; QA: the mean of EM and F1), and
the delta of that mean against the `none` row (the pretrained encoder without
intermediate training). The last column is the average over the targets (the suite
score of the grid), computed per seed where a seed has every target, then averaged.
A cell without results says why (running, queued, failed, not run) instead of failing.
A cell whose target withholds the test gold of a language (the official layout's blanked
test files: predicted, not scored) says "gold withheld" (`GOLD_WITHHELD`) instead of a
number: a mean over the other languages would not be the task's score.

Renderers: rich (terminal), Markdown, LaTeX, CSV (one line per cell) and JSON.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from rich.table import Table

from xstilts.core.tasks import BASELINE, TASKS

AVERAGE = "average"
"""The column (and JSON key) of the mean over target tasks."""

CAPTION = ("cells: mean ± std over seeds of the average over languages (QA: mean of EM and F1); "
           "(delta against none); best per column in bold; average: mean over the targets")
FORMATS = ("rich", "md", "csv", "latex", "json")
GOLD_WITHHELD = "gold withheld"
"""The status of a cell with a language predicted but not scored."""


@dataclass(frozen=True)
class ResultRow:
    """One (intermediate, target, seed, language, metric) value: the table's input, as
    `xstilts.analysis.collect`'s frame holds it."""

    intermediate: str
    target: str
    seed: int
    language: str
    metric: str
    value: float
    key: str
    gold_withheld: bool = False
    """The language was predicted but its gold is withheld: `value` is NaN, not a score."""


def rows_from_result(result: dict[str, Any], intermediate: str, target: str, seed: int, key: str) -> list[ResultRow]:
    """Rows of one evaluate node's result.json (every metric of every language, and a
    `gold_withheld` row with the headline metric for each withheld language)."""
    rows = []
    for language, metrics in sorted(result.get("languages", {}).items()):
        for metric, value in sorted(metrics.items()):
            rows.append(ResultRow(intermediate, target, seed, language, metric, float(value), key))
    for language in sorted(result.get("gold_withheld") or ()):
        rows.append(ResultRow(intermediate, target, seed, language, TASKS[target].metric, float("nan"), key, True))
    return rows


@dataclass(frozen=True)
class Cell:
    mean: float | None
    std: float | None
    n: int
    delta: float | None  # mean minus the `none` row's mean; None for the baseline itself
    status: str | None = None
    """Why there is no (or not every) result: e.g. "running 1/2", "failed 2/2", "not planned",
    `GOLD_WITHHELD`."""
    gold_withheld: tuple[str, ...] = ()
    """Languages predicted but not scored (their gold is withheld)."""

    def as_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "n": self.n, "delta": self.delta, "status": self.status,
                "gold_withheld": list(self.gold_withheld)}


@dataclass
class PaperTable:
    intermediates: list[str]
    targets: list[str]
    metrics: dict[str, str]  # target -> headline metric
    cells: dict[tuple[str, str], Cell]
    """(intermediate, target or AVERAGE) -> cell."""
    best: dict[str, float] = field(default_factory=dict)
    """column -> the best mean in it (marked in every format)."""

    @property
    def columns(self) -> list[str]:
        return [*self.targets, AVERAGE]

    def is_best(self, intermediate: str, column: str) -> bool:
        cell = self.cells[(intermediate, column)]
        return cell.mean is not None and cell.mean == self.best.get(column)

    def to_json(self) -> dict[str, Any]:
        return {
            "intermediates": self.intermediates,
            "targets": self.targets,
            "metrics": self.metrics,
            "modality": {i: modality_label(i) for i in self.intermediates},
            "cells": [
                {"intermediate": i, "target": t, **self.cells[(i, t)].as_dict(), "best": self.is_best(i, t)}
                for i in self.intermediates for t in self.columns
            ],
        }


def seed_scores(rows: Iterable[ResultRow], target: str, metric: str) -> dict[tuple[str, int], float]:
    """(intermediate, seed) -> the metric averaged over the target's languages; an
    (intermediate, seed) with a withheld language has no score (`withheld_languages`)."""
    rows = list(rows)
    withheld = {(r.intermediate, r.seed) for r in rows if r.target == target and r.gold_withheld}
    per_seed: dict[tuple[str, int], list[float]] = defaultdict(list)
    for row in rows:
        if row.target == target and row.metric == metric and (row.intermediate, row.seed) not in withheld:
            per_seed[(row.intermediate, row.seed)].append(row.value)
    return {cell: statistics.fmean(values) for cell, values in per_seed.items()}


def withheld_languages(rows: Iterable[ResultRow], target: str) -> dict[str, tuple[str, ...]]:
    """intermediate -> the target's languages it predicted without gold to score them."""
    found: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if row.target == target and row.gold_withheld:
            found[row.intermediate].add(row.language)
    return {intermediate: tuple(sorted(langs)) for intermediate, langs in found.items()}


def rows_of_frame(frame: pd.DataFrame) -> list[ResultRow]:
    """Tidy rows from `xstilts.analysis.collect`'s frame (the table only needs these columns)."""
    from xstilts.analysis.frame import is_withheld

    withheld = is_withheld(frame)
    return [
        ResultRow(r.intermediate, r.target, int(r.seed), r.language, r.metric, float(r.value), r.key, bool(w))
        for r, w in zip(frame.itertuples(index=False), withheld)
    ]


def _cell(values: Sequence[float], status: str | None) -> Cell:
    if not values:
        return Cell(None, None, 0, None, status or "no results")
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return Cell(statistics.fmean(values), std, len(values), None, status)


def paper_table(
    rows: Iterable[ResultRow] | pd.DataFrame, intermediates: list[str], targets: list[str],
    reasons: dict[tuple[str, str], str] | None = None,
) -> PaperTable:
    """The table from tidy rows (or `xstilts.analysis.collect`'s frame); `reasons` says why a
    cell lacks results (from `missing_reasons`)."""
    if hasattr(rows, "itertuples"):
        rows = rows_of_frame(rows)
    rows = list(rows)
    reasons = reasons or {}
    metrics = {t: TASKS[t].metric for t in targets}
    per_target = {t: seed_scores(rows, t, metrics[t]) for t in targets}
    cells: dict[tuple[str, str], Cell] = {}
    for target in targets:
        withheld = withheld_languages(rows, target)
        for intermediate in intermediates:
            values = [v for (i, _seed), v in sorted(per_target[target].items()) if i == intermediate]
            if intermediate in withheld:
                cells[(intermediate, target)] = Cell(None, None, 0, None, GOLD_WITHHELD, withheld[intermediate])
            else:
                cells[(intermediate, target)] = _cell(values, reasons.get((intermediate, target)))
    for intermediate in intermediates:
        seeds = sorted({s for t in targets for (i, s) in per_target[t] if i == intermediate})
        complete = [statistics.fmean(per_target[t][(intermediate, s)] for t in targets) for s in seeds
                    if all((intermediate, s) in per_target[t] for t in targets)]
        partial = any(cells[(intermediate, t)].mean is None for t in targets) and bool(targets)
        cells[(intermediate, AVERAGE)] = _cell(complete, "needs every target" if partial or not complete else None)
    for column in [*targets, AVERAGE]:
        base = cells[(BASELINE, column)].mean if (BASELINE, column) in cells else None
        for intermediate in intermediates:
            cell = cells[(intermediate, column)]
            if intermediate != BASELINE and base is not None and cell.mean is not None:
                cells[(intermediate, column)] = Cell(cell.mean, cell.std, cell.n, cell.mean - base, cell.status,
                                                     cell.gold_withheld)
    best: dict[str, float] = {}
    for column in [*targets, AVERAGE]:
        means = [mean for i in intermediates if (mean := cells[(i, column)].mean) is not None]
        if means:
            best[column] = max(means)
    return PaperTable(intermediates, targets, metrics, cells, best)


def missing_reasons(missing: pd.DataFrame | None) -> dict[tuple[str, str], str]:
    """(intermediate, target) -> "running 1/3, failed 1/3" from a frame of unfinished
    evaluate nodes (columns intermediate, target, seed, status: `xstilts.analysis.collect`)."""
    reasons: dict[tuple[str, str], str] = {}
    if missing is None or len(missing) == 0:
        return reasons
    for (intermediate, target), group in missing.groupby(["intermediate", "target"]):
        counts = group["status"].value_counts()
        total = len(group)
        reasons[(intermediate, target)] = ", ".join(f"{status} {n}/{total}" for status, n in counts.items())
    return reasons


def format_cell(cell: Cell) -> str:
    if cell.mean is None:
        return cell.status if cell.status and cell.status != "no results" else "-"
    text = f"{cell.mean:.1f} ± {cell.std:.1f}" if cell.std is not None else f"{cell.mean:.1f}"
    if cell.delta is not None:
        text += f" ({cell.delta:+.1f})"
    return text


def modality_label(intermediate: str) -> str:
    """How a row is marked: `multimodal`, `text`, `text control` (a control of a
    multimodal task: the same captions without usable images), or `-` for the baseline."""
    if intermediate == BASELINE:
        return "-"
    task = TASKS.get(intermediate)
    if task is None:  # a mixture of text tasks
        return "text"
    if task.control_of:
        return "text control"
    return task.modality


def _header(table: PaperTable, column: str) -> str:
    return f"{column} ({table.metrics[column]})" if column in table.metrics else column


def render_rich(table: PaperTable) -> Table:
    """A rich Table; the best mean per column is bold, rows are marked by modality."""
    from rich.table import Table
    from rich.text import Text

    out = Table()
    out.add_column("intermediate", no_wrap=True)  # names must stay whole: they tell rows apart
    out.add_column("modality", no_wrap=True)
    for column in table.columns:
        out.add_column(f"{column}\n{table.metrics.get(column, 'mean')}", justify="right")
    for intermediate in table.intermediates:
        values = []
        for column in table.columns:
            text = format_cell(table.cells[(intermediate, column)])
            values.append(Text(text, style="bold") if table.is_best(intermediate, column) else Text(text))
        out.add_row(intermediate, modality_label(intermediate), *values)
    return out


def render_markdown(table: PaperTable) -> str:
    header = ["intermediate", "modality", *(_header(table, c) for c in table.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---", "---", *["---:"] * len(table.columns)]) + "|"]
    for intermediate in table.intermediates:
        cells = []
        for column in table.columns:
            text = format_cell(table.cells[(intermediate, column)])
            cells.append(f"**{text}**" if table.is_best(intermediate, column) else text)
        lines.append("| " + " | ".join([intermediate, modality_label(intermediate), *cells]) + " |")
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
        text = text.replace(char, escaped)
    return text


def render_latex(table: PaperTable) -> str:
    """A booktabs tabular: mean$\\pm$std and the delta in small type."""
    spec = "ll" + "r" * len(table.columns)
    head = " & ".join(["Intermediate", "Modality", *(_latex_escape(c) for c in table.columns)])
    lines = [rf"\begin{{tabular}}{{{spec}}}", r"\toprule", head + r" \\", r"\midrule"]
    for intermediate in table.intermediates:
        cells = []
        for column in table.columns:
            cell = table.cells[(intermediate, column)]
            if cell.mean is None:
                cells.append(_latex_escape(format_cell(cell)))
                continue
            text = f"{cell.mean:.1f}$\\pm${cell.std or 0.0:.1f}"
            if table.is_best(intermediate, column):
                text = rf"\textbf{{{text}}}"
            if cell.delta is not None:
                text += rf" {{\small ({cell.delta:+.1f})}}"
            cells.append(text)
        lines.append(" & ".join([_latex_escape(intermediate), _latex_escape(modality_label(intermediate)), *cells])
                     + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def render_csv(table: PaperTable) -> str:
    """One line per cell: the numbers, not their formatting."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["intermediate", "modality", "target", "metric", "mean", "std", "n", "delta", "best", "status"])
    for intermediate in table.intermediates:
        for column in table.columns:
            cell = table.cells[(intermediate, column)]
            writer.writerow([intermediate, modality_label(intermediate), column, table.metrics.get(column, "mean"),
                             "" if cell.mean is None else f"{cell.mean:.6f}",
                             "" if cell.std is None else f"{cell.std:.6f}", cell.n,
                             "" if cell.delta is None else f"{cell.delta:.6f}",
                             int(table.is_best(intermediate, column)), cell.status or ""])
    return buffer.getvalue()
