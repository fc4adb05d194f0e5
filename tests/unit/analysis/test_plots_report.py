"""Figures and the Markdown report, on generated frames and a small real store (no training).

The numbers behind each figure are checked against values computed here independently
of `xstilts.analysis.frame`, the files against what an image reader and a text search see.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from PIL import Image

from xstilts.analysis import plots
from xstilts.analysis.frame import COLUMNS
from xstilts.analysis.report import table_from_frame, write_report
from xstilts.analysis.table import modality_label, render_markdown
from xstilts.launcher.experiment import Experiment, open_experiment
from xstilts.core.store import DONE
from tests.support.specs import demo_raw

INTERMEDIATES = ["none", "syn-rate", "syn-chunk", "syn-shapes-mcm", "syn-shapes-mcm-text"]
TARGETS = ["syn-sent", "syn-pos"]
HEADLINE = {"syn-sent": "accuracy", "syn-pos": "seqeval_f1"}
LANGUAGES = ["en", "qaa", "qab", "qac"]
SEEDS = [1, 2]
GAIN = {"none": 0.0, "syn-rate": 3.0, "syn-chunk": -1.0, "syn-shapes-mcm": 2.0, "syn-shapes-mcm-text": 0.5}


def _value(intermediate: str, target: str, seed: int, language: str) -> float:
    """A distinct score per cell: the intermediate's gain, a seed wobble, a language drop."""
    return 70.0 + GAIN[intermediate] * (2 if target == "syn-pos" else 1) + 0.7 * seed * (1 + GAIN[intermediate]) \
        - 5.0 * LANGUAGES.index(language)


def make_frame(cells: list[tuple[str, str, int]] | None = None, keys: dict[tuple[str, str, int], str] | None = None
               ) -> pd.DataFrame:
    """A tidy frame with every COLUMN; each language also has a non-headline metric that
    the figures must ignore."""
    cells = cells if cells is not None else [(i, t, s) for i in INTERMEDIATES for t in TARGETS for s in SEEDS]
    rows = []
    for intermediate, target, seed in cells:
        key = (keys or {}).get((intermediate, target, seed), f"{intermediate}-{target}-{seed}")
        for language in LANGUAGES:
            value = _value(intermediate, target, seed, language)
            for metric, number in ((HEADLINE[target], value), ("precision", value - 40.0)):
                label = modality_label(intermediate)
                rows.append({"intermediate": intermediate, "target": target, "seed": seed, "language": language,
                             "metric": metric, "value": number, "key": key, "modality": label,
                             "control_of": "syn-shapes-mcm" if label == "text control" else None,
                             "cost_hours": 0.25, "cost_unit": "cpu"})
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    assert list(frame.columns) == list(COLUMNS)
    return frame


def _assert_figure(paths: list[Path], stem: str, title: str) -> None:
    png, svg = Path(f"{stem}.png"), Path(f"{stem}.svg")
    assert [p.name for p in paths] == [png.name, svg.name]
    for path in paths:
        assert path.exists() and path.stat().st_size > 0
    with Image.open(paths[0]) as image:
        assert image.format == "PNG" and image.size[0] > 0 and image.size[1] > 0
    text = paths[1].read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text
    assert title in text.replace("&#x27;", "'")


# ----------------------------------------------------------------------------- data


def test_heatmap_data_is_the_seed_mean_of_paired_deltas() -> None:
    frame = make_frame()
    data = plots.heatmap_data(frame, INTERMEDIATES, TARGETS)
    assert list(data.index) == INTERMEDIATES[1:] and list(data.columns) == TARGETS
    for intermediate in INTERMEDIATES[1:]:
        for target in TARGETS:
            per_seed = []
            for seed in SEEDS:
                score = sum(_value(intermediate, target, seed, lang) for lang in LANGUAGES) / len(LANGUAGES)
                base = sum(_value("none", target, seed, lang) for lang in LANGUAGES) / len(LANGUAGES)
                per_seed.append(score - base)
            assert data.loc[intermediate, target] == pytest.approx(sum(per_seed) / len(per_seed))


