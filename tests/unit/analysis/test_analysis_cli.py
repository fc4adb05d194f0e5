"""The analysis commands through the CLI on a half-finished demo experiment: each works,
says what is missing, and the table's numbers are the collected rows' statistics."""

from __future__ import annotations

import io
import json
import statistics
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from PIL import Image

from tests.support.grid import cli_env, run_cli
from tests.support.results import finish_cell, open_raw, set_status, spec_raw


@pytest.fixture(scope="module")
def half_done(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The demo spec with three quarters of its evaluate nodes done, one failed, the rest running."""
    tmp = tmp_path_factory.mktemp("analysis")
    experiment = open_raw(tmp, spec_raw(str(tmp / "store")))
    evaluations = experiment.plan.evaluations()
    cut = len(evaluations) * 3 // 4
    for node in evaluations[:cut]:
        finish_cell(experiment.store, node)
    set_status(experiment.store, evaluations[cut], "failed")
    for node in evaluations[cut + 1:]:
        set_status(experiment.store, node, "running")
    spec = next(tmp.glob("spec-*.yaml"))
    return experiment, spec, evaluations[cut:]


def _run(*args: str) -> Any:
    result = run_cli("analysis", *args, env=cli_env({"HF_HUB_OFFLINE": "1"}))
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_table_json_equals_statistics_of_the_collected_rows(half_done: Any) -> None:
    experiment, spec, missing = half_done
    rows = pd.read_csv(io.StringIO(_run("collect", str(spec)).stdout), keep_default_na=False)
    table = json.loads(_run("table", str(spec), "--format", "json").stdout)
    from xstilts.core.tasks import TASKS

    checked = 0
    for cell in table["cells"]:
        if cell["target"] == "average":
            continue
        metric = TASKS[cell["target"]].metric
        picked = rows[(rows["intermediate"] == cell["intermediate"]) & (rows["target"] == cell["target"])
                      & (rows["metric"] == metric)]
        per_seed = picked.groupby("seed")["value"].mean().tolist()
        if not per_seed:
            assert cell["mean"] is None and cell["status"], cell
            continue
        assert cell["mean"] == pytest.approx(statistics.fmean(per_seed)), cell
        assert cell["std"] == pytest.approx(statistics.stdev(per_seed) if len(per_seed) > 1 else 0.0), cell
        assert cell["n"] == len(per_seed)
        checked += 1
    assert checked >= 6
    missing_cells = {(n.intermediate, n.task) for n in missing}
    statuses = {(c["intermediate"], c["target"]): c["status"] for c in table["cells"] if c["mean"] is None}
    assert missing_cells & set(statuses), statuses
    assert any("failed" in s for s in statuses.values() if s) or any(
        c["status"] and "failed" in c["status"] for c in table["cells"])


def test_every_command_works_half_finished_and_says_what_is_missing(half_done: Any, tmp_path: Path) -> None:
    experiment, spec, missing = half_done
    note = f"{len(missing)} of {len(experiment.plan.evaluations())} evaluations missing"
    out = tmp_path / "rows.parquet"
    collected = _run("collect", str(spec), "-O", str(out))
    assert note in collected.stderr and len(pd.read_parquet(out)) > 0
    for fmt, probe in (("md", "| intermediate | modality |"), ("latex", r"\toprule"), ("csv", "intermediate,modality"),
                       ("rich", "zero-shot cross-lingual transfer")):
        shown = _run("table", str(spec), "--format", fmt)
        assert probe in shown.stdout and note in shown.stderr, (fmt, shown.stdout[:300])
    compared = _run("compare", str(spec), "--by", "modality", "--bootstrap", "500")
    # named after the targets with finished cells (syn-pos has none yet), never "the XTREME-R score"
    assert "Multimodal intermediate tasks change the mean score over 1 target (syn-sent) by" in compared.stdout
    assert "warning: small sample for the multimodal - text difference" in compared.stdout
    assert "95% CI" in compared.stdout
    assert note in compared.stderr
    figures = tmp_path / "figures"
    plotted = _run("plot", str(spec), "--output", str(figures))
    pngs = sorted(figures.glob("*.png"))
    assert pngs and all(Image.open(p).size[0] > 0 for p in pngs) and note in plotted.stderr
    assert (figures / "delta_heatmap.svg").exists()
    report = tmp_path / "report.md"
    _run("report", str(spec), "-O", str(report))
    text = report.read_text()
    assert "| intermediate | modality |" in text and "missing" in text.lower()


def test_bad_options_are_user_errors(half_done: Any) -> None:
    _, spec, _ = half_done
    for args, message in ((["table", str(spec), "--format", "html"], "valid: rich, md, csv, latex, json"),
                          (["compare", str(spec), "--by", "size"], "valid: modality"),
                          (["collect", str(spec), "--format", "xlsx"], "valid: csv, parquet, json")):
        result = run_cli("analysis", *args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)


def test_an_output_path_that_cannot_be_written_is_a_user_error(half_done: Any, tmp_path: Path) -> None:
    """--output under a regular file (so no folder can be made there): one message naming the
    path, exit code 2, no traceback, for each command that writes files."""
    _, spec, _ = half_done
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    for command, name in (("collect", "rows.csv"), ("plot", "figures"), ("report", "report.md")):
        target = blocker / name
        result = run_cli("analysis", command, str(spec), "-O", str(target), env=cli_env({"HF_HUB_OFFLINE": "1"}))
        assert result.returncode == 2, (command, result.stderr)
        assert f"--output {target}: cannot write" in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert blocker.read_text() == "not a folder\n"
