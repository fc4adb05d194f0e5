"""The report of an experiment: how it was run (date, model, hyperparameters with tuned
values, seeds, data revisions, code versions, compute), what ran, the paper table, the
modality comparison and the figures with what each shows, or why it is not drawn.

Markdown (figures linked, to go into a repository or an issue next to its figures
folder) or one HTML file with the figures embedded as data URIs, to be shared alone.
Everything comes from the tidy frame (`xstilts.analysis.collect`) and the store, so the
report can be rewritten at any point of a run: missing cells and unfinished nodes are
listed rather than hidden.
"""

from __future__ import annotations

import base64
import html
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from xstilts.launcher.experiment import Experiment

from xstilts.analysis.collect import format_of, missing_cells
from xstilts.analysis.plots import Figures, render_figures
from xstilts.analysis.runinfo import UNKNOWN_CODE, RunInfo, describe_provenance, run_info
from xstilts.analysis.table import CAPTION, PaperTable, missing_reasons, modality_label, paper_table, render_markdown
from xstilts.core.atomic import replacing

MAX_MISSING_LISTED = 20
"""Beyond this many missing cells the list is cut (with a count): a fresh grid misses all."""

FORMATS = ("md", "html")
"""Report formats (`analysis report --format`; a test holds the CLI's choices equal)."""
_SUFFIXES = {".md": "md", ".markdown": "md", ".html": "html", ".htm": "html"}


def report_format(path: str | Path, fmt: str | None = None) -> str:
    """`fmt`, or the format the file's suffix names; ValueError naming the choices."""
    return format_of(path, fmt, FORMATS, _SUFFIXES)


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


def _value(value: Any) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def hyperparameters_section(info: RunInfo) -> str:
    """Both training stages side by side; a searched value reads "searched", the chosen
    values follow per tuned task (or cell), marked as tuned."""
    stages = info.hyperparameters
    names = list(stages[0].hparams.model_dump())
    lines = ["### Hyperparameters", "", _md_row(["hyperparameter", *(f"{s.stage} training" for s in stages)]),
             _md_row(["---", *("---" for _ in stages)])]
    for name in names:
        cells = []
        for stage in stages:
            value = _value(getattr(stage.hparams, name))
            if name == "epochs" and stage.hparams.max_steps is not None:
                value += " (unused: max_steps set)"
            cells.append(f"searched (spec default {value}; tuned values below)" if name in stage.searched else value)
        lines.append(_md_row([name, *cells]))
    lines.append("")
    for stage in stages:
        for task, overrides in stage.per_task.items():
            lines.append(f"- {stage.stage} `{task}` overrides: "
                         + ", ".join(f"{k}={_value(v)}" for k, v in overrides.items()))
        if stage.search is None:
            continue
        search = stage.search
        space = "; ".join(f"{name} {_dimension(dim)}" for name, dim in search.space.items())
        lines.append(f"- {stage.stage} search ({search.scope}, {search.scheduler}, {search.trials} trial(s), "
                     f"{search.budget_steps} steps each): {space}; {len(stage.tuned)} of {stage.tune_nodes} "
                     "tune nodes finished")
        for choice in stage.tuned:
            chosen = ", ".join(f"{k}={_value(v)}" for k, v in choice.best.items())
            dev = f" (best English dev {choice.metric} {choice.best_metric:.2f})" if choice.best_metric is not None \
                else ""
            lines.append(f"  - tuned for {choice.label}: {chosen}{dev}")
    return "\n".join(lines).rstrip()


def _dimension(dim: Any) -> str:
    if dim.loguniform is not None:
        return f"log-uniform [{dim.loguniform[0]:g}, {dim.loguniform[1]:g}]"
    values = dim.grid if dim.grid is not None else dim.choice
    kind = "grid" if dim.grid is not None else "choice of"
    return f"{kind} {{{', '.join(f'{v:g}' for v in values or [])}}}"


def data_section(info: RunInfo) -> str:
    lines = ["### Data", "", _md_row(["task", "source", "revision asked", "loaded (dataset @ revision)", "files"]),
             _md_row(["---"] * 5)]
    for source in info.data:
        loaded = "; ".join(source.resolved) if source.resolved else ("-" if source.prepared else "not prepared yet")
        files = f"`{source.files_signature[:16]}`" if source.files_signature else "-"
        lines.append(_md_row([source.task, source.origin, source.requested_revision or "-", loaded, files]))
    return "\n".join(lines)


def code_section(info: RunInfo) -> str:
    """The code versions of the done nodes; a warning first when there is more than one."""
    versions = info.code.versions
    lines = ["### Code versions", ""]
    if not versions:
        return "\n".join(lines + ["No node is done yet."])
    if info.code.stale:
        lines += [f"**Warning: stale code.** The done nodes come from {len(info.code.known)} code versions: "
                  "results made by different code may not be comparable. The versions and the nodes "
                  "each finished are listed below.", ""]
    unknown = sum(v.total for v in versions if v.code == UNKNOWN_CODE)
    if unknown and info.code.known:
        lines += [f"{unknown} done nodes predate provenance: whether their code matches cannot be told.", ""]
    for version in versions:
        stages = ", ".join(f"{stage} {count}" for stage, count in version.nodes.items())
        detail = describe_provenance(version.example)
        code = version.code if version.code == UNKNOWN_CODE else f"`{version.code}`"
        lines.append(f"- {code}{f' ({detail})' if detail else ''}: {version.total} done nodes ({stages})")
    return "\n".join(lines)


