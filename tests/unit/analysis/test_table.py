"""The paper-style table: means, standard deviations and deltas from tidy rows."""

from __future__ import annotations

import statistics

import pytest

from xstilts.analysis.table import ResultRow, format_cell, paper_table, rows_from_result


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
    assert len(table["cells"]) == 6  # two targets and the average, for each row
    assert table["metrics"] == {"syn-sent": "accuracy", "syn-pos": "seqeval_f1"}
    assert table["modality"] == {"none": "-", "syn-rate": "text"}


def _two_targets() -> list[ResultRow]:
    rows = _rows()
    for (intermediate, seed), value in {("none", 1): 50.0, ("none", 2): 54.0, ("syn-rate", 1): 60.0}.items():
        result = {"languages": {"en": {"seqeval_f1": value, "f1": value}}}
        rows += rows_from_result(result, intermediate, "syn-pos", seed, key=f"p{seed}")
    return rows


def test_average_column_needs_every_target_per_seed() -> None:
    table = paper_table(_two_targets(), ["none", "syn-rate"], ["syn-sent", "syn-pos"])
    none = table.cells[("none", "average")]
    assert none.mean == pytest.approx(statistics.fmean([(70 + 50) / 2, (72 + 54) / 2])) and none.n == 2
    rate = table.cells[("syn-rate", "average")]
    assert rate.n == 1 and rate.mean == pytest.approx((80 + 60) / 2)  # seed 2 lacks syn-pos
    assert rate.delta == pytest.approx(rate.mean - none.mean)


def test_missing_cells_say_why_in_every_format() -> None:
    import json

    import pandas as pd

    from xstilts.analysis.table import missing_reasons, render_csv, render_latex, render_markdown, render_rich

    missing = pd.DataFrame([
        {"intermediate": "syn-chunk", "target": "syn-sent", "seed": 1, "status": "running"},
        {"intermediate": "syn-chunk", "target": "syn-sent", "seed": 2, "status": "failed"},
    ])
    table = paper_table(_rows(), ["none", "syn-rate", "syn-chunk"], ["syn-sent"], missing_reasons(missing))
    cell = table.cells[("syn-chunk", "syn-sent")]
    assert cell.mean is None and cell.status == "running 1/2, failed 1/2"
    assert format_cell(cell) == "running 1/2, failed 1/2"
    markdown = render_markdown(table)
    assert "| syn-chunk | text | running 1/2, failed 1/2 |" in markdown
    assert "**80.0 ± 0.0 (+9.0)**" in markdown  # the best of the column is bold
    latex = render_latex(table)
    assert r"\textbf{80.0$\pm$0.0} {\small (+9.0)}" in latex and "syn-chunk" in latex and r"\toprule" in latex
    lines = render_csv(table).splitlines()
    assert lines[0].startswith("intermediate,modality,target,metric,mean,std,n,delta,best,status")
    assert any(line.startswith("syn-rate,text,syn-sent,accuracy,80.000000") and ",1," in line for line in lines)
    cells = {(c["intermediate"], c["target"]): c for c in json.loads(json.dumps(table.to_json()))["cells"]}
    assert cells[("syn-chunk", "syn-sent")]["status"] == "running 1/2, failed 1/2"
    assert cells[("syn-rate", "syn-sent")]["best"] is True
    assert render_rich(table).row_count == 3
