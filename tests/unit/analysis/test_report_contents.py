"""`analysis report` says how its numbers were made (date, model, hyperparameters with the
tuned values, seeds, data revisions, code versions, compute) and what each figure shows,
on a demo-shaped store whose states carry attempt provenance; the figures' panels, seeds
and error bars are checked on their matplotlib objects."""

from __future__ import annotations

import json
import re
import statistics
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from matplotlib.collections import PolyCollection

from xstilts.analysis import plots
from xstilts.analysis.cli import ReportFormat
from xstilts.analysis.collect import collect_frame
from xstilts.analysis.frame import COLUMNS
from xstilts.analysis.report import FORMATS, code_section, write_report
from xstilts.analysis.runinfo import UNKNOWN_CODE, CodeVersion, CodeVersions, RunInfo, code_of
from xstilts.core.plan import Node
from xstilts.core.store import DONE, Store
from xstilts.launcher.experiment import Experiment
from tests.support.grid import cli_env, run_cli
from tests.support.results import T0, evaluate_result, open_raw, spec_raw

HOUR = 3600.0
CODE_A, CODE_B = "xstilts 0.3.0 git aaaaaaaaaaaa", "xstilts 0.3.1 git bbbbbbbbbbbb dirty"
TUNED = {"syn-sent": 3e-4, "syn-pos": 1e-3}
HEADLINE = {"syn-sent": "accuracy", "syn-pos": "seqeval_f1"}
HUB_LOAD = {"dataset": "example/pos", "config": "en", "split": "train", "revision": "v1.0",
            "resolved_revision": "c" * 40, "fingerprint": "f", "version": "1.0.0", "rows": 10}


def provenance(code: str, gpus: int) -> dict[str, Any]:
    """The schema jobs.entry records per attempt (`attempt["provenance"]`)."""
    commit = code.split()[-2] if code.endswith("dirty") else code.split()[-1]
    return {"xstilts": code.split()[1], "git": {"commit": commit, "dirty": code.endswith("dirty"),
                                                 "diff_sha256": "d" * 64 if code.endswith("dirty") else None},
            "packages": {"torch": "2.5.0"}, "host": "gpu-node-1",
            "gpu": {"model": "NVIDIA H100", "count": gpus} if gpus else None, "world_size": max(gpus, 1),
            "code": code}


def finish_node(store: Store, node: Node, hours: float, prov: dict[str, Any] | None,
                result: dict[str, Any] | None = None, metrics: list[dict[str, Any]] | None = None) -> None:
    """A done node: one attempt of `hours` (a preempted one of half as long before it)."""
    folder = store.node_path(node.stage, node.key)
    first = {"started": T0, "ended": T0 + hours / 2 * HOUR, "outcome": "preempted", "host": "h", "job_id": "1"}
    last = {"started": T0 + HOUR, "ended": T0 + HOUR + hours * HOUR, "outcome": "done", "host": "h", "job_id": "2"}
    if prov is not None:
        first["provenance"] = last["provenance"] = prov
    if metrics is not None:
        store.write_text(f"{folder}/metrics.jsonl", "".join(json.dumps(r) + "\n" for r in metrics))
    store.write_json(f"{folder}/state.json", {"status": "done", "attempts": [first, last]})
    store.write_json(f"{folder}/result.json", {**(result or {}), "node": {"key": node.key, "seconds": 1.0}})
    store.write_text(f"{folder}/{DONE}", "1\n")


def dev_log(key: str, start: float, seed: int) -> list[dict[str, Any]]:
    return [{"event": "eval", "split": "dev", "step": step, key: start + step / 10 + 2.0 * seed}
            for step in (30, 60, 90)]


# Devices and hours of each stage's attempts; None: no provenance (the spec's resources count).
PLAN = {"prepare": (0.2, 0, CODE_A), "tune": (1.5, 2, CODE_A), "train-intermediate": (1.0, 1, CODE_A),
        "train-target": (1.0, 4, CODE_B), "evaluate": (0.5, None, None)}
