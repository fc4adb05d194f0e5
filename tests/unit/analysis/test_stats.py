"""The modality comparison on generated frames with planted effects.

Each frame is built like a finished grid: 8 targets x 3 seeds x 4 languages, the `none`
baseline, 3 text tasks, 2 multimodal tasks and a control for each multimodal task.
Values are a target/language base + a seed effect shared by every intermediate of that
(target, seed) + the task's effect + seeded noise, so the known answer is the planted
multimodal - text effect.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pandas as pd
import pytest

from xstilts.analysis.frame import COLUMNS, headline_metric
from xstilts.analysis.stats import Comparison, compare_by_modality

TARGETS = ["xnli", "pawsx", "xcopa", "udpos", "panx", "xquad", "mlqa", "tydiqa"]
LANGUAGES = ["en", "de", "sw", "zh"]
SEEDS = [1, 2, 3]
TEXT_TASKS = ["t-mnli", "t-squad", "t-hellaswag"]
MM_TASKS = ["mm-itm", "mm-mcm"]
CONTROLS = {"mm-itm-shuffled": "mm-itm", "mm-mcm-text": "mm-mcm"}


def make_frame(
    mm: float = 2.0,
    text: float = 0.5,
    controls: dict[str, float] | None = None,
    language_extra: dict[str, float] | None = None,
    noise: float = 0.5,
    heterogeneity: float = 0.2,
    targets: list[str] = TARGETS,
    seeds: list[int] = SEEDS,
    rng_seed: int = 1,
    modalities: tuple[str, ...] = ("multimodal", "text", "text control"),
) -> pd.DataFrame:
    """A tidy frame with every COLUMN; `controls` maps a control to its effect (default: = text)."""
    rng = np.random.default_rng(rng_seed)
    control_effects = {name: text for name in CONTROLS} | (controls or {})
    tasks: list[tuple[str, str, str | None, float]] = [("none", "-", None, 0.0)]
    if "text" in modalities:
        tasks += [(name, "text", None, text) for name in TEXT_TASKS]
    if "multimodal" in modalities:
        tasks += [(name, "multimodal", None, mm) for name in MM_TASKS]
    if "text control" in modalities:
        tasks += [(name, "text control", of, control_effects[name]) for name, of in CONTROLS.items()]
    rows: list[dict[str, Any]] = []
    for target in targets:
        metric = headline_metric(target)
        base = {lang: 60.0 + 10.0 * rng.random() for lang in LANGUAGES}
        target_shift = {name: rng.normal(0.0, heterogeneity) for name, *_ in tasks}  # task x target interaction
        for seed in seeds:
            seed_shift = rng.normal(0.0, 1.0)
            for name, modality, control_of, effect in tasks:
                shift = 0.0 if name == "none" else effect + target_shift[name]
                for lang in LANGUAGES:
                    extra = (language_extra or {}).get(lang, 0.0) if modality == "multimodal" else 0.0
                    value = base[lang] + seed_shift + shift + extra + rng.normal(0.0, noise)
                    rows.append(_row(name, target, seed, lang, metric, value, modality, control_of))
                    # a non-headline metric must be ignored
                    rows.append(_row(name, target, seed, lang, "other_metric", value + 50, modality, control_of))
    frame = pd.DataFrame(rows)
    assert list(frame.columns) == list(COLUMNS)
    return frame


def _row(name: str, target: str, seed: int, lang: str, metric: str, value: float,
         modality: str, control_of: str | None) -> dict[str, Any]:
    return {
        "intermediate": name, "target": target, "seed": seed, "language": lang, "metric": metric,
        "value": value, "key": f"k-{name}-{target}-{seed}", "modality": modality, "control_of": control_of,
        "cost_hours": 1.0, "cost_unit": "gpu", "gold_withheld": False,
    }


def width(ci: tuple[float, float] | None) -> float:
    assert ci is not None
    return ci[1] - ci[0]


@pytest.fixture(scope="module")
def planted() -> Comparison:
    return compare_by_modality(make_frame(mm=2.0, text=0.5, controls={"mm-itm-shuffled": 0.5,
                                                                      "mm-mcm-text": 2.0}), n_boot=4000)


def test_planted_difference_is_found_and_interval_excludes_zero(planted: Comparison) -> None:
    assert planted.problems == []
    assert planted.multimodal == pytest.approx(2.0, abs=0.3)
    assert planted.text == pytest.approx(0.5, abs=0.3)
    assert planted.difference == pytest.approx(planted.multimodal - planted.text)
    assert planted.difference == pytest.approx(1.5, abs=0.3)
    low, high = planted.ci
    assert 0 < low < 1.5 < high
    assert planted.excludes_zero is True
    assert planted.n_multimodal == 8 * 3 * 2 and planted.n_text == 8 * 3 * 3 and planted.n_targets == 8
    assert planted.multimodal_tasks == sorted(MM_TASKS)
    assert set(planted.text_tasks) == set(TEXT_TASKS)  # controls are not text-only tasks


def test_sentence_states_better_and_excludes(planted: Comparison) -> None:
    sentence = planted.sentence()
    names = ", ".join(sorted(TARGETS))
    assert sentence.startswith(f"Multimodal intermediate tasks change the mean score over 8 targets ({names}) by "
                               f"{planted.multimodal:+.2f}")  # 8 of XTREME-R's 10 tasks: not "the XTREME-R score"
    assert "XTREME" not in sentence
    assert f"text-only ones by {planted.text:+.2f}" in sentence
    assert f"multimodal is better by {planted.difference:.2f} points (95% CI [" in sentence
    assert f"d_z {planted.d_z:+.2f})" in sentence
    assert sentence.endswith("the interval excludes zero.")  # 24 cells, 8 targets: no small-sample caveat
    assert planted.small_sample is False
    text = planted.render_text()
    assert text.splitlines()[0] == sentence
    assert text.splitlines()[1] == "sample: 8 targets x 3 seeds x 4 languages, 24 paired (target, seed) cells"
    for target in TARGETS:
        assert target in text
    assert "mm-itm vs mm-itm-shuffled" in text and "largest:" in text and "smallest:" in text
    smallest = text.split("smallest: ")[1]
    assert smallest.count(" [") == 1  # 4 languages: 3 largest, the remaining one smallest


def test_per_target_paired_test(planted: Comparison) -> None:
    assert [t.target for t in planted.targets] == sorted(TARGETS)
    for row in planted.targets:
        assert row.n_seeds == 3 and row.p is not None and row.note is None
        assert row.difference == pytest.approx(1.5, abs=1.0)
        assert row.ci is not None and row.ci[0] <= row.difference <= row.ci[1]
    # 1.5 points against noise of ~0.25 per seed: most targets are individually significant
    assert sum(row.p < 0.05 for row in planted.targets) >= 5


def test_task_vs_control_detects_planted_difference(planted: Comparison) -> None:
    by_task = {c.task: c for c in planted.controls}
    itm, mcm = by_task["mm-itm"], by_task["mm-mcm"]
    assert itm.controls == ["mm-itm-shuffled"] and mcm.controls == ["mm-mcm-text"]
    assert itm.n_pairs == 24
    assert itm.difference == pytest.approx(1.5, abs=0.4)
    assert itm.ci[0] > 0
    assert mcm.difference == pytest.approx(0.0, abs=0.4)
    assert mcm.ci[0] < 0 < mcm.ci[1]


def test_no_effect_interval_includes_zero() -> None:
    result = compare_by_modality(make_frame(mm=0.5, text=0.5, rng_seed=2), n_boot=4000)
    assert result.difference == pytest.approx(0.0, abs=0.3)
    assert result.ci[0] < 0 < result.ci[1]
    assert result.excludes_zero is False
    assert result.sentence().endswith("the interval includes zero.")


def test_worse_is_said_when_multimodal_loses() -> None:
    result = compare_by_modality(make_frame(mm=-1.0, text=0.5), n_boot=2000)
    assert result.difference < 0
    assert f"multimodal is worse by {abs(result.difference):.2f} points" in result.sentence()
    assert result.sentence().endswith("excludes zero.")


def test_per_language_breakdown_finds_planted_language() -> None:
    result = compare_by_modality(make_frame(mm=1.0, text=0.5, language_extra={"sw": 3.0}), n_boot=2000)
    by_language = {lang.language: lang for lang in result.languages}
    assert set(by_language) == set(LANGUAGES)
    assert max(result.languages, key=lambda lang: lang.difference).language == "sw"
    assert by_language["sw"].difference == pytest.approx(3.5, abs=0.5)
    assert by_language["en"].difference == pytest.approx(0.5, abs=0.5)
    assert by_language["sw"].ci[0] > by_language["en"].ci[1]
    assert by_language["sw"].n_targets == 8 and by_language["sw"].n_cells == 24
    # the main difference is the mean over languages of the headline score
    assert result.difference == pytest.approx(np.mean([lang.difference for lang in result.languages]))
    assert "largest:  sw" in result.render_text()


def test_languages_with_different_counts_state_each() -> None:
    frame = make_frame()
    frame = frame[~((frame["language"] == "sw") & (frame["target"].isin(["xnli", "panx"])))]
    text = compare_by_modality(frame, n_boot=300).render_text()
    assert "per language (4 languages; multimodal - text):" in text
    assert "(6 targets, 18 cells)" in text and "(8 targets, 24 cells)" in text


def test_language_with_a_single_value_has_no_interval() -> None:
    frame = make_frame(targets=["xnli"], seeds=[1])
    result = compare_by_modality(frame, n_boot=500)
    assert result.ci is None and all(lang.ci is None for lang in result.languages)
    assert "no confidence interval" in result.sentence()
    assert result.targets[0].p is None and "no paired test" in result.targets[0].note


def test_missing_groups_are_problems_not_exceptions() -> None:
    no_mm = compare_by_modality(make_frame(modalities=("text",)), n_boot=200)
    assert no_mm.difference is None and any("no multimodal" in p for p in no_mm.problems)
    assert no_mm.text is not None
    no_text = compare_by_modality(make_frame(modalities=("multimodal", "text control")), n_boot=200)
    assert no_text.difference is None and any("no text-only" in p for p in no_text.problems)
    assert no_text.controls  # the control comparison does not need text-only tasks
    assert no_text.sample is None and not no_text.small_sample and no_text.warnings == []  # 24 pairs per control
    few = compare_by_modality(make_frame(modalities=("multimodal", "text control"), targets=["xnli"]), n_boot=200)
    assert few.controls and few.warnings == [
        "small sample for the control comparisons (mm-itm, mm-mcm): 3 paired cells at the fewest (< 10: 18% power "
        "to detect an effect of d_z = 1, 80% needs 10); treat the interval and p as descriptive."]
    frame = make_frame()
    no_base = compare_by_modality(frame[frame["intermediate"] != "none"], n_boot=200)
    assert any("baseline" in p for p in no_base.problems)
    empty = compare_by_modality(frame.iloc[:0], n_boot=200)
    assert empty.problems == ["the results frame is empty"]
    for result in (no_mm, no_text, no_base, empty):
        assert result.sentence().startswith("No modality comparison:")
        json.dumps(result.to_json())
        result.render_text()
        result.render_markdown()


def test_deterministic_with_the_same_seed() -> None:
    frame = make_frame()
    first = compare_by_modality(frame, n_boot=1000, seed=7).to_json()
    assert compare_by_modality(frame, n_boot=1000, seed=7).to_json() == first
    assert compare_by_modality(frame, n_boot=1000, seed=8).to_json()["ci"] != first["ci"]


def test_two_level_interval_widens_with_noise() -> None:
    quiet = compare_by_modality(make_frame(noise=0.2, rng_seed=3), n_boot=2000)
    loud = compare_by_modality(make_frame(noise=3.0, rng_seed=3), n_boot=2000)
    assert width(loud.ci) > 2 * width(quiet.ci)
    assert width(loud.targets[0].ci) > width(quiet.targets[0].ci)


def test_target_level_resampling_carries_between_target_variation() -> None:
    """Targets that disagree about images make the answer uncertain even with exact seeds:
    only resampling targets (not just seeds) shows it."""
    agree = compare_by_modality(make_frame(noise=0.05, heterogeneity=0.0, rng_seed=4), n_boot=2000)
    disagree = compare_by_modality(make_frame(noise=0.05, heterogeneity=2.0, rng_seed=4), n_boot=2000)
    assert width(disagree.ci) > 4 * width(agree.ci)


def test_targets_with_different_seed_sets() -> None:
    frame = make_frame()
    frame = frame[~((frame["target"] == "xnli") & (frame["seed"] == 3))]
    frame = frame[~((frame["target"] == "panx") & (frame["intermediate"] == "mm-itm") & (frame["seed"] == 1))]
    result = compare_by_modality(frame, n_boot=1000)
    by_target = {t.target: t for t in result.targets}
    assert by_target["xnli"].n_seeds == 2 and by_target["xnli"].p is not None
    assert by_target["panx"].n_seeds == 3  # mm-mcm still pairs with text on seed 1
    assert result.n_multimodal == 8 * 3 * 2 - 2 - 1
    assert result.ci is not None and result.ci[0] < result.difference < result.ci[1]


def test_json_and_markdown(planted: Comparison) -> None:
    data = planted.to_json()
    assert json.loads(json.dumps(data)) == data
    assert data["excludes_zero"] is True and data["difference"] == round(planted.difference, 4)
    assert len(data["targets"]) == 8 and len(data["controls"]) == 2 and len(data["languages"]) == 4
    assert data["sentence"] == planted.sentence()
    markdown = planted.render_markdown()
    assert "| target | seeds | languages | difference | 95% CI | d_z | p | p (Holm) | note |" in markdown
    assert "| mm-itm | mm-itm-shuffled | 8 | 3 | 24 |" in markdown
    assert data["sample"] == {"n_targets": 8, "n_seeds": 3, "n_languages": 4, "n_pairs": 24}
    assert data["small_sample"] is False and data["suite"].startswith("mean score over 8 targets (")
    by_target = {t["target"]: t for t in data["targets"]}
    for row in planted.targets:
        assert by_target[row.target]["p_holm"] == pytest.approx(row.p_holm, rel=1e-3)
        assert by_target[row.target]["d_z"] == pytest.approx(row.d_z, abs=1e-4)
        assert by_target[row.target]["significant"] is (row.p_holm < 0.05)


def test_ten_thousand_resamples_are_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """10 targets x 3 seeds x 30 intermediates, 10k resamples: the brief's budget is 2 s."""
    rng = np.random.default_rng(0)
    targets = [f"t{i}" for i in range(10)]
    rows = []
    for i in range(30):
        name = "none" if i == 0 else f"task{i}"
        modality = "-" if i == 0 else ("multimodal" if i % 3 == 0 else "text")
        for target in targets:
            for seed in SEEDS:
                rows.append(_row(name, target, seed, "en", "accuracy", 70 + rng.normal(), modality, None))
    frame = pd.DataFrame(rows)
    monkeypatch.setattr("xstilts.analysis.frame.headline_metric", lambda target: "accuracy")  # synthetic targets
    start = time.perf_counter()
    result = compare_by_modality(frame, n_boot=10000)
    elapsed = time.perf_counter() - start
    assert result.ci is not None and len(result.targets) == 10
    assert elapsed < 2.0, elapsed
