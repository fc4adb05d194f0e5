"""The analysis commands: `xstilts analysis collect/table/compare/plot/report` and `xstilts score`.

They live beside the analysis package they drive; `xstilts.cli` adds them to the app.
`print_results_table` is also what `xstilts launch --wait` prints at its end, so the two
always show the same table.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from xstilts.core.errors import UserError, unknown_choice, warn
from xstilts.core.provenance import mixed_code_warning
from xstilts.launcher.commands.common import (
    OUTPUT_FLAGS, FollowProfileOpt, JsonOpt, OverrideOpt, SpecArg, choice_option, err, open_spec, out,
)
from xstilts.launcher.experiment import Experiment

if TYPE_CHECKING:
    import pandas as pd

    from xstilts.analysis.plots import Figures
    from xstilts.analysis.table import PaperTable

app = typer.Typer(help="Turn results into tidy data, tables, statistics, plots and a report.", no_args_is_help=True,
                  rich_markup_mode=None)


class CollectFormat(str, Enum):
    """`collect --format`: `xstilts.analysis.collect.FORMATS` (a test holds them equal)."""

    csv = "csv"
    parquet = "parquet"
    json = "json"


class TableFormat(str, Enum):
    """`table --format`: `xstilts.analysis.table.FORMATS` (a test holds them equal)."""

    rich = "rich"
    md = "md"
    csv = "csv"
    latex = "latex"
    json = "json"


class ReportFormat(str, Enum):
    """`report --format`: `xstilts.analysis.report.FORMATS` (a test holds them equal)."""

    md = "md"
    html = "html"


class Grouping(str, Enum):
    """`compare --by`: what the intermediate tasks are compared by."""

    modality = "modality"


class Suite(str, Enum):
    """`score --suite`: the benchmarks of `xstilts.core.languages.SUITES` (a test holds them equal)."""

    xtreme = "xtreme"
    xtreme_r = "xtreme-r"


def _frame(experiment: Experiment, no_cache: bool = False) -> pd.DataFrame:
    """The experiment's tidy results (`xstilts.analysis.collect`), read in parallel and
    cached; a bar with an ETA on stderr while nodes are read, if that is a terminal."""
    from xstilts.analysis.collect import collect_frame
    from xstilts.core.progress import ProgressReport

    try:
        with ProgressReport(err, f"{experiment.spec.name}: reading results", total=0, transient=True) as bar:
            return collect_frame(experiment, use_cache=not no_cache,
                                 on_read=lambda read, total: bar.update(read, total=total))
    except ValueError as exc:  # a finished node whose result.json is missing or unreadable
        raise UserError(f"results of '{experiment.spec.name}': {exc}") from None
    except OSError as exc:
        raise UserError(f"storage: cannot read {experiment.store.url}: {exc}") from None


def _missing_note(experiment: Experiment) -> tuple[pd.DataFrame, str]:
    """Unfinished evaluate nodes, and one line saying what is missing ("" if nothing)."""
    from xstilts.analysis.collect import missing_cells

    missing = missing_cells(experiment)
    if len(missing) == 0:
        return missing, ""
    counts = missing["status"].value_counts()
    parts = ", ".join(f"{n} {status}" for status, n in counts.items())
    return missing, f"{len(missing)} of {len(experiment.plan.evaluations())} evaluations missing ({parts})"


NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="read every node again (ignore the rows cache)")]


@app.command("collect")
def analysis_collect(
    spec: SpecArg, override: OverrideOpt = None, profile: FollowProfileOpt = None,
    output: Annotated[Optional[Path], typer.Option(*OUTPUT_FLAGS, help="file to write (default: print CSV)")] = None,
    format_: Annotated[Optional[CollectFormat], choice_option(
        CollectFormat, "--format", what="format", help="file format (default: from --output's suffix)")] = None,
    no_cache: NoCacheOpt = False,
) -> None:
    """One tidy table of every result: intermediate, target, seed, language, metric, value,
    node key, modality, cost."""
    from xstilts.analysis.collect import write_frame

    fmt = None if format_ is None else format_.value
    experiment = open_spec(spec, override, profile)
    frame = _frame(experiment, no_cache)
    _, note = _missing_note(experiment)
    if output is None:
        if fmt not in (None, "csv"):
            raise UserError(f"--format {fmt} needs --output FILE (only csv prints to the terminal)")
        sys.stdout.write(frame.to_csv(index=False))
    else:
        try:
            with _writing_to(output):
                write_frame(frame, output, fmt)
        except ValueError as exc:
            raise UserError(f"--output {output}: {exc}") from None
        err.print(f"{len(frame)} rows -> {output}")
    if note:
        err.print(note, style="yellow")


@app.command("table")
def analysis_table(
    spec: SpecArg, override: OverrideOpt = None, profile: FollowProfileOpt = None, as_json: JsonOpt = False,
    format_: Annotated[TableFormat, choice_option(TableFormat, "--format", what="format", help="how to print it")]
    = TableFormat.rich,
    no_cache: NoCacheOpt = False,
) -> None:
    """The paper-style table: intermediate tasks x target tasks and their average, mean ±
    std over seeds, delta vs none, best per column marked; missing cells say why."""
    from xstilts.analysis.table import render_csv, render_latex, render_markdown

    fmt = "json" if as_json else format_.value
    experiment = open_spec(spec, override, profile)
    table, note = results_table(experiment, no_cache)
    if fmt == "json":
        print(json.dumps(table.to_json(), indent=1))
    elif fmt == "md":
        sys.stdout.write(render_markdown(table))
    elif fmt == "csv":
        sys.stdout.write(render_csv(table))
    elif fmt == "latex":
        sys.stdout.write(render_latex(table))
    else:
        _print_rich_table(experiment, table)
    if note:
        err.print(note, style="yellow")
    mixed = mixed_code_warning(done_code_versions(experiment))
    if mixed:
        warn(mixed)


def done_code_versions(experiment: Experiment) -> dict[str, int]:
    """Code version -> done nodes of the grid, from the snapshot the table was built from
    (`core.provenance.code_versions`): results of several code versions in one table are
    worth a warning."""
    from xstilts.core.provenance import code_versions

    statuses = experiment.statuses(need_cluster=False, fresh=False)
    return code_versions(state for status, state in statuses.values() if status == "done")


def results_table(experiment: Experiment, no_cache: bool = False) -> tuple[PaperTable, str]:
    """The paper table of what the store holds now (missing cells say why), and the line
    saying which evaluations are missing ("" when none)."""
    from xstilts.analysis.table import missing_reasons, paper_table

    missing, note = _missing_note(experiment)
    table = paper_table(_frame(experiment, no_cache), experiment.spec.intermediate.tasks,
                        experiment.spec.target.tasks, missing_reasons(missing))
    return table, note


def print_results_table(experiment: Experiment) -> None:
    """The table `launch --wait` ends with: exactly `xstilts analysis table`'s output."""
    table, _ = results_table(experiment)
    _print_rich_table(experiment, table)