RESOURCES = {"train-target": 2, "evaluate": 1}  # spec_raw(gpus=True)


@pytest.fixture(scope="module")
def store_grid(tmp_path_factory: pytest.TempPathFactory) -> tuple[Experiment, Path]:
    """The demo grid with a target learning-rate search, every node done: prepare, tune
    and intermediate training by code A, target training by code B, evaluation before
    provenance existed; training logs for both seeds."""
    tmp = tmp_path_factory.mktemp("report")
    raw = spec_raw(str(tmp / "store"), gpus=True)
    raw["target"]["search"] = {"space": {"learning_rate": {"grid": [1e-4, 3e-4, 1e-3]}}, "scope": "per_task"}
    experiment = open_raw(tmp, raw)
    store = experiment.store
    for node in experiment.plan.nodes:
        hours, gpus, code = PLAN[node.stage]
        prov = None if code is None else provenance(code, gpus or 0)
        result: dict[str, Any] = {}
        metrics = None
        if node.stage == "prepare" and node.kind == "data":
            result = {"task": node.task, **({"hub": [HUB_LOAD]} if node.task == "syn-pos" else {})}
        elif node.stage == "tune":
            assert node.task is not None
            result = {"task": node.task, "metric": HEADLINE[node.task], "best": {"learning_rate": TUNED[node.task]},
                      "best_metric": 77.5,
                      "trials": [{"config": {"learning_rate": rate}, "best_dev": 77.5 - 1e4 * abs(rate - TUNED[node.task]),
                                  "stopped_early": False} for rate in (1e-4, 3e-4, 1e-3)]}
        elif node.stage == "train-intermediate":
            metrics = dev_log({"syn-chunk": "f1", "syn-rate": "accuracy"}.get(str(node.task), "token_accuracy"),
                              40.0, node.seed)
        elif node.stage == "train-target" and node.task == "syn-sent":
            metrics = dev_log("accuracy", 60.0, node.seed)
        elif node.stage == "evaluate":
            result = evaluate_result(node)
        finish_node(store, node, hours, prov, result, metrics)
    return experiment, next(tmp.glob("spec-*.yaml"))


def expected_hours(experiment: Experiment) -> dict[str, tuple[float, float]]:
    """(GPU-hours, CPU-hours) per stage computed from PLAN: each node ran 1.5 x its hours."""
    out: dict[str, tuple[float, float]] = {}
    for stage, (hours, gpus, _code) in PLAN.items():
        nodes = sum(node.stage == stage for node in experiment.plan.nodes)
        devices = gpus if gpus is not None else RESOURCES.get(stage, 0)
        wall = nodes * hours * 1.5
        out[stage] = (wall * devices, 0.0) if devices else (0.0, wall * 1)  # 1 CPU: the default resources
    return out


@pytest.fixture(scope="module")
def report_text(store_grid: tuple[Experiment, Path], tmp_path_factory: pytest.TempPathFactory) -> str:
    experiment, _spec = store_grid
    out = tmp_path_factory.mktemp("out") / "report.md"
    frame = collect_frame(experiment, use_cache=False)
    now = datetime(2026, 12, 4, 5, 30, tzinfo=timezone.utc)
    return write_report(experiment, frame, out, now=now).path.read_text()