def test_heatmap_leaves_cells_without_a_baseline_pair_empty() -> None:
    cells = [(i, t, s) for i in INTERMEDIATES for t in TARGETS for s in SEEDS if not (i == "none" and t == "syn-pos")]
    data = plots.heatmap_data(make_frame(cells), INTERMEDIATES, TARGETS)
    assert list(data.columns) == ["syn-sent"]  # syn-pos has no baseline: no delta anywhere
    assert plots.heatmap_data(make_frame([("syn-rate", "syn-sent", 1)])).empty


def test_language_data_is_the_mean_over_seeds_per_language() -> None:
    frame = make_frame()
    data = plots.language_data(frame, "syn-pos", INTERMEDIATES)
    assert list(data.index) == INTERMEDIATES and list(data.columns) == LANGUAGES
    headline = frame[(frame["target"] == "syn-pos") & (frame["metric"] == "seqeval_f1")]
    for (intermediate, language), group in headline.groupby(["intermediate", "language"]):
        assert data.loc[intermediate, language] == pytest.approx(group["value"].mean())
        expected = sum(_value(intermediate, "syn-pos", s, language) for s in SEEDS) / len(SEEDS)
        assert data.loc[intermediate, language] == pytest.approx(expected)
    assert plots.language_data(make_frame([("none", "syn-sent", 1)]), "syn-pos").empty
    assert plots.default_target(make_frame([("none", "syn-pos", 1)]), TARGETS) == "syn-pos"


def _trial(rate: float, best: float | None, early: bool = False) -> dict[str, Any]:
    return {"config": {"learning_rate": rate}, "best_dev": best, "evaluations": 2 if early else 4,
            "steps": 100, "state": "ERROR" if best is None else "TERMINATED", "stopped_early": early}


def test_lr_data_takes_each_finished_trials_values() -> None:
    results = {
        "syn-sent": {"metric": "accuracy", "best": {"learning_rate": 1e-3},
                     "trials": [_trial(1e-3, 81.0), _trial(1e-4, 74.5, early=True), _trial(1e-2, None)]},
        "syn-pos": {"metric": "seqeval_f1", "trials": [_trial(3e-4, 55.0), {"config": {"batch_size": 8},
                                                                            "best_dev": 60.0}]},
    }
    data = plots.lr_data(results)
    rows = sorted(data.itertuples(index=False), key=lambda r: (r.label, r.learning_rate))
    assert [(r.label, r.learning_rate, r.best_dev, r.stopped_early, r.metric) for r in rows] == [
        ("syn-pos", 3e-4, 55.0, False, "seqeval_f1"),
        ("syn-sent", 1e-4, 74.5, True, "accuracy"),
        ("syn-sent", 1e-3, 81.0, False, "accuracy"),
    ]


def test_curve_data_reads_dev_evaluations_of_the_task_metric() -> None:
    text = "\n".join(json.dumps(r) for r in [
        {"event": "train", "step": 10, "loss": 1.0, "lr": 1e-3},
        {"event": "eval", "split": "dev", "step": 10, "f1": 40.0, "precision": 1.0, "best": True},
        {"event": "eval", "split": "dev", "step": 20, "f1": 45.0, "best": True},
    ]) + '\n{"event": "eval", "st'  # a torn last line: the job is still writing
    runs = [plots.Run("target", "none -> syn-pos", "seqeval_f1", plots.parse_metrics(text)),
            plots.Run("intermediate", "mix", "mixture", [{"event": "eval", "step": 5, "mean": 3.0}])]
    data = plots.curve_data(runs)
    assert [tuple(r) for r in data[["label", "step", "value"]].itertuples(index=False)] == [
        ("none -> syn-pos", 10, 40.0), ("none -> syn-pos", 20, 45.0), ("mix", 5, 3.0)]


