"""The paper-style table: means, standard deviations and deltas from tidy rows."""

from __future__ import annotations

import statistics

import pytest

from analysis.results import ResultRow, rows_from_result
from analysis.table import format_cell, paper_table


def _rows() -> list[ResultRow]:
    rows = []
    values = {  # (intermediate, seed) -> per-language accuracy on syn-sent
        ("none", 1): {"en": 80.0, "qaa": 60.0},
        ("none", 2): {"en": 82.0, "qaa": 62.0},
        ("syn-rate", 1): {"en": 90.0, "qaa": 70.0},
        ("syn-rate", 2): {"en": 86.0, "qaa": 74.0},
    }
    for (intermediate, seed), languages in values.items():
        result = {"languages": {lang: {"accuracy": v} for lang, v in languages.items()}}
        rows += rows_from_result(result, intermediate, "syn-sent", seed, key=f"k{seed}")
    return rows


def test_cells_are_mean_and_std_over_seeds_of_language_averages() -> None:
    table = paper_table(_rows(), ["none", "syn-rate", "syn-chunk"], ["syn-sent"])
    none = table.cells[("none", "syn-sent")]
    rate = table.cells[("syn-rate", "syn-sent")]
    assert none.mean == pytest.approx(71.0) and none.n == 2
    assert none.std == pytest.approx(statistics.stdev([70.0, 72.0]))
    assert none.delta is None
    assert rate.mean == pytest.approx(80.0)
    assert rate.delta == pytest.approx(9.0)
    missing = table.cells[("syn-chunk", "syn-sent")]
    assert missing.mean is None and missing.n == 0 and format_cell(missing) == "-"
    assert format_cell(rate) == f"80.0 ± {rate.std:.1f} (+9.0)"


def test_json_lists_every_cell() -> None:
    table = paper_table(_rows(), ["none", "syn-rate"], ["syn-sent", "syn-pos"]).to_json()
    assert len(table["cells"]) == 4
    assert table["metrics"] == {"syn-sent": "accuracy", "syn-pos": "seqeval_f1"}