def _row(text: str, first: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {first} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_report_says_date_model_seeds_and_hyperparameters_with_tuned_values(report_text: str) -> None:
    assert "- date: 2026-12-04 05:30 UTC" in report_text
    assert re.search(r"^- model: tiny XLM-R built from the spec \(vocab_size=1000, hidden_size=64, .*1500 masked-LM "
                     r"pretraining steps\); vision encoder tiny random CLIP tower", report_text, re.M)
    assert "- seeds: 1, 2" in report_text
    assert _row(report_text, "learning_rate") == ["learning_rate", "0.002",
                                                  "searched (spec default 0.002; tuned values below)"]
    assert _row(report_text, "max_steps") == ["max_steps", "600", "-"]
    assert _row(report_text, "epochs")[2] == "20"
    assert "- target search (per_task, asha, 1 trial(s), 200 steps each): learning_rate grid {0.0001, 0.0003, " \
           "0.001}; 2 of 2 tune nodes finished" in report_text
    for task, rate in TUNED.items():
        assert f"  - tuned for {task}: learning_rate={rate:g} (best English dev {HEADLINE[task]} 77.50)" in report_text


def test_report_lists_data_sources_and_revisions(report_text: str) -> None:
    assert _row(report_text, "syn-pos") [:4] == ["syn-pos", "generated", "-", f"example/pos/en @ {'c' * 40}"]
    assert _row(report_text, "syn-rate")[:4] == ["syn-rate", "generated", "-", "-"]


def test_report_warns_of_stale_code_and_lists_versions(report_text: str, store_grid: tuple[Experiment, Path]
                                                       ) -> None:
    experiment, _ = store_grid
    counts = {stage: sum(n.stage == stage for n in experiment.plan.nodes) for stage in PLAN}
    assert "**Warning: stale code.** The done nodes come from 2 code versions" in report_text
    a_nodes = counts["prepare"] + counts["tune"] + counts["train-intermediate"]
    assert re.search(rf"^- `{re.escape(CODE_A)}` \(xstilts 0\.3\.0, git aaaaaaaaaaaa\): {a_nodes} done nodes",
                     report_text, re.M)
    assert re.search(rf"^- `{re.escape(CODE_B)}` \(xstilts 0\.3\.1, git bbbbbbbbbbbb, dirty \(diff sha256 "
                     rf"dddddddddddd\), 4 x NVIDIA H100\): {counts['train-target']} done nodes", report_text, re.M)
    assert f"- {UNKNOWN_CODE}: {counts['evaluate']} done nodes (evaluate {counts['evaluate']})" in report_text


def test_one_code_version_gives_no_warning() -> None:
    """The finishing attempt names the code; nodes before provenance never make a warning alone."""
    one = CodeVersions([CodeVersion(CODE_A, {"evaluate": 3}), CodeVersion(UNKNOWN_CODE, {"prepare": 1})])
    two = CodeVersions([CodeVersion(CODE_A, {"evaluate": 3}), CodeVersion(CODE_B, {"evaluate": 1})])
    assert not one.stale and two.stale
    info = RunInfo("now", "m", [1], [], [], one)
    text = code_section(info)
    assert "stale code" not in text and "1 done nodes predate provenance" in text
    assert "**Warning: stale code.**" in code_section(RunInfo("now", "m", [1], [], [], two))
    assert code_of({"attempts": [{"provenance": provenance(CODE_A, 1), "outcome": "preempted"},
                                 {"provenance": provenance(CODE_B, 1), "outcome": "done"}]}) == CODE_B
    assert code_of({"attempts": [{"started": 1.0}]}) == UNKNOWN_CODE


def test_report_gives_gpu_and_cpu_hours_per_stage(report_text: str, store_grid: tuple[Experiment, Path]) -> None:
    experiment, _ = store_grid
    expected = expected_hours(experiment)
    for stage, (gpu, cpu) in expected.items():
        row = _row(report_text, stage)
        nodes = sum(n.stage == stage for n in experiment.plan.nodes)
        assert row == [stage, str(nodes), str(2 * nodes), f"{gpu:.2f}", f"{cpu:.2f}"], row
    total = _row(report_text, "**total**")
    assert total[3] == f"**{sum(g for g, _ in expected.values()):.2f}**"
    assert expected["train-target"][0] == pytest.approx(4 * 1.5 * sum(n.stage == "train-target"
                                                                       for n in experiment.plan.nodes))
    assert "- evaluate: devices of" in report_text  # no provenance: the spec's resources, and the report says so


def test_report_shows_every_figure_with_its_caption(report_text: str) -> None:
    for title, caption in ((plots.HEATMAP_TITLE, plots.HEATMAP_CAPTION), (plots.CURVES_TITLE, plots.CURVES_CAPTION),
                           (plots.LR_TITLE, plots.LR_CAPTION)):
        assert f"### {title}" in report_text and f"*{caption}*" in report_text
    assert "whiskers ± 1 standard deviation over the 2 seeds" in report_text
    assert "Not drawn" not in report_text


def test_html_report_is_one_file_with_embedded_images(store_grid: tuple[Experiment, Path], tmp_path: Path) -> None:
    experiment, _ = store_grid
    frame = collect_frame(experiment, use_cache=False)
    html = write_report(experiment, frame, tmp_path / "report.html").path.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<table>" in html and "stale code" in html
    sources = re.findall(r'<img[^>]*\ssrc="([^"]*)"', html)
    assert len(sources) == 4 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r'(src|href)="(?!data:|#)', html)  # nothing outside the file
    assert "<link" not in html and "<script" not in html