# ----------------------------------------------------------------------------- figures


def test_each_figure_is_written_as_png_and_svg(tmp_path: Path) -> None:
    frame = make_frame()
    heat = plots.plot_heatmap(plots.heatmap_data(frame), tmp_path, {"syn-rate": "text"}, HEADLINE)
    _assert_figure(heat, "delta_heatmap", plots.HEATMAP_TITLE)
    assert "syn-rate [text]" in heat[1].read_text()
    bars = plots.plot_languages(plots.language_data(frame, "syn-sent"), "syn-sent", "accuracy", tmp_path)
    _assert_figure(bars, "languages_syn-sent", plots.language_title("syn-sent", "accuracy"))
    curves = plots.curve_data([plots.Run("intermediate training", "syn-rate", "accuracy",
                                         [{"event": "eval", "step": s, "accuracy": 50.0 + s} for s in (1, 2, 3)])])
    _assert_figure(plots.plot_curves(curves, tmp_path), "training_curves", plots.CURVES_TITLE)
    lr = plots.lr_data({"syn-sent": {"metric": "accuracy", "trials": [_trial(1e-3, 80.0), _trial(1e-4, 70.0, True)]}})
    _assert_figure(plots.plot_lr(lr, tmp_path), "lr_sensitivity", plots.LR_TITLE)
    names = ["delta_heatmap", "languages_syn-sent", "lr_sensitivity", "training_curves"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}.{ext}" for n in names for ext in ("png", "svg"))


def test_a_task_has_one_colour_in_every_figure_and_controls_are_dashed(tmp_path: Path) -> None:
    """The spec's order gives the colours: `syn-rate` is the second row of the bars, and
    must be drawn in that colour in the curves too, though there it is the only line."""
    from matplotlib.colors import to_hex

    colors = plots.intermediate_colors(["none", "syn-rate", "syn-rate-text"])
    second = to_hex(colors["syn-rate"])
    assert len({to_hex(c) for c in colors.values()}) == 3
    frame = make_frame()
    bars = plots.plot_languages(plots.language_data(frame, "syn-sent"), "syn-sent", "accuracy", tmp_path / "bars",
                                colors=colors)
    assert second in bars[1].read_text()
    evaluations = [{"event": "eval", "step": s, "accuracy": 50.0 + s} for s in (1, 2, 3)]
    curves = plots.curve_data([
        plots.Run("target training: syn-sent", "syn-rate -> syn-sent", "accuracy", evaluations, "syn-rate"),
        plots.Run("target training: syn-sent", "syn-rate-text -> syn-sent", "accuracy", evaluations, "syn-rate-text"),
    ])
    drawn = plots.plot_curves(curves, tmp_path / "curves", {"syn-rate-text": "text control"}, colors)
    svg = drawn[1].read_text()
    assert second in svg and to_hex(colors["syn-rate-text"]) in svg
    assert to_hex(colors["none"]) not in svg  # no line of `none` here: its colour is not reused
    assert svg.count("stroke-dasharray") >= 1  # the control's line


def test_figures_without_data_are_skipped(tmp_path: Path) -> None:
    empty = make_frame([])
    assert plots.plot_heatmap(plots.heatmap_data(empty), tmp_path) == []
    assert plots.plot_languages(plots.language_data(empty, "syn-sent"), "syn-sent", "accuracy", tmp_path) == []
    assert plots.plot_curves(plots.curve_data([]), tmp_path) == []
    assert plots.plot_lr(plots.lr_data({"syn-sent": {"trials": [_trial(1e-3, None)]}}), tmp_path) == []
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- a real store


