"""A cell whose test gold is withheld reads "gold withheld" everywhere, never a number.

The evaluate stage lists such languages under `gold_withheld` (predicted, not scored)
and gives no average. Collected into the tidy frame they are typed rows (`gold_withheld`
True, value NaN); the table shows "gold withheld" for the cell, and statistics leave the
cell out with a note saying so. Node files are generated as jobs write them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from tests.support.grid import cli_env, run_cli
from tests.support.results import SCORES, eval_hours, finish, finish_cell, open_raw, spec_raw, train_hours, value_of
from xstilts.analysis.collect import collect_frame, read_frame, train_chain, write_frame
from xstilts.analysis.frame import cell_scores, withheld_cells
from xstilts.analysis.stats import compare_by_modality
from xstilts.analysis.table import GOLD_WITHHELD, format_cell, paper_table, render_csv, render_markdown
from xstilts.core.plan import Node
from xstilts.launcher.experiment import Experiment

WITHHELD = ["qab", "qac"]


def withheld_result(node: Node) -> dict[str, Any]:
    """What evaluate writes when two of the four languages have no gold."""
    scored = {lang: SCORES[node.task](value_of(node, lang)) for lang in ("en", "qaa")}
    return {"task": node.task, "metric": "seqeval_f1", "languages": scored, "gold_withheld": WITHHELD,
            "average": None, "averages": None, "node": {"key": node.key, "stage": node.stage, "seconds": 1.0}}


@pytest.fixture
def experiment(tmp_path: Path) -> Experiment:
    """The demo grid done; syn-pos's test gold withheld in qab and qac for every cell."""
    experiment = open_raw(tmp_path, spec_raw(str(tmp_path / "store")))
    for node in experiment.plan.evaluations():
        if node.task != "syn-pos":
            finish_cell(experiment.store, node)
            continue
        for train in train_chain(node):
            finish(experiment.store, train, train_hours(train))
        finish(experiment.store, node, eval_hours(node), withheld_result(node))
    return experiment


def test_frame_has_typed_withheld_rows(experiment: Experiment, tmp_path: Path) -> None:
    frame = collect_frame(experiment, workers=2, use_cache=False)
    withheld = frame[frame["gold_withheld"]]
    assert frame.dtypes["gold_withheld"] == "bool"
    assert set(withheld["target"]) == {"syn-pos"} and set(withheld["language"]) == set(WITHHELD)
    assert set(withheld["metric"]) == {"seqeval_f1"} and withheld["value"].isna().all()
    assert not frame.loc[~frame["gold_withheld"], "value"].isna().any()
    scores = cell_scores(frame)
    assert set(scores["target"]) == {"syn-sent"}  # no partial mean for syn-pos
    assert set(withheld_cells(frame)["languages"]) == {"qab, qac"}
    for suffix in ("csv", "parquet", "json"):  # the column survives every file format
        path = tmp_path / f"frame.{suffix}"
        write_frame(frame, path)
        back = read_frame(path)
        assert back["gold_withheld"].tolist() == frame["gold_withheld"].tolist(), suffix


def test_table_shows_gold_withheld_not_a_number(experiment: Experiment) -> None:
    frame = collect_frame(experiment, workers=2, use_cache=False)
    targets = ["syn-sent", "syn-pos"]
    intermediates = sorted(set(frame["intermediate"]))
    table = paper_table(frame, intermediates, targets)
    for intermediate in intermediates:
        cell = table.cells[(intermediate, "syn-pos")]
        assert cell.mean is None and cell.status == GOLD_WITHHELD and cell.gold_withheld == tuple(WITHHELD)
        assert format_cell(cell) == GOLD_WITHHELD
        assert table.cells[(intermediate, "syn-sent")].mean is not None
        assert table.cells[(intermediate, "average")].mean is None
    assert "| gold withheld |" in render_markdown(table)
    assert ",gold withheld\n" in render_csv(table)
    cells = table.to_json()["cells"]
    assert {c["status"] for c in cells if c["target"] == "syn-pos"} == {GOLD_WITHHELD}
    assert all(c["mean"] is None or not math.isnan(c["mean"]) for c in cells)


def test_statistics_leave_withheld_cells_out_with_a_note(experiment: Experiment) -> None:
    frame = collect_frame(experiment, workers=2, use_cache=False)
    comparison = compare_by_modality(frame, n_boot=50, seed=0)
    notes = [p for p in comparison.problems if "gold withheld" in p]
    assert notes and "syn-pos (qab, qac)" in notes[0]
    assert "gold withheld" in comparison.render_text()
    assert {t.target for t in comparison.targets} <= {"syn-sent"}


def test_cli_table_prints_gold_withheld(experiment: Experiment, tmp_path: Path) -> None:
    spec = next(tmp_path.glob("spec-*.yaml"))  # what open_raw wrote for the fixture
    result = run_cli("analysis", "table", str(spec), "--format", "md", env=cli_env({"HF_HUB_OFFLINE": "1"}))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "intermediate" not in line]
    assert rows and all("gold withheld" in row for row in rows)
