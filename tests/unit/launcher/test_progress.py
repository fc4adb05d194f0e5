"""Long work shows a bar with an ETA on a terminal and plain lines elsewhere (issue 18):
`ProgressReport` (used by `launch --wait` and `analysis collect`) and the progress
callback of `collect_frame`."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import pytest
from rich.console import Console

from tests.support.results import finish_cell, open_raw, spec_raw
from xstilts.analysis.collect import collect_frame
from xstilts.launcher.commands.common import styled
from xstilts.core.progress import ProgressReport, duration

EVENTS = ["12:00:01 [  1/10] done        prepare:model [e96493aa] 3s",
          "12:00:02 [  1/10] failed      train-target mnli->xnli seed=1 [f1c16ece] exit code 1"]


def _run(console: Console) -> None:
    with ProgressReport(console, "demo: nodes done", total=10, completed=1) as bar:
        bar.line(EVENTS[0])
        bar.update(3)
        bar.line(styled((EVENTS[1][:26], "red"), EVENTS[1][26:]))


def test_on_a_terminal_the_lines_print_above_a_bar_with_an_eta() -> None:
    buffer = io.StringIO()
    _run(Console(file=buffer, force_terminal=True, width=120, height=40, markup=False))
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r", "", buffer.getvalue())
    assert EVENTS[0] in text and EVENTS[1] in text
    assert re.search(r"demo: nodes done .* 3/10 elapsed \d:\d\d:\d\d ETA", text), text


def test_off_a_terminal_only_the_lines_are_written() -> None:
    buffer = io.StringIO()
    _run(Console(file=buffer, force_terminal=False, width=120, markup=False))
    assert buffer.getvalue() == "\n".join(EVENTS) + "\n"


def test_collect_reports_each_node_it_reads(tmp_path: Path) -> None:
    experiment = open_raw(tmp_path, spec_raw(str(tmp_path / "store")))
    evaluations = experiment.plan.evaluations()
    for node in evaluations[: len(evaluations) // 2]:
        finish_cell(experiment.store, node)
    calls: list[tuple[int, int]] = []
    collect_frame(experiment, workers=4, on_read=lambda read, total: calls.append((read, total)))
    assert sorted(calls) == [(i, len(evaluations)) for i in range(1, len(evaluations) + 1)]
    again: list[tuple[int, int]] = []  # the finished nodes are cached now: only the others are read
    collect_frame(experiment, workers=4, on_read=lambda read, total: again.append((read, total)))
    rest = len(evaluations) - len(evaluations) // 2
    assert sorted(again) == [(i, rest) for i in range(1, rest + 1)]


def test_data_check_reports_each_task_it_checks(tmp_path: Path) -> None:
    from xstilts.cli import task_data
    from xstilts.launcher.commands.data import check_plan, needed_tasks

    experiment = open_raw(tmp_path, spec_raw(str(tmp_path / "store")))
    calls: list[tuple[int, int]] = []
    results = check_plan(experiment.plan, task_data(), lambda checked, total: calls.append((checked, total)))
    total = len(needed_tasks(experiment.plan))
    assert total > 1 and len(results) == total
    assert calls == [(i, total) for i in range(1, total + 1)]


def test_with_a_log_and_no_terminal_progress_lines_carry_the_rate_and_eta(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("xstilts.test-progress")
    buffer = io.StringIO()
    with caplog.at_level(logging.INFO, logger=log.name):
        with ProgressReport(Console(file=buffer, force_terminal=False), "encode", total=8, log=log, log_every_s=0,
                            unit="img") as bar:
            bar.advance(2)
            bar.update(6)
        with ProgressReport(Console(file=buffer, force_terminal=False), "quiet", total=8, log=log,
                            log_every_s=3600) as bar:
            bar.advance(8)  # nothing in between: only the closing line
    lines = [r.getMessage() for r in caplog.records]
    assert re.fullmatch(r"encode: 2/8 img \(25\.0%\), [\d,.]+ img/s, ETA \d+(s|m\d\ds|h\d\dm)", lines[0]), lines
    assert lines[1].startswith("encode: 6/8 img (75.0%)") and "ETA" in lines[1]
    assert lines[2].startswith("encode: 6/8 img (75.0%)") and lines[2].endswith(("s", "m")) and ", in " in lines[2]
    assert len(lines) == 4 and lines[3].startswith("quiet: 8/8 (100.0%)") and ", in " in lines[3]
    assert buffer.getvalue() == ""  # the lines go to the log, not the console


def test_durations_read_as_a_person_writes_them() -> None:
    assert [duration(s) for s in (0.4, 45, 185, 7620)] == ["0s", "45s", "3m05s", "2h07m"]
