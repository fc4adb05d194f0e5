"""The experiment's figures: delta heatmap, per-language bars, training curves, LR sensitivity.

Each figure has a pure `*_data` function (the numbers behind it, testable on generated
frames), a `plot_*` function that draws those numbers into PNG and SVG (and draws nothing
when there is nothing to show, so a half-finished grid still gets its other figures),
and `plot_all` that reads what it needs from an experiment. Torch-free: it runs on a
login node next to the store.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # no display on a login node; set before anything imports pyplot

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from xstilts.analysis.frame import cell_scores, deltas, headline_metric  # noqa: E402
from xstilts.analysis.table import modality_label  # noqa: E402
from xstilts.core.atomic import replacing  # noqa: E402
from xstilts.core.metrics import PRIMARY_KEY  # noqa: E402

if TYPE_CHECKING:
    from xstilts.launcher.experiment import Experiment

log = logging.getLogger(__name__)

HEATMAP_TITLE = "Delta against no intermediate training (points)"
CURVES_TITLE = "English dev metric during training"
LR_TITLE = "Learning-rate sensitivity (tune nodes)"
MAX_CURVES_PER_PANEL = 12
"""More lines than this in one panel are unreadable; the rest are left out (and logged)."""
MAX_BANDS_PER_PANEL = 3
"""Seed bands of more lines than this overlap into one smear: a panel with more lines shows
each line's seed spread as an error bar at its last evaluation instead."""



@dataclass
class Figures:
    """What `render_figures` did: files written per figure, and why a figure was skipped."""

    written: dict[str, list[Path]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    titles: dict[str, str] = field(default_factory=dict)
    captions: dict[str, str] = field(default_factory=dict)
    """What a drawn figure shows, in words a reader needs (what the bars, bands and lines are)."""

    @property
    def paths(self) -> list[Path]:
        return [path for paths in self.written.values() for path in paths]

    def pngs(self) -> dict[str, Path]:
        """Figure name -> its PNG (what a Markdown report links)."""
        return {name: next(p for p in paths if p.suffix == ".png") for name, paths in self.written.items()}


# ----------------------------------------------------------------------------- saving


def _save(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
    """Write `fig` as PNG and SVG. SVG text stays text (not glyph paths) so the files
    can be searched and their titles checked."""
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.svg"]
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "xstilts"}):
        with replacing(paths[0]) as png:
            fig.savefig(png, dpi=120, bbox_inches="tight")
        with replacing(paths[1]) as svg:
            fig.savefig(svg, bbox_inches="tight", metadata={"Date": None})
    return paths


def _ordered(present: Iterable[str], preferred: Sequence[str] | None) -> list[str]:
    """`present` names in the spec's order (`preferred`), unknown ones after it sorted:
    rows and columns then read like the spec and the paper table."""
    present = list(dict.fromkeys(present))
    order = [name for name in (preferred or []) if name in present]
    return order + sorted(name for name in present if name not in order)


def _modalities(frame: pd.DataFrame) -> dict[str, str]:
    """intermediate -> modality label, from the frame where it has one."""
    labels = {name: modality_label(name) for name in frame["intermediate"].unique()} if not frame.empty else {}
    if "modality" in frame:
        for name, label in frame.drop_duplicates("intermediate")[["intermediate", "modality"]].itertuples(index=False):
            if isinstance(label, str) and label:
                labels[name] = label
    return labels


def _row_label(intermediate: str, modality: Mapping[str, str]) -> str:
    label = modality.get(intermediate) or modality_label(intermediate)
    return intermediate if label == "-" else f"{intermediate} [{label}]"


# ----------------------------------------------------------------------------- 1. heatmap


def intermediate_colors(order: Iterable[str]) -> dict[str, Any]:
    """One colour per intermediate task, by its place in the spec, shared by every figure
    so that a task reads the same in the bars and in the training curves."""
    palette = colormaps["tab10"]
    return {name: palette(index % 10) for index, name in enumerate(dict.fromkeys(order))}