def _experiment(tmp_path: Path) -> Experiment:
    """The demo grid (with a per-task target search) materialized into tmp: node.json only."""
    raw = demo_raw()
    raw["storage"] = str(tmp_path / "store")
    raw["target"]["search"] = {"space": {"learning_rate": {"grid": [1e-3, 1e-4]}}, "scope": "per_task"}
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    experiment = open_experiment(str(spec_path))
    experiment.materialize()
    return experiment


def _finish(experiment: Experiment, node: Any, result: dict[str, Any], metrics: list[dict[str, Any]] | None = None
            ) -> None:
    """What jobs.entry leaves in a finished node's folder (metrics.jsonl first, DONE last)."""
    store = experiment.store
    if metrics is not None:
        store.write_text(store.node_path(node.stage, node.key, "metrics.jsonl"),
                         "".join(json.dumps(r) + "\n" for r in metrics))
    now = time.time()
    store.write_json(store.node_path(node.stage, node.key, "state.json"), {
        "status": "done", "attempts": [{"started": now - 60, "ended": now, "host": "test", "job_id": "1",
                                        "outcome": "done"}]})
    store.write_json(store.node_path(node.stage, node.key, "result.json"),
                     {**result, "node": {"key": node.key, "stage": node.stage, "seconds": 60.0}})
    store.write_text(store.node_path(node.stage, node.key, DONE), f"{now}\n")


def _evals(metric_key: str, start: float) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for step in (30, 60, 90):
        events.append({"event": "train", "step": step, "loss": 1.0 / step, "lr": 1e-3})
        events.append({"event": "eval", "split": "dev", "step": step, metric_key: start + step / 10, "best": True})
    return events


@pytest.fixture
def grid(tmp_path: Path) -> tuple[Experiment, pd.DataFrame]:
    """Half the demo grid finished: every cell of syn-sent with seed 1 evaluated, the
    intermediate trainings and syn-sent target trainings of seed 1 logged, the tune nodes done."""
    experiment = _experiment(tmp_path)
    plan = experiment.plan
    cells, keys = [], {}
    for node in plan.evaluations():
        if node.task == "syn-sent" and node.seed == 1:
            cells.append((node.intermediate, node.task, node.seed))
            keys[cells[-1]] = node.key
            languages = {lang: {"accuracy": _value(node.intermediate, node.task, 1, lang)} for lang in LANGUAGES}
            _finish(experiment, node, {"task": node.task, "metric": "accuracy", "languages": languages})
    for node in plan.nodes:
        if node.stage == "train-intermediate" and node.seed == 1:
            key = {"syn-chunk": "f1"}.get(node.task, "accuracy" if node.task == "syn-rate" else "token_accuracy")
            _finish(experiment, node, {}, _evals(key, 40.0 + 5 * INTERMEDIATES.index(node.task)))
        elif node.stage == "train-target" and node.task == "syn-sent" and node.seed == 1:
            _finish(experiment, node, {}, _evals("accuracy", 60.0 + GAIN[node.intermediate]))
        elif node.stage == "tune":
            _finish(experiment, node, {"task": node.task, "metric": HEADLINE[node.task], "best": {"learning_rate": 1e-3},
                                       "trials": [_trial(1e-3, 80.0 - 20 * TARGETS.index(node.task)),
                                                  _trial(1e-4, 70.0, early=True)]})
    return experiment, make_frame(cells, keys)


def test_plot_all_reads_curves_and_tune_trials_from_the_store(grid: tuple[Experiment, pd.DataFrame],
                                                              tmp_path: Path) -> None:
    experiment, frame = grid
    runs = plots.training_runs(experiment, "syn-sent")
    labels = sorted(run.label for run in runs)
    assert labels == sorted([t for t in INTERMEDIATES if t != "none"]
                            + [f"{i} -> syn-sent" for i in INTERMEDIATES])
    assert set(plots.tune_results(experiment)) == set(TARGETS)
    paths = plots.plot_all(experiment, frame, tmp_path / "figures")
    assert sorted(p.name for p in paths) == sorted(
        f"{stem}.{ext}" for stem in ("delta_heatmap", "languages_syn-sent", "training_curves", "lr_sensitivity")
        for ext in ("png", "svg"))
    assert all(p.exists() for p in paths)