def _print_rich_table(experiment: Experiment, table: PaperTable) -> None:
    from xstilts.analysis.table import CAPTION, render_rich

    out.print(f"{experiment.spec.name}: zero-shot cross-lingual transfer", style="bold")
    out.print(render_rich(table))
    out.print(CAPTION, style="dim")


@app.command("compare")
def analysis_compare(
    spec: SpecArg, override: OverrideOpt = None, profile: FollowProfileOpt = None, as_json: JsonOpt = False,
    by: Annotated[Grouping, choice_option(Grouping, "--by", what="grouping", help="what to compare by")]
    = Grouping.modality,
    boot: Annotated[int, typer.Option("--bootstrap", help="bootstrap resamples")] = 10000,
    no_cache: NoCacheOpt = False,
) -> None:
    """The research question: mean delta of multimodal against text-only intermediate
    tasks (and each multimodal task against its control), 95% bootstrap intervals over
    targets and seeds with Cohen's d_z, a Holm-corrected paired test per target, and a
    per-language breakdown; the counts behind each and a warning where they are too few."""
    if boot < 1:
        raise UserError(f"--bootstrap: {boot} resamples; give at least 1 (default 10000)")
    from xstilts.analysis.stats import compare_by_modality  # scipy: after the cheap checks

    experiment = open_spec(spec, override, profile)
    _, note = _missing_note(experiment)
    comparison = compare_by_modality(_frame(experiment, no_cache), n_boot=boot)
    if as_json:
        print(json.dumps({**comparison.to_json(), "missing": note or None}, indent=1))
    else:
        sys.stdout.write(comparison.render_text().rstrip() + "\n")
    if note:
        err.print(f"{note}: the comparison uses the finished cells only", style="yellow")


@contextmanager
def _writing_to(output: Path) -> Iterator[None]:
    """An --output path that cannot be written (a missing or read-only folder, a full disk) is
    the user's to fix: one message naming the path, exit code 2. The writers replace
    files atomically, so nothing half-written is left behind."""
    try:
        yield
    except OSError as exc:
        raise UserError(f"--output {output}: cannot write {exc.filename or output}: {exc.strerror or exc}") from None


@app.command("plot")
def analysis_plot(
    spec: SpecArg, override: OverrideOpt = None, profile: FollowProfileOpt = None,
    output: Annotated[Path, typer.Option(*OUTPUT_FLAGS, help="folder for the figures (PNG and SVG)")] = Path("figures"),
    target: Annotated[Optional[str], typer.Option("--target", help="target of the per-language bars")] = None,
    no_cache: NoCacheOpt = False,
) -> None:
    """Figures: delta heatmap, per-language bars, training curves, learning-rate sensitivity."""
    experiment = open_spec(spec, override, profile)
    if target is not None and target not in experiment.spec.target.tasks:
        raise UserError(f"--target: {unknown_choice('target', target, experiment.spec.target.tasks)}")
    from xstilts.analysis.plots import render_figures  # matplotlib: after the checks
    _, note = _missing_note(experiment)
    frame = _frame(experiment, no_cache)
    with _writing_to(output):
        figures = render_figures(experiment, frame, output, target=target)
    for path in figures.paths:
        out.print(str(path))
    _print_skipped(figures)
    if note:
        err.print(note, style="yellow")