def test_lr_figure_skip_reason_says_the_spec_does_not_search(tmp_path: Path) -> None:
    experiment = open_raw(tmp_path, spec_raw(str(tmp_path / "store")))
    figures = plots.render_figures(experiment, pd.DataFrame(columns=list(COLUMNS)), tmp_path / "figs")
    assert figures.skipped["lr_sensitivity"] == "no learning-rate search in this spec"
    raw = spec_raw(str(tmp_path / "store2"))
    raw["target"]["search"] = {"space": {"weight_decay": {"grid": [0.0, 0.1]}}}
    other = open_raw(tmp_path, raw)
    assert plots.lr_skip_reason(other) == "the spec searches weight_decay, not the learning rate"


def test_report_command_lists_skipped_figures_and_picks_the_format(tmp_path: Path) -> None:
    """A fresh grid: every figure skipped, one stderr line each; --format html beats the suffix."""
    experiment = open_raw(tmp_path, spec_raw(str(tmp_path / "store")))
    spec = next(tmp_path.glob("spec-*.yaml"))
    env = cli_env({"HF_HUB_OFFLINE": "1"})
    out = tmp_path / "shared.txt"
    result = run_cli("analysis", "report", str(spec), "-O", str(out), "--format", "html", env=env)
    assert result.returncode == 0, result.stderr
    assert out.read_text().startswith("<!DOCTYPE html>")
    skipped = [line for line in result.stderr.splitlines() if line.startswith("figure not drawn: ")]
    assert f"figure not drawn: {plots.LR_TITLE}: no learning-rate search in this spec" in skipped
    assert len(skipped) == 4, result.stderr
    bad = run_cli("analysis", "report", str(spec), "-O", str(tmp_path / "report.txt"), env=env)
    assert bad.returncode == 2 and "name one of md, html" in bad.stderr and "Traceback" not in bad.stderr
    assert [f.value for f in ReportFormat] == list(FORMATS)
    plotted = run_cli("analysis", "plot", str(spec), "-O", str(tmp_path / "figs"), env=env)
    assert plotted.returncode == 0 and plotted.stderr.count("figure not drawn: ") == 4, plotted.stderr
    assert experiment.spec.name == "demo"


# ----------------------------------------------------------------------------- figures' objects


def test_curves_have_one_panel_per_metric_and_every_seed(store_grid: tuple[Experiment, Path]) -> None:
    experiment, _ = store_grid
    data = plots.curve_data(plots.training_runs(experiment, "syn-sent"))
    assert set(data["seed"]) == {1, 2}
    fig = plots.curves_figure(data)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    titles = sorted(ax.get_title() for ax in axes)
    assert titles == sorted(["intermediate training (accuracy)", "intermediate training (seqeval_f1)",
                             "intermediate training (token_accuracy)", "target training on syn-sent (accuracy)"])
    for ax in axes:
        metric = ax.get_title().rsplit(" (", 1)[1].rstrip(")")
        assert ax.get_ylabel() == f"English dev {metric}"
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert legend and all(text.endswith("(seeds 1, 2)") for text in legend), legend
        bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
        if len(legend) <= plots.MAX_BANDS_PER_PANEL:
            assert len(bands) == len(legend)  # a band each
        else:  # one error bar per line at its last step, no bands
            assert not bands and len(ax.containers) == len(legend)
            ends = [float(c.lines[0].get_xdata()[0]) for c in ax.containers]
            assert len(set(ends)) == len(ends) and min(ends) > 90.0  # right of the last step, apart
    target = next(ax for ax in axes if ax.get_title().startswith("target"))
    line = next(l for l in target.get_lines() if l.get_label().startswith("syn-rate -> syn-sent"))
    # mean over the two seeds: start + step/10 + 2 * seed, seeds 1 and 2
    assert list(line.get_ydata()) == pytest.approx([60.0 + s / 10 + 3.0 for s in (30, 60, 90)])