def test_plot_all_skips_figures_of_a_fresh_grid(tmp_path: Path) -> None:
    experiment = _experiment(tmp_path)
    figures = plots.render_figures(experiment, make_frame([]), tmp_path / "figures")
    assert figures.paths == [] and set(figures.skipped) == {"delta_heatmap", "languages", "training_curves",
                                                           "lr_sensitivity"}


# ----------------------------------------------------------------------------- report


def test_report_table_marks_modality_best_per_column_and_why_cells_are_missing() -> None:
    frame = make_frame([(i, t, s) for i in INTERMEDIATES for t in TARGETS for s in SEEDS
                        if (i, t) != ("syn-chunk", "syn-pos")])
    missing = pd.DataFrame([{"intermediate": "syn-chunk", "target": "syn-pos", "seed": s, "status": "failed",
                             "stage": "train-target", "key": f"k{s}"} for s in SEEDS])
    text = render_markdown(table_from_frame(frame, INTERMEDIATES, TARGETS, missing))
    lines = text.strip().splitlines()
    assert lines[0] == "| intermediate | modality | syn-sent (accuracy) | syn-pos (seqeval_f1) | average |"
    rows = {line.split(" | ")[0].strip("| "): line for line in lines[2:]}
    assert list(rows) == INTERMEDIATES
    assert "| syn-shapes-mcm | multimodal |" in rows["syn-shapes-mcm"]
    assert "| syn-shapes-mcm-text | text control |" in rows["syn-shapes-mcm-text"]
    assert rows["syn-rate"].count("**") == 6 and "**" not in rows["none"]  # syn-rate gains most everywhere
    assert "failed 2/2" in rows["syn-chunk"]


def test_report_has_runs_table_comparison_and_figure_links(grid: tuple[Experiment, pd.DataFrame],
                                                          tmp_path: Path) -> None:
    experiment, frame = grid
    out = write_report(experiment, frame, tmp_path / "out" / "report.md").path
    text = out.read_text()
    assert text.startswith("# xstilts report: demo")
    assert "cells evaluated: 5 of 20" in text
    assert re.search(r"^- none -> syn-pos, seed 2: pending \(\S+\)$", text, re.M)
    assert re.search(r"^\| syn-rate \| text \| \*\*[0-9.]+ ± 0\.0 \(\+[0-9.]+\)\*\* \| pending 2/2 \|", text, re.M)
    assert re.search(r"\| evaluate \| 5 \| 15 \| 20 \|", text)  # done, pending, total
    for intermediate in INTERMEDIATES:
        assert re.search(rf"^\| {re.escape(intermediate)} \| {re.escape(modality_label(intermediate))} \|", text, re.M)
    # synthetic targets: the score is named after them, never "the XTREME-R score"
    assert "Multimodal intermediate tasks change the mean score over" in text and "XTREME-R score" not in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(links) == sorted(f"figures/{stem}.png" for stem in
                                   ("delta_heatmap", "languages_syn-sent", "training_curves", "lr_sensitivity"))
    assert all((out.parent / link).exists() for link in links)


def test_report_states_why_a_comparison_or_figure_is_missing(tmp_path: Path) -> None:
    experiment = _experiment(tmp_path)
    only_text = make_frame([(i, "syn-sent", 1) for i in ("none", "syn-rate")])
    out = write_report(experiment, only_text, tmp_path / "report.md", figures_dir=tmp_path / "figs").path
    text = out.read_text()
    assert "No modality comparison:" in text and "multimodal" in text
    assert "Not drawn:" in text and f"{plots.LR_TITLE}: no tune node has finished" in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(links) == ["figs/delta_heatmap.png", "figs/languages_syn-sent.png"]