@app.command("report")
def analysis_report(
    spec: SpecArg, override: OverrideOpt = None, profile: FollowProfileOpt = None,
    output: Annotated[Path, typer.Option(*OUTPUT_FLAGS, help="the report file to write (.md or .html)")]
    = Path("report.md"),
    format_: Annotated[Optional[ReportFormat], choice_option(
        ReportFormat, "--format", what="format",
        help="md (figures linked) or html (one file, figures embedded); default: from --output's suffix")] = None,
    target: Annotated[Optional[str], typer.Option("--target", help="target of the per-language bars")] = None,
    no_cache: NoCacheOpt = False,
) -> None:
    """A report: how it was run (date, model, hyperparameters, seeds, data, code versions,
    compute), the table, the modality comparison and the figures. Figures that are not
    drawn are listed on stderr with the reason."""
    from xstilts.analysis.report import report_format, write_report

    try:
        fmt = report_format(output, None if format_ is None else format_.value)
    except ValueError as exc:
        raise UserError(f"--output {output}: {exc}") from None
    experiment = open_spec(spec, override, profile)
    if target is not None and target not in experiment.spec.target.tasks:
        raise UserError(f"--target: {unknown_choice('target', target, experiment.spec.target.tasks)}")
    frame = _frame(experiment, no_cache)
    with _writing_to(output):
        report = write_report(experiment, frame, output, target=target, fmt=fmt)
    out.print(str(report.path))
    _print_skipped(report.figures)


def _print_skipped(figures: Figures) -> None:
    """One stderr line per figure not drawn, with the reason (`plots.Figures.skipped`)."""
    for name, reason in figures.skipped.items():
        err.print(f"figure not drawn: {figures.titles.get(name, name)}: {reason}", style="yellow")


def score(
    predictions: Annotated[str, typer.Option("--predictions", help="submission folder: <task>/test-<lang>.<ext>")],
    gold: Annotated[str, typer.Option("--gold", help="label folder in the same layout")],
    suite_: Annotated[Suite, choice_option(Suite, "--suite", what="suite", help="the benchmark")] = Suite.xtreme,
    as_json: JsonOpt = False,
) -> None:
    """Score predictions in the official XTREME / XTREME-R layout, as the leaderboard does."""
    from xstilts.analysis.score import available_tasks, score_submission, suite_tables

    suite = suite_.value
    task_langs, groups = suite_tables(suite)
    present, skipped = available_tasks(predictions, gold, suite)
    if not present:
        raise UserError(f"score: no task of {suite} has a folder in both {predictions} and {gold} "
                        f"(expected <task>/test-<lang>.<ext> in each; tasks: {', '.join(task_langs)})")
    result = score_submission(predictions, gold, suite)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    _print_scores(result, suite, task_langs, groups, present, skipped)


def _print_scores(result: dict[str, Any], suite: str, task_langs: dict[str, tuple[str, ...]],
                  groups: dict[str, tuple[str, ...]], present: list[str], skipped: list[str]) -> None:
    from rich.table import Table

    for task in present:
        scores = result[task]
        keys = [k for k in scores if not k.startswith("avg_")]
        table = Table(title=f"{task}: {scores['avg_metric']:.2f}", title_justify="left", min_width=24)
        table.add_column("lang")
        for key in keys:
            table.add_column(key, justify="right")
        for lang in task_langs[task]:
            table.add_row(lang, *(f"{scores[k][lang]:.2f}" for k in keys))
        table.add_row("avg", *(f"{scores[f'avg_{k}']:.2f}" for k in keys), style="bold")
        out.print(table)
    summary = Table(title=f"{suite} scores", title_justify="left")
    summary.add_column("group")
    summary.add_column("tasks")
    summary.add_column("score", justify="right")
    for group, tasks in groups.items():
        value = result.get(group)
        summary.add_row(group, " ".join(tasks), "-" if value is None else f"{value:.2f}")
    overall = result.get("all_task")
    summary.add_row("all_task", f"all {len(task_langs)} tasks", "-" if overall is None else f"{overall:.2f}", style="bold")
    out.print(summary)
    ungrouped = [t for t in present if not any(t in tasks for tasks in groups.values())]
    for task in ungrouped:
        # LAReQA in XTREME-R: the official scorer groups (and scores) it nowhere.
        out.print(f"{task}: in no group of the official scorer; counted in all_task only")
    if skipped:
        out.print(f"not scored (no folder in predictions or gold): {', '.join(skipped)}; "
                  "group and overall scores need every task they average")