def test_language_bars_carry_the_seed_sd(store_grid: tuple[Experiment, Path]) -> None:
    experiment, _ = store_grid
    frame = collect_frame(experiment, use_cache=False)
    means = plots.language_data(frame, "syn-pos", experiment.spec.intermediate.tasks)
    spread = plots.language_spread(frame, "syn-pos", experiment.spec.intermediate.tasks)
    fig = plots.languages_figure(means, "syn-pos", "seqeval_f1", spread=spread)
    ax = fig.axes[0]
    bars = [c for c in ax.containers if hasattr(c, "errorbar")]
    assert len(bars) == len(means.index)
    rows = frame[(frame["target"] == "syn-pos") & (frame["metric"] == "seqeval_f1")]
    for container, intermediate in zip(bars, means.index):
        segments = container.errorbar.lines[2][0].get_segments()
        for segment, language in zip(segments, means.columns):
            values = rows[(rows["intermediate"] == intermediate) & (rows["language"] == language)]["value"]
            half = (segment[1][1] - segment[0][1]) / 2
            assert half == pytest.approx(statistics.stdev(values.tolist())), (intermediate, language)
            assert (segment[1][1] + segment[0][1]) / 2 == pytest.approx(statistics.fmean(values.tolist()))
    assert "± sd" in ax.get_title() and "mean over seeds" in ax.get_ylabel()


def test_lr_figure_has_one_panel_per_metric_and_rings_the_chosen_trial(store_grid: tuple[Experiment, Path]) -> None:
    experiment, _ = store_grid
    fig = plots.lr_figure(plots.lr_data(plots.tune_results(experiment)))
    assert sorted(ax.get_ylabel() for ax in fig.axes) == ["best English dev accuracy", "best English dev seqeval_f1"]
    for ax in fig.axes:
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert len([label for label in labels if label in TUNED]) == 1, labels  # one task per metric here
        assert "chosen (best trial)" in labels


def test_report_gives_the_pinned_revision_of_a_hub_task(tmp_path: Path) -> None:
    """A hub task pinned by `data_revision`: asked for before it is prepared, and what
    was loaded once its prepare node recorded it."""
    raw = {"name": "pinned", "model": {"name": "xlm-roberta-base"}, "intermediate": {"tasks": ["none", "mnli"]},
           "target": {"tasks": ["xnli"]}, "seeds": [3], "storage": str(tmp_path / "store"),
           "data_revision": {"xnli": "v1.1"}}
    experiment = open_raw(tmp_path, raw)
    prepare = next(n for n in experiment.plan.nodes if n.kind == "data" and n.task == "xnli")
    load = {**HUB_LOAD, "dataset": "facebook/xnli", "config": "all_languages", "revision": "v1.1",
            "resolved_revision": "e" * 40}
    finish_node(experiment.store, prepare, 0.1, None, {"task": "xnli", "hub": [load, load],
                                                       "data_revision": "v1.1"})
    text = write_report(experiment, pd.DataFrame(columns=list(COLUMNS)), tmp_path / "r.md").path.read_text()
    assert "- model: `xlm-roberta-base`" in text and "- seeds: 3" in text
    assert _row(text, "xnli")[:4] == ["xnli", "Hugging Face hub", "v1.1", f"facebook/xnli/all_languages @ {'e' * 40}"]
    assert _row(text, "mnli")[:4] == ["mnli", "Hugging Face hub", "-", "not prepared yet"]