def heatmap_data(frame: pd.DataFrame, intermediates: Sequence[str] | None = None,
                 targets: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean over seeds of the paired delta (score minus `none`'s score of the same target
    and seed); rows intermediate tasks, columns targets, NaN where a cell has no pair."""
    table = deltas(cell_scores(frame))
    if table.empty:
        return pd.DataFrame(dtype=float)
    means = table.groupby(["intermediate", "target"])["delta"].mean().unstack("target")
    rows = _ordered(means.index, intermediates)
    columns = _ordered(means.columns, targets)
    return means.reindex(index=rows, columns=columns).astype(float)


def plot_heatmap(data: pd.DataFrame, out_dir: Path, modality: Mapping[str, str] | None = None,
                 metrics: Mapping[str, str] | None = None, stem: str = "delta_heatmap") -> list[Path]:
    """Diverging colours centred on 0 (gain blue, loss red) with the values written in."""
    if data.empty or data.isna().all().all():
        return []
    modality = modality or {}
    values = data.to_numpy(dtype=float)
    limit = float(np.nanmax(np.abs(values))) or 1.0
    fig = Figure(figsize=(2.0 + 1.5 * data.shape[1], 1.6 + 0.55 * data.shape[0]))
    ax = fig.add_subplot()
    cmap = colormaps["RdBu"].with_extremes(bad="#dddddd")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(data.shape[1]), [_column_label(t, metrics) for t in data.columns])
    ax.set_yticks(range(data.shape[0]), [_row_label(i, modality) for i in data.index])
    for (row, column), value in np.ndenumerate(values):
        text = "n/a" if math.isnan(value) else f"{value:+.1f}"
        dark = not math.isnan(value) and abs(value) > 0.6 * limit
        ax.text(column, row, text, ha="center", va="center", color="white" if dark else "black", fontsize=9)
    fig.colorbar(image, ax=ax, label="delta in points (mean over seeds)")
    ax.set_title(HEATMAP_TITLE)
    return _save(fig, out_dir, stem)


def _column_label(target: str, metrics: Mapping[str, str] | None) -> str:
    metric = (metrics or {}).get(target)
    return f"{target}\n({metric})" if metric else target


# ----------------------------------------------------------------------------- 2. languages


def language_data(frame: pd.DataFrame, target: str, intermediates: Sequence[str] | None = None) -> pd.DataFrame:
    """The target's headline metric per language, mean over seeds; rows intermediate
    tasks, columns languages (English first: the transfer source)."""
    if frame.empty:
        return pd.DataFrame(dtype=float)
    rows = frame[(frame["target"] == target) & (frame["metric"] == headline_metric(target))]
    if rows.empty:
        return pd.DataFrame(dtype=float)
    means = rows.groupby(["intermediate", "language"])["value"].mean().unstack("language")
    languages = _ordered(means.columns, ["en"])
    return means.reindex(index=_ordered(means.index, intermediates), columns=languages).astype(float)


def language_spread(frame: pd.DataFrame, target: str, intermediates: Sequence[str] | None = None
                    ) -> pd.DataFrame:
    """Sample standard deviation over seeds of `language_data`'s means (same shape; NaN
    where a cell has one seed: no spread to show)."""
    if frame.empty:
        return pd.DataFrame(dtype=float)
    rows = frame[(frame["target"] == target) & (frame["metric"] == headline_metric(target))]
    if rows.empty:
        return pd.DataFrame(dtype=float)
    spread = rows.groupby(["intermediate", "language"])["value"].std(ddof=1).unstack("language")
    languages = _ordered(spread.columns, ["en"])
    return spread.reindex(index=_ordered(spread.index, intermediates), columns=languages).astype(float)


def seed_count(frame: pd.DataFrame, target: str) -> int:
    """Seeds with results for `target` (what the error bars are over)."""
    rows = frame[frame["target"] == target] if not frame.empty else frame
    return int(rows["seed"].nunique()) if not rows.empty else 0


def default_target(frame: pd.DataFrame, targets: Sequence[str] | None = None) -> str | None:
    """The first target (in the spec's order) that has any result."""
    if frame.empty:
        return None
    present = _ordered(frame["target"].unique(), targets)
    return present[0] if present else None


def plot_languages(data: pd.DataFrame, target: str, metric: str, out_dir: Path,
                   modality: Mapping[str, str] | None = None, colors: Mapping[str, Any] | None = None,
                   spread: pd.DataFrame | None = None) -> list[Path]:
    """`languages_figure` as PNG and SVG; nothing without data."""
    if data.empty or data.isna().all().all():
        return []
    return _save(languages_figure(data, target, metric, modality, colors, spread), out_dir,
                 f"languages_{_slug(target)}")


def languages_figure(data: pd.DataFrame, target: str, metric: str, modality: Mapping[str, str] | None = None,
                     colors: Mapping[str, Any] | None = None, spread: pd.DataFrame | None = None) -> Figure:
    """Grouped bars: one group per language, one bar per intermediate task, so the drop
    with language distance and the gains of each intermediate read side by side; error
    bars are `spread` (± 1 sd over seeds), none where a cell has one seed."""
    modality = modality or {}
    n_rows, n_languages = data.shape
    width = 0.8 / n_rows
    fig = Figure(figsize=(max(6.0, 1.0 + n_languages * (0.35 * n_rows + 0.5)), 4.5))
    ax = fig.add_subplot()
    colors = colors or intermediate_colors(data.index)
    positions = np.arange(n_languages)
    for index, intermediate in enumerate(data.index):
        offsets = positions - 0.4 + width * (index + 0.5)
        hatch = "//" if modality.get(intermediate) == "text control" else None
        errors = None
        if spread is not None and intermediate in spread.index:
            errors = spread.reindex(columns=data.columns).loc[intermediate].to_numpy(dtype=float)
            errors = np.where(np.isnan(errors), 0.0, errors)
        ax.bar(offsets, data.loc[intermediate].to_numpy(dtype=float), width, label=_row_label(intermediate, modality),
               color=colors.get(intermediate), hatch=hatch, edgecolor="white" if hatch else None,
               yerr=errors, capsize=2 if errors is not None else 0, error_kw={"elinewidth": 0.8, "ecolor": "black"})
    ax.set_xticks(positions, list(data.columns))
    ax.set_xlabel("language")
    ax.set_ylabel(f"{metric} (mean over seeds)")
    if spread is not None and spread.notna().any().any():
        ax.text(0.0, -0.16, "error bars: ± 1 sd over seeds", transform=ax.transAxes, fontsize=8, va="top")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(language_title(target, metric))
    return fig


def language_title(target: str, metric: str) -> str:
    return f"{target}: {metric} per language (mean over seeds ± sd)"


def language_caption(target: str, metric: str, seeds: int) -> str:
    spread = f"whiskers ± 1 standard deviation over the {seeds} seeds" if seeds > 1 else \
        "one seed so far: no error bars"
    return (f"Bars: {target}'s {metric} per test language, mean over seeds; {spread}. "
            "English first (the transfer source); hatched bars are text-only controls.")


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


# ----------------------------------------------------------------------------- 3. curves


@dataclass(frozen=True)
class Run:
    """One training node's log: which panel and line it is, its task's metric, its events."""

    panel: str
    label: str
    metric: str
    records: list[dict[str, Any]]
    intermediate: str | None = None  # the row it belongs to: its colour
    seed: int | None = None


def parse_metrics(text: str | None) -> list[dict[str, Any]]:
    """The events of a metrics.jsonl; a torn last line (a job still writing) is ignored."""
    records = []
    for line in (text or "").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def dev_value(record: Mapping[str, Any], metric: str) -> float | None:
    """The value the trainer selected on in a dev evaluation (mixtures: their `mean`)."""
    for key in (PRIMARY_KEY.get(metric, metric), metric, "mean"):
        value = record.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


CURVE_COLUMNS = ["panel", "label", "intermediate", "metric", "seed", "step", "value"]


def curve_data(runs: Iterable[Run]) -> pd.DataFrame:
    """Columns panel, label, intermediate, metric, seed, step, value: one row per English
    dev evaluation."""
    rows = []
    for run in runs:
        for record in run.records:
            if record.get("event") != "eval" or record.get("split", "dev") != "dev":
                continue
            value = dev_value(record, run.metric)
            if value is not None and "step" in record:
                rows.append({"panel": run.panel, "label": run.label, "intermediate": run.intermediate or run.label,
                             "metric": run.metric, "seed": run.seed, "step": int(record["step"]), "value": value})
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def curve_panels(data: pd.DataFrame) -> list[tuple[str, str]]:
    """(kind of training, metric) per panel, in the order the data has them: a metric
    never shares an axis with another (accuracy and F1 are not on one scale)."""
    return list(dict.fromkeys(zip(data["panel"], data["metric"])))


def seed_mean(line: pd.DataFrame) -> pd.DataFrame:
    """Per step: mean and sample sd over the seeds evaluated at that step, and their count."""
    grouped = line.groupby("step")["value"]
    return pd.DataFrame({"mean": grouped.mean(), "sd": grouped.std(ddof=1).fillna(0.0),
                         "seeds": grouped.count()}).sort_index()


def curves_figure(data: pd.DataFrame, modality: Mapping[str, str] | None = None,
                  colors: Mapping[str, Any] | None = None) -> Figure:
    """One panel per kind of training and metric, one line per node label: the mean over
    its seeds with a ± 1 sd band (more than MAX_BANDS_PER_PANEL lines: an error bar at the
    last evaluation), coloured by intermediate task as in the bars (text
    controls dashed); legends below the axes so that they never hide a line."""
    modality = modality or {}
    colors = colors or intermediate_colors(data["intermediate"])
    panels = curve_panels(data)
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    most_lines = max(data[(data["panel"] == p) & (data["metric"] == m)]["label"].nunique() for p, m in panels)
    fig = Figure(figsize=(5.5 * columns, rows * (3.6 + 0.2 * most_lines)), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, (panel, metric) in zip(axes, panels):
        lines = data[(data["panel"] == panel) & (data["metric"] == metric)]
        banded = lines["label"].nunique() <= MAX_BANDS_PER_PANEL
        for index, label in enumerate(dict.fromkeys(lines["label"])):
            line = lines[lines["label"] == label]
            intermediate = line["intermediate"].iloc[0]
            seeds = sorted(int(s) for s in line["seed"].dropna().unique())
            stats = seed_mean(line)
            style = "--" if modality.get(intermediate) == "text control" else "-"
            color = colors.get(intermediate)
            named = f"seeds {', '.join(map(str, seeds))}" if len(seeds) > 1 else \
                (f"seed {seeds[0]}" if seeds else "")
            ax.plot(stats.index, stats["mean"], marker="." if len(stats) <= 12 else None, linestyle=style,
                    color=color, label=f"{label} ({named})" if named else label)
            if len(seeds) < 2:
                continue
            if banded:
                ax.fill_between(stats.index, stats["mean"] - stats["sd"], stats["mean"] + stats["sd"],
                                color=color, alpha=0.15, linewidth=0)
            else:  # overlapping bands would hide each other: the spread where the run ended,
                # each line's bar set a little right of the last step so that no two coincide
                last = stats.iloc[-1]
                dodge = (index + 1) * 0.015 * max(1, int(lines["step"].max()) - int(lines["step"].min()))
                ax.errorbar([stats.index[-1] + dodge], [last["mean"]], yerr=[last["sd"]], color=color, capsize=3,
                            linewidth=1.0)
        ax.set_xlabel("optimizer step" if banded else "optimizer step (bars at right: ± 1 sd over seeds, last step)")
        ax.set_title(f"{panel} ({metric})", fontsize=10)
        ax.set_ylabel(f"English dev {metric}")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(CURVES_TITLE)
    return fig


def plot_curves(data: pd.DataFrame, out_dir: Path, modality: Mapping[str, str] | None = None,
                colors: Mapping[str, Any] | None = None) -> list[Path]:
    """`curves_figure` as PNG and SVG; nothing without data."""
    if data.empty:
        return []
    return _save(curves_figure(data, modality, colors), out_dir, "training_curves")


CURVES_CAPTION = ("English dev metric during training, one panel per kind of training and metric. "
                  "Lines: mean over the seeds named in the legend; shaded band: ± 1 standard deviation "
                  f"over those seeds (panels of more than {MAX_BANDS_PER_PANEL} lines: an error bar at each "
                  "line's last evaluation instead; nothing with one seed); dashed lines: text-only controls.")


def training_runs(experiment: Experiment, target: str | None = None) -> list[Run]:
    """The logs of the experiment's training nodes worth drawing: every intermediate
    training and the target trainings of `target` (default: the first target), of every
    seed (the figure draws their mean and spread). Nodes without a metrics.jsonl yet are
    left out."""
    from xstilts.core.tasks import TASKS

    spec, store = experiment.spec, experiment.store
    target = target or (spec.target.tasks[0] if spec.target.tasks else None)
    panels = {"train-intermediate": "intermediate training",
              "train-target": f"target training on {target}"}
    runs: dict[str, list[Run]] = {panel: [] for panel in panels.values()}
    for node in experiment.plan.nodes:
        if node.stage not in panels:
            continue
        if node.stage == "train-target" and node.task != target:
            continue
        records = parse_metrics(store.read_text(store.node_path(node.stage, node.key, "metrics.jsonl")))
        if not records:
            continue
        assert node.task is not None  # training nodes train a task
        label = node.task if node.stage == "train-intermediate" else f"{node.intermediate} -> {node.task}"
        metric = TASKS[node.task].metric if node.task in TASKS else "mean"
        row = node.task if node.stage == "train-intermediate" else node.intermediate
        runs[panels[node.stage]].append(Run(panels[node.stage], label, metric, records, row, node.seed))
    kept = []
    for panel, found in runs.items():
        labels = list(dict.fromkeys(run.label for run in found))
        if len(labels) > MAX_CURVES_PER_PANEL:
            log.warning("training curves: %s has %d lines; drawing the first %d", panel, len(labels),
                        MAX_CURVES_PER_PANEL)
        drawn = set(labels[:MAX_CURVES_PER_PANEL])
        kept += [run for run in found if run.label in drawn]
    return kept


# ----------------------------------------------------------------------------- 4. LR


def lr_data(results: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per finished trial that set a learning rate: label (the tuned task),
    learning_rate, best_dev, stopped_early, metric. Failed trials (no dev value) have
    nothing to plot."""
    rows = []
    for label, result in results.items():
        for trial in result.get("trials") or []:
            rate = (trial.get("config") or {}).get("learning_rate")
            if rate is None or trial.get("best_dev") is None:
                continue
            rows.append({"label": label, "learning_rate": float(rate), "best_dev": float(trial["best_dev"]),
                         "stopped_early": bool(trial.get("stopped_early")), "metric": result.get("metric", "")})
    return pd.DataFrame(rows, columns=["label", "learning_rate", "best_dev", "stopped_early", "metric"])


def plot_lr(data: pd.DataFrame, out_dir: Path) -> list[Path]:
    """`lr_figure` as PNG and SVG; nothing without trials."""
    if data.empty:
        return []
    return _save(lr_figure(data), out_dir, "lr_sensitivity")


def lr_figure(data: pd.DataFrame) -> Figure:
    """Best dev per trial against its learning rate (log scale), one panel per metric (an
    accuracy and an F1 are not on one scale), a line through the mean at each rate per
    tuned task; trials ASHA stopped early are drawn as crosses, since their best dev
    comes from fewer evaluations; the trial the tune node chose (its best) is ringed."""
    metrics = list(dict.fromkeys(data["metric"]))
    fig = Figure(figsize=(5.5 * len(metrics) + 2.0, 4.5), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    colors = colormaps["tab10"]
    labels = list(dict.fromkeys(data["label"]))
    for ax, metric in zip(axes, metrics):
        panel = data[data["metric"] == metric]
        for label in dict.fromkeys(panel["label"]):
            trials = panel[panel["label"] == label]
            color = colors(labels.index(label) % 10)
            mean = trials.groupby("learning_rate")["best_dev"].mean().sort_index()
            ax.plot(mean.index, mean.to_numpy(), color=color, label=label)
            full, early = trials[~trials["stopped_early"]], trials[trials["stopped_early"]]
            ax.scatter(full["learning_rate"], full["best_dev"], color=color, marker="o")
            ax.scatter(early["learning_rate"], early["best_dev"], color=color, marker="x", s=60)
            best = trials.loc[trials["best_dev"].idxmax()]
            ax.scatter([best["learning_rate"]], [best["best_dev"]], facecolors="none", edgecolors=color, s=220,
                       linewidths=1.5)
        if panel["stopped_early"].any():
            ax.scatter([], [], color="gray", marker="x", label="stopped early")
        ax.scatter([], [], facecolors="none", edgecolors="gray", s=120, label="chosen (best trial)")
        ax.set_xscale("log")
        rates = sorted(panel["learning_rate"].unique())
        if len(rates) <= 8:  # label the rates tried, not only the decades between them
            ax.set_xticks(rates, [f"{rate:g}" for rate in rates])
            ax.minorticks_off()
        ax.set_xlabel("learning rate")
        ax.set_ylabel(f"best English dev {metric}" if metric else "best English dev metric")
        ax.set_title(metric or "dev metric", fontsize=10)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(LR_TITLE)
    return fig


def tune_results(experiment: Experiment) -> dict[str, dict[str, Any]]:
    """label -> result.json of every finished tune node (per cell: `intermediate -> task`)."""
    results = {}
    for node in experiment.plan.nodes:
        if node.stage != "tune":
            continue
        result = experiment.result(node)
        if result is None:
            continue
        label = str(node.task) if node.intermediate is None else f"{node.intermediate} -> {node.task}"
        results[label] = result
    return results


# ----------------------------------------------------------------------------- all


def lr_skip_reason(experiment: Experiment) -> str:
    """Why there is no learning-rate figure: the spec does not search the learning rate
    (nothing will ever be drawn), or its tune nodes have not finished (not yet)."""
    searches = {stage: getattr(experiment.spec, stage).search for stage in ("intermediate", "target")}
    if all(search is None for search in searches.values()):
        return "no learning-rate search in this spec"
    if not any(search is not None and "learning_rate" in search.space for search in searches.values()):
        searched = sorted({name for search in searches.values() if search for name in search.space})
        return f"the spec searches {', '.join(searched)}, not the learning rate"
    return "no tune node has finished a learning-rate trial yet"


HEATMAP_CAPTION = ("Each cell: the mean over seeds of the paired delta (the cell's XTREME-R-style average over "
                   "languages minus that of `none` with the same target and seed), in points; blue gains, "
                   "red losses, grey n/a where no pair exists.")
LR_CAPTION = ("Best English dev metric of each tune trial against its learning rate (log scale), one panel per "
              "metric; the line joins the mean per rate of one tuned task (or cell); crosses: trials ASHA stopped "
              "early; ringed: the trial the tune node chose.")


def render_figures(experiment: Experiment, frame: pd.DataFrame, out_dir: Path, target: str | None = None) -> Figures:
    """Every figure of the experiment; one without data is recorded with the reason."""
    out_dir = Path(out_dir)
    spec = experiment.spec
    intermediates, targets = list(spec.intermediate.tasks), list(spec.target.tasks)
    modality = _modalities(frame)
    colors = intermediate_colors(intermediates)
    metrics = {t: headline_metric(t) for t in _ordered(frame["target"].unique(), targets)} if not frame.empty else {}
    figures = Figures()

    def record(name: str, title: str, paths: list[Path], reason: str, caption: str) -> None:
        figures.titles[name] = title
        if paths:
            figures.written[name] = paths
            figures.captions[name] = caption
        else:
            figures.skipped[name] = reason
            log.info("figure %s skipped: %s", name, reason)

    record("delta_heatmap", HEATMAP_TITLE,
           plot_heatmap(heatmap_data(frame, intermediates, targets), out_dir, modality, metrics),
           "no target has results for both `none` and another intermediate task of the same seed",
           HEATMAP_CAPTION)
    chosen = target or default_target(frame, targets)
    if chosen is None:
        record("languages", "Per-language scores", [], "no evaluation results yet", "")
    else:
        metric = headline_metric(chosen)
        record("languages", language_title(chosen, metric),
               plot_languages(language_data(frame, chosen, intermediates), chosen, metric, out_dir, modality,
                              colors, spread=language_spread(frame, chosen, intermediates)),
               f"no results for target {chosen}", language_caption(chosen, metric, seed_count(frame, chosen)))
    record("training_curves", CURVES_TITLE,
           plot_curves(curve_data(training_runs(experiment, chosen)), out_dir, modality, colors),
           "no training node has written a dev evaluation to metrics.jsonl yet", CURVES_CAPTION)
    record("lr_sensitivity", LR_TITLE, plot_lr(lr_data(tune_results(experiment)), out_dir),
           lr_skip_reason(experiment), LR_CAPTION)
    return figures


def plot_all(experiment: Experiment, frame: pd.DataFrame, out_dir: Path, target: str | None = None) -> list[Path]:
    """PNG and SVG of every figure that has data, written into `out_dir`; figures
    without data are skipped (`render_figures` says why)."""
    return render_figures(experiment, frame, out_dir, target).paths
