"""A Markdown report of an experiment: what ran, the paper table, the modality
comparison and the figures, in one file that can go into a repository or an issue.

Everything comes from the tidy frame (`xstilts.analysis.collect`) and the store, so the report
can be rewritten at any point of a run: missing cells and unfinished nodes are listed
rather than hidden.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from xstilts.launcher.experiment import Experiment

from xstilts.analysis.collect import missing_cells
from xstilts.analysis.plots import Figures, render_figures
from xstilts.analysis.table import CAPTION, PaperTable, missing_reasons, modality_label, paper_table, render_markdown
from xstilts.core.atomic import replacing

MAX_MISSING_LISTED = 20
"""Beyond this many missing cells the list is cut (with a count): a fresh grid misses all."""


# ----------------------------------------------------------------------------- table


def table_from_frame(frame: pd.DataFrame, intermediates: Sequence[str] = (), targets: Sequence[str] = (),
                     missing: pd.DataFrame | None = None) -> PaperTable:
    """The paper table over the spec's rows and columns (and any extra found in the
    frame); cells without results say why, from `missing` (`xstilts.analysis.collect.missing_cells`)."""
    extra_rows = sorted(set(frame["intermediate"]) - set(intermediates))
    extra_columns = sorted(set(frame["target"]) - set(targets))
    return paper_table(frame, [*intermediates, *extra_rows], [*targets, *extra_columns],
                       reasons=missing_reasons(missing))


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


# ----------------------------------------------------------------------------- what ran


def status_table(experiment: Experiment, statuses: dict[str, tuple[str, dict[str, Any]]]) -> str:
    """Nodes per stage and status (the store's view; no SLURM query needed)."""
    counts: Counter[tuple[str, str]] = Counter(
        (node.stage, statuses[node.key][0]) for node in experiment.plan.nodes if node.key in statuses
    )
    stages = list(dict.fromkeys(node.stage for node in experiment.plan.nodes))
    names = sorted({status for _stage, status in counts}, key=lambda s: (s != "done", s))
    lines = [_md_row(["stage", *names, "total"]), _md_row(["---", *("---:" for _ in names), "---:"])]
    for stage in stages:
        row = [counts[(stage, status)] for status in names]
        lines.append(_md_row([stage, *map(str, row), str(sum(row))]))
    return "\n".join(lines)


def cost_line(frame: pd.DataFrame) -> str | None:
    """Compute of the evaluated cells (one cost per evaluate node), per unit."""
    if frame.empty or "cost_hours" not in frame or "cost_unit" not in frame:
        return None
    cells = frame.drop_duplicates("key").dropna(subset=["cost_hours"])
    if cells.empty:
        return None
    totals = cells.groupby("cost_unit")["cost_hours"].sum()
    parts = [f"{hours:.2f} {unit}-hours" for unit, hours in totals.items()]
    return "compute of the evaluated cells (target training and evaluation): " + ", ".join(parts)


def run_section(experiment: Experiment, frame: pd.DataFrame, statuses: dict[str, tuple[str, dict[str, Any]]],
                missing: pd.DataFrame) -> str:
    """Spec, node counts by status, and every cell without a result with what holds it up."""
    spec = experiment.spec
    planned = len(experiment.plan.evaluations())
    lines = [
        "## What was run",
        "",
        f"- spec: `{spec.name}`, storage `{experiment.store.url}`",
        f"- intermediate tasks: {', '.join(f'{t} ({modality_label(t)})' for t in spec.intermediate.tasks)}",
        f"- target tasks: {', '.join(spec.target.tasks)}; seeds: {', '.join(map(str, spec.seeds))}",
        f"- cells evaluated: {planned - len(missing)} of {planned}",
    ]
    cost = cost_line(frame)
    if cost:
        lines.append(f"- {cost}")
    lines += ["", status_table(experiment, statuses), ""]
    if missing.empty:
        lines.append("No missing cells: every planned evaluation is done.")
        return "\n".join(lines)
    lines += [f"Missing cells ({len(missing)}; intermediate -> target, seed: status of the node holding it up):", ""]
    for row in missing.head(MAX_MISSING_LISTED).itertuples(index=False):
        lines.append(f"- {row.intermediate} -> {row.target}, seed {row.seed}: {row.status} ({row.stage})")
    if len(missing) > MAX_MISSING_LISTED:
        lines.append(f"- ... and {len(missing) - MAX_MISSING_LISTED} more")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- sections


def comparison_section(frame: pd.DataFrame) -> str:
    """The multimodal vs text comparison of `xstilts.analysis.stats`: its sentence, or the
    reason it cannot be given (a missing group), then its tables. Imported here so that
    importing the report module stays cheap (scipy loads only when a report is written)."""
    from xstilts.analysis.stats import compare_by_modality

    body = compare_by_modality(frame).render_markdown().strip()
    return "## Multimodal vs text intermediate tasks\n\n" + body


def figures_section(figures: Figures, base: Path) -> str:
    """Links relative to the report's folder, so report and figures can move together."""
    lines = ["## Figures", ""]
    for name, png in figures.pngs().items():
        link = Path(os.path.relpath(png, base)).as_posix()
        lines += [f"### {figures.titles[name]}", "", f"![{figures.titles[name]}]({link})", ""]
    if figures.skipped:
        lines.append("Not drawn (no data yet):")
        lines.append("")
        lines += [f"- {figures.titles[name]}: {reason}" for name, reason in figures.skipped.items()]
    return "\n".join(lines).rstrip()


def write_report(experiment: Experiment, frame: pd.DataFrame, out_path: Path, figures_dir: Path | None = None,
                 target: str | None = None) -> Path:
    """Write the report to `out_path` and its figures to `figures_dir` (default: a
    `figures` folder next to the report); returns `out_path`."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figures = render_figures(experiment, frame, Path(figures_dir or out_path.parent / "figures"), target)
    spec = experiment.spec
    statuses = experiment.statuses(need_cluster=False)
    missing = missing_cells(experiment, statuses)
    table = table_from_frame(frame, spec.intermediate.tasks, spec.target.tasks, missing)
    sections = [
        f"# xstilts report: {spec.name}",
        run_section(experiment, frame, statuses, missing),
        "## Results\n\n" + render_markdown(table).strip() + f"\n\n{CAPTION}.",
        comparison_section(frame),
        figures_section(figures, out_path.parent),
    ]
    with replacing(out_path) as tmp:
        tmp.write_text("\n\n".join(sections) + "\n")
    return out_path
