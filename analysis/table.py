"""The paper-style table: rows intermediate tasks, columns target tasks.

A cell is the mean and standard deviation over seeds of the target's headline metric
averaged over its languages (as XTREME reports a task), and the delta of that mean
against the `none` row (the pretrained encoder without intermediate training).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from analysis.results import ResultRow
from jobs.tasks.registry import BASELINE, TASKS


@dataclass(frozen=True)
class Cell:
    mean: float | None
    std: float | None
    n: int
    delta: float | None  # mean minus the `none` row's mean; None for the baseline itself

    def as_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "n": self.n, "delta": self.delta}


@dataclass
class PaperTable:
    intermediates: list[str]
    targets: list[str]
    metrics: dict[str, str]  # target -> headline metric
    cells: dict[tuple[str, str], Cell]

    def to_json(self) -> dict[str, Any]:
        return {
            "intermediates": self.intermediates,
            "targets": self.targets,
            "metrics": self.metrics,
            "modality": {i: modality_label(i) for i in self.intermediates},
            "cells": [
                {"intermediate": i, "target": t, **self.cells[(i, t)].as_dict()}
                for i in self.intermediates for t in self.targets
            ],
        }


def seed_scores(rows: list[ResultRow], target: str, metric: str) -> dict[tuple[str, int], float]:
    """(intermediate, seed) -> the metric averaged over the target's languages."""
    per_seed: dict[tuple[str, int], list[float]] = defaultdict(list)
    for row in rows:
        if row.target == target and row.metric == metric:
            per_seed[(row.intermediate, row.seed)].append(row.value)
    return {cell: statistics.fmean(values) for cell, values in per_seed.items()}


def paper_table(rows: list[ResultRow], intermediates: list[str], targets: list[str]) -> PaperTable:
    cells: dict[tuple[str, str], Cell] = {}
    metrics = {t: TASKS[t].metric for t in targets}
    for target in targets:
        scores = seed_scores(rows, target, metrics[target])
        means: dict[str, float] = {}
        for intermediate in intermediates:
            values = [v for (i, _seed), v in sorted(scores.items()) if i == intermediate]
            if values:
                means[intermediate] = statistics.fmean(values)
            std = statistics.stdev(values) if len(values) > 1 else (0.0 if values else None)
            cells[(intermediate, target)] = Cell(means.get(intermediate), std, len(values), None)
        base = means.get(BASELINE)
        for intermediate in intermediates:
            cell = cells[(intermediate, target)]
            if intermediate != BASELINE and base is not None and cell.mean is not None:
                cells[(intermediate, target)] = Cell(cell.mean, cell.std, cell.n, cell.mean - base)
    return PaperTable(intermediates, targets, metrics, cells)


def format_cell(cell: Cell) -> str:
    if cell.mean is None:
        return "-"
    text = f"{cell.mean:.1f} ± {cell.std:.1f}" if cell.std is not None else f"{cell.mean:.1f}"
    if cell.delta is not None:
        text += f" ({cell.delta:+.1f})"
    return text


CAPTION = "cells: mean ± std over seeds of the average over languages; (delta against none); best per column in bold"


def modality_label(intermediate: str) -> str:
    """How a row is marked: `multimodal`, `text`, `text control` (a control of a
    multimodal task: the same captions without usable images), or `-` for the baseline."""
    from jobs.tasks.registry import BASELINE, TASKS

    if intermediate == BASELINE:
        return "-"
    task = TASKS.get(intermediate)
    if task is None:  # a mixture of text tasks
        return "text"
    if task.control_of:
        return "text control"
    return task.modality


def render_rich(table: PaperTable) -> Any:
    """A rich Table; the best mean per column is bold, rows are marked by modality."""
    from rich.table import Table

    out = Table()
    out.add_column("intermediate")
    out.add_column("modality")
    for target in table.targets:
        out.add_column(f"{target}\n{table.metrics[target]}", justify="right")
    best = {
        t: max((table.cells[(i, t)].mean for i in table.intermediates if table.cells[(i, t)].mean is not None), default=None)
        for t in table.targets
    }
    for intermediate in table.intermediates:
        values = []
        for target in table.targets:
            cell = table.cells[(intermediate, target)]
            text = format_cell(cell)
            values.append(f"[bold]{text}[/bold]" if cell.mean is not None and cell.mean == best[target] else text)
        out.add_row(intermediate, modality_label(intermediate), *values)
    return out
