"""Collect an experiment's evaluation results into tidy rows.

One row per (intermediate, target, seed, language, metric): the shape every later
analysis (tables, statistics, plots) starts from. Torch-free, so it runs on a login node.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from xstilts.launcher.experiment import Experiment


@dataclass(frozen=True)
class ResultRow:
    intermediate: str
    target: str
    seed: int
    language: str
    metric: str
    value: float
    key: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def rows_from_result(result: dict[str, Any], intermediate: str, target: str, seed: int, key: str) -> list[ResultRow]:
    """Rows of one evaluate node's result.json (every metric of every language)."""
    rows = []
    for language, metrics in sorted(result.get("languages", {}).items()):
        for metric, value in sorted(metrics.items()):
            rows.append(ResultRow(intermediate, target, seed, language, metric, float(value), key))
    return rows


def collect(experiment: Experiment) -> list[ResultRow]:
    """Rows of every finished evaluate node of the experiment."""
    rows: list[ResultRow] = []
    for node in experiment.plan.evaluations():
        if not experiment.store.is_done(node.stage, node.key):
            continue
        result = experiment.result(node)
        if result is None:
            continue
        assert node.intermediate is not None and node.task is not None and node.seed is not None
        rows.extend(rows_from_result(result, node.intermediate, node.task, node.seed, node.key))
    return rows