def compute_section(info: RunInfo) -> str:
    lines = ["### Compute", "",
             "Every attempt counts (failed and preempted ones too): wall hours times the attempt's GPUs "
             "(from its provenance; the spec's `resources` for attempts without one), CPU cores when no GPU.",
             "", _md_row(["stage", "nodes run", "attempts", "GPU-hours", "CPU-hours"]),
             _md_row(["---", "---:", "---:", "---:", "---:"])]
    total_gpu = total_cpu = 0.0
    notes = []
    for stage in info.compute:
        total_gpu += stage.gpu_hours
        total_cpu += stage.cpu_hours
        lines.append(_md_row([stage.stage, str(stage.nodes), str(stage.attempts), f"{stage.gpu_hours:.2f}",
                              f"{stage.cpu_hours:.2f}"]))
        if stage.unmeasured:
            notes.append(f"- {stage.stage}: {stage.unmeasured} attempt(s) without an end time are not counted")
        if stage.from_spec:
            notes.append(f"- {stage.stage}: devices of {stage.from_spec} attempt(s) from the spec's resources")
    lines.append(_md_row(["**total**", "", "", f"**{total_gpu:.2f}**", f"**{total_cpu:.2f}**"]))
    return "\n".join(lines + ([""] + notes if notes else []))


def how_section(info: RunInfo) -> str:
    """Everything a reader needs to judge or reproduce the numbers, before them."""
    head = ["## How it was run", "", f"- date: {info.generated}", f"- model: {info.model}",
            f"- seeds: {', '.join(map(str, info.seeds))}"]
    return "\n\n".join(["\n".join(head), hyperparameters_section(info), data_section(info), code_section(info),
                        compute_section(info)])


def relative_link(base: Path) -> Callable[[Path], str]:
    """Figure links relative to the report's folder, so report and figures can move together."""
    return lambda png: Path(os.path.relpath(png, base)).as_posix()


def data_uri(png: Path) -> str:
    """The PNG itself, base64, so that an HTML report is one file."""
    return "data:image/png;base64," + base64.b64encode(Path(png).read_bytes()).decode("ascii")


def figures_section(figures: Figures, link: Callable[[Path], str]) -> str:
    """Each drawn figure with what it shows; each figure not drawn with the reason."""
    lines = ["## Figures", ""]
    for name, png in figures.pngs().items():
        lines += [f"### {figures.titles[name]}", "", f"![{figures.titles[name]}]({link(png)})", ""]
        if figures.captions.get(name):
            lines += [f"*{figures.captions[name]}*", ""]
    if figures.skipped:
        lines.append("Not drawn:")
        lines.append("")
        lines += [f"- {figures.titles[name]}: {reason}" for name, reason in figures.skipped.items()]
    return "\n".join(lines).rstrip()


HTML_STYLE = """body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em;line-height:1.45}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:.25em .6em}
th{background:#f3f3f3}img{max-width:100%}code{background:#f6f6f6;padding:0 .2em}"""


def to_html(markdown: str, title: str) -> str:
    """A standalone HTML page of the Markdown (tables included; no external resource)."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark").enable("table").render(markdown)
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{HTML_STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n")


@dataclass(frozen=True)
class Report:
    """What `write_report` wrote: the file, and the figures (drawn and skipped with reasons)."""

    path: Path
    figures: Figures


def write_report(experiment: Experiment, frame: pd.DataFrame, out_path: Path, figures_dir: Path | None = None,
                 target: str | None = None, fmt: str | None = None, now: datetime | None = None) -> Report:
    """Write the report to `out_path` (format `fmt` or from its suffix) and its figures to
    `figures_dir` (default: a `figures` folder next to the report)."""
    out_path = Path(out_path)
    fmt = report_format(out_path, fmt)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figures = render_figures(experiment, frame, Path(figures_dir or out_path.parent / "figures"), target)
    spec = experiment.spec
    statuses = experiment.statuses(need_cluster=False)
    missing = missing_cells(experiment, statuses)
    table = table_from_frame(frame, spec.intermediate.tasks, spec.target.tasks, missing)
    generated = (now or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    title = f"xstilts report: {spec.name}"
    sections = [
        f"# {title}",
        how_section(run_info(experiment, statuses, generated)),
        run_section(experiment, frame, statuses, missing),
        "## Results\n\n" + render_markdown(table).strip() + f"\n\n{CAPTION}.",
        comparison_section(frame),
        figures_section(figures, data_uri if fmt == "html" else relative_link(out_path.parent)),
    ]
    markdown = "\n\n".join(sections) + "\n"
    with replacing(out_path) as tmp:
        tmp.write_text(to_html(markdown, title) if fmt == "html" else markdown)
    return Report(out_path, figures)
