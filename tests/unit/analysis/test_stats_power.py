"""The statistics of `xstilts analysis compare` on simulated grids with planted effects.

Each simulated grid is targets x seeds x languages, like a finished STILTs grid: a
target/language base score, a seed shift shared by every intermediate of that (target,
seed) (so it cancels in the deltas, as in real grids), 2 multimodal and 3 text-only tasks,
a planted multimodal - text effect and Gaussian noise on every score. Numpy builds the
grids; the real functions of `xstilts.analysis.stats` analyse them (`CellSums` +
`bootstrap_differences` + `percentile_ci` for the main interval, `paired_test` +
`holm_adjust` for the per-target tests, `compare_by_modality` end to end), so a change to
those functions shows up here. Every generator is seeded: the rates are exact numbers,
reproducible run to run, and the bounds allow for their Monte-Carlo error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest

from xstilts.analysis.frame import COLUMNS, headline_metric
from xstilts.analysis.stats import (
    ALPHA, MIN_PAIRED_OBSERVATIONS, MIN_TARGETS, CellSums, bootstrap_differences, compare_by_modality, holm_adjust,
    paired_test, paired_tests, percentile_ci, small_sample_warning, suite_label,
)
from xstilts.core.tasks import TASKS

XTREME_R = sorted(name for name, task in TASKS.items() if "xtreme-r" in task.suites)
XTREME = sorted(name for name, task in TASKS.items() if "xtreme" in task.suites)
N_MM, N_TEXT = 2, 3


@dataclass(frozen=True)
class Grid:
    """Language-averaged deltas (task score minus `none`) per task, target and seed."""

    mm: np.ndarray  # (N_MM, targets, seeds)
    text: np.ndarray  # (N_TEXT, targets, seeds)

    def cell_sums(self) -> CellSums:
        """The grid as the bootstrap's input: every (target, seed) has all tasks."""
        n_targets, n_seeds = self.mm.shape[1:]
        return CellSums(self.mm.sum(axis=0), np.full((n_targets, n_seeds), float(N_MM)),
                        self.text.sum(axis=0), np.full((n_targets, n_seeds), float(N_TEXT)),
                        np.full(n_targets, n_seeds))

    def paired(self) -> np.ndarray:
        """(targets, seeds): mean multimodal minus mean text delta, the per-target tests' pairs."""
        return self.mm.mean(axis=0) - self.text.mean(axis=0)


def simulate(rng: np.random.Generator, n_targets: int, n_seeds: int, n_languages: int, effect: float,
             noise: float = 2.0, heterogeneity: float = 0.3) -> tuple[Grid, np.ndarray]:
    """A grid with multimodal tasks `effect` points above text-only ones (text gains 0.5).

    Returns the grid and the raw scores (tasks incl. `none` first, targets, seeds, languages)
    for building a tidy frame. `heterogeneity` is a task x target interaction (SD, points):
    targets disagree a little about each task, as real targets do.
    """
    shape = (n_targets, n_seeds, n_languages)
    base = 60.0 + 10.0 * rng.random((n_targets, 1, n_languages)) + rng.normal(0.0, 1.0, (n_targets, n_seeds, 1))
    effects = np.array([0.0] + [0.5 + effect] * N_MM + [0.5] * N_TEXT)
    interaction = rng.normal(0.0, heterogeneity, (len(effects), n_targets, 1, 1))
    interaction[0] = 0.0
    scores = base + effects[:, None, None, None] + interaction + rng.normal(0.0, noise, (len(effects), *shape))
    delta = (scores[1:] - scores[:1]).mean(axis=-1)  # language-averaged, as `cell_scores` does
    return Grid(delta[:N_MM], delta[N_MM:]), scores


def to_frame(scores: np.ndarray, targets: list[str]) -> pd.DataFrame:
    """The simulated scores as the tidy frame `collect` produces (every COLUMN)."""
    names = ["none"] + [f"mm{i}" for i in range(N_MM)] + [f"text{i}" for i in range(N_TEXT)]
    modality = ["-"] + ["multimodal"] * N_MM + ["text"] * N_TEXT
    rows: list[dict[str, Any]] = []
    for k, (name, kind) in enumerate(zip(names, modality)):
        for t, target in enumerate(targets):
            for s in range(scores.shape[2]):
                for lang in range(scores.shape[3]):
                    rows.append({"intermediate": name, "target": target, "seed": s + 1, "language": f"l{lang}",
                                 "metric": headline_metric(target), "value": float(scores[k, t, s, lang]),
                                 "key": f"{name}-{target}-{s}", "modality": kind, "control_of": None,
                                 "cost_hours": 1.0, "cost_unit": "gpu", "gold_withheld": False})
    frame = pd.DataFrame(rows)
    assert list(frame.columns) == list(COLUMNS)
    return frame


def monte_carlo_bound(rate: float, n: int, z: float = 3.0) -> float:
    """`rate` plus z binomial standard errors over `n` simulated grids."""
    return rate + z * math.sqrt(rate * (1.0 - rate) / n)


def holm_rejections(grid: Grid) -> tuple[int, int]:
    """(Holm-corrected, uncorrected) number of targets whose paired test rejects at ALPHA."""
    p = [test.p for test in paired_tests(grid.paired())]
    adjusted = holm_adjust(p)
    return (sum(q is not None and q < ALPHA for q in adjusted),
            sum(q is not None and q < ALPHA for q in p))


# ----------------------------------------------------------------------------- (1) power at adequate n


def test_a_true_effect_is_found_at_adequate_n() -> None:
    """10 targets x 3 seeds x 4 languages (XTREME-R's shape), 1.5 points planted against score
    noise of 2 points: the two-level bootstrap interval excludes zero in nearly every grid,
    and with no effect it rarely does (so the detection rate is the effect, not the method)."""
    rng = np.random.default_rng(19)
    n_grids = 200

    def detected(effect: float) -> float:
        hits = 0
        for _ in range(n_grids):
            grid, _ = simulate(rng, n_targets=10, n_seeds=3, n_languages=4, effect=effect)
            ci = percentile_ci(bootstrap_differences(grid.cell_sums(), 400, rng))
            assert ci is not None
            hits += ci[0] > 0 or ci[1] < 0
        return hits / n_grids

    assert small_sample_warning("the grid", n_pairs=10 * 3, n_targets=10) is None  # adequate by the thresholds
    assert detected(1.5) >= 0.9
    assert detected(0.0) <= 0.15


def test_per_target_holm_tests_find_a_true_effect_with_enough_seeds() -> None:
    """With MIN_PAIRED_OBSERVATIONS seeds per target and an effect of about 1.2 SD of the
    per-seed differences, the Holm-corrected tests still find most targets' effect."""
    rng = np.random.default_rng(20)
    n_grids, n_targets = 200, 6
    found = 0
    for _ in range(n_grids):
        grid, _ = simulate(rng, n_targets=n_targets, n_seeds=MIN_PAIRED_OBSERVATIONS, n_languages=4, effect=1.5,
                           heterogeneity=0.0)
        found += holm_rejections(grid)[0]
    assert found / (n_grids * n_targets) >= 0.75


# ----------------------------------------------------------------------------- (2) the warning at small n


def test_too_small_a_grid_warns_even_when_its_interval_excludes_zero() -> None:
    """The demo's shape (2 targets x 2 seeds): a planted effect so large the interval excludes
    zero, and still the warning, in the sentence, the text and the JSON."""
    rng = np.random.default_rng(21)
    _, scores = simulate(rng, n_targets=2, n_seeds=2, n_languages=4, effect=5.0, noise=0.5)
    result = compare_by_modality(to_frame(scores, ["syn-pos", "syn-sent"]), n_boot=1000)
    assert result.excludes_zero is True
    assert result.small_sample is True
    assert result.sample is not None and (result.sample.n_targets, result.sample.n_seeds,
                                          result.sample.n_languages, result.sample.n_pairs) == (2, 2, 4, 4)
    main = result.warnings[0]
    assert main.startswith("small sample for the multimodal - text difference: 4 paired observations")
    assert f"(< {MIN_PAIRED_OBSERVATIONS}: 29% power" in main and f"2 targets (< {MIN_TARGETS}" in main
    assert any(w.startswith("small sample for the per-target tests (2 of 2 targets): 2 seeds at the fewest")
               for w in result.warnings)
    assert any(w.startswith("small sample for the per-language differences (4 of 4 languages): 4 paired cells")
               for w in result.warnings)
    assert result.sentence().endswith("the interval excludes zero but the sample is too small to trust it "
                                      "(see the warning).")
    assert "mean score over 2 targets (syn-pos, syn-sent)" in result.sentence()
    text = result.render_text()
    assert f"warning: {main}" in text and "sample: 2 targets x 2 seeds x 4 languages, 4 paired" in text
    assert "per language (4 languages; multimodal - text; each over 2 targets, 4 cells):" in text
    assert f"**Warning:** {main}" in result.render_markdown()
    data = result.to_json()
    assert data["small_sample"] is True and data["warnings"] == result.warnings
    assert data["sample"] == {"n_targets": 2, "n_seeds": 2, "n_languages": 4, "n_pairs": 4}
    assert data["thresholds"] == {"min_paired_observations": MIN_PAIRED_OBSERVATIONS, "min_targets": MIN_TARGETS,
                                  "alpha": ALPHA}


def test_an_adequate_grid_of_the_xtreme_r_targets_does_not_warn_and_is_named_xtreme_r() -> None:
    rng = np.random.default_rng(22)
    _, scores = simulate(rng, n_targets=len(XTREME_R), n_seeds=3, n_languages=2, effect=1.5)
    result = compare_by_modality(to_frame(scores, XTREME_R), n_boot=500)
    assert result.small_sample is False
    assert not any(w.startswith("small sample for the multimodal - text difference") for w in result.warnings)
    assert result.sentence().startswith("Multimodal intermediate tasks change the XTREME-R score (mean over its 10 "
                                        "tasks) by ")
    assert result.to_json()["suite"] == "XTREME-R score (mean over its 10 tasks)"
    # 3 seeds per target is below the threshold: the per-target tests still carry their warning
    assert result.warnings == [w for w in result.warnings if "per-target tests" in w] and result.warnings


@pytest.mark.parametrize(("n_pairs", "n_targets", "warns"), [
    (MIN_PAIRED_OBSERVATIONS - 1, MIN_TARGETS, True), (MIN_PAIRED_OBSERVATIONS, MIN_TARGETS - 1, True),
    (MIN_PAIRED_OBSERVATIONS, MIN_TARGETS, False), (1, None, True), (MIN_PAIRED_OBSERVATIONS, None, False),
])
def test_thresholds_are_where_the_warning_starts(n_pairs: int, n_targets: int | None, warns: bool) -> None:
    assert (small_sample_warning("x", n_pairs, n_targets) is not None) is warns


# ----------------------------------------------------------------------------- (3) family-wise error under no effect


def test_holm_keeps_the_family_wise_error_at_alpha_where_uncorrected_tests_do_not() -> None:
    """No effect anywhere, 10 targets x 3 seeds: the chance that at least one per-target test
    rejects is <= ALPHA with Holm (within Monte-Carlo error), but about 1 - 0.95^10 = 40%
    uncorrected, so this test fails if the correction is dropped."""
    rng = np.random.default_rng(23)
    n_grids = 2000
    holm_any = raw_any = 0
    for _ in range(n_grids):
        grid, _ = simulate(rng, n_targets=10, n_seeds=3, n_languages=4, effect=0.0, heterogeneity=0.0)
        holm, raw = holm_rejections(grid)
        holm_any += holm > 0
        raw_any += raw > 0
    assert holm_any / n_grids <= monte_carlo_bound(ALPHA, n_grids)
    assert raw_any / n_grids > monte_carlo_bound(ALPHA, n_grids)
    assert raw_any / n_grids == pytest.approx(1 - (1 - ALPHA) ** 10, abs=0.05)


# ----------------------------------------------------------------------------- the pieces


def test_holm_adjust_known_values() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.06
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # step-down: Bonferroni (x3) rejects only the first; Holm rejects all three
    assert holm_adjust([0.01, 0.02, 0.04]) == pytest.approx([0.03, 0.04, 0.04])
    assert holm_adjust([0.5, None, 0.9]) == [pytest.approx(1.0), None, pytest.approx(1.0)]  # capped; None not counted
    assert holm_adjust([]) == [] and holm_adjust([0.2]) == [pytest.approx(0.2)]


def test_paired_test_effect_size_is_cohens_dz() -> None:
    differences = np.array([1.0, 2.0, 3.0, 4.0])
    test = paired_test(differences)
    assert test.d_z == pytest.approx(2.5 / np.std(differences, ddof=1))
    assert test.t == pytest.approx(test.d_z * math.sqrt(4))  # t = d_z * sqrt(n): the scale the power depends on
    assert paired_test(np.array([1.0])).p is None and paired_test(np.array([2.0, 2.0])).d_z is None


def test_vectorised_paired_tests_equal_scipy_ttest() -> None:
    from scipy import stats as scipy_stats

    rows = np.random.default_rng(24).normal(0.3, 1.0, (50, 3))
    rows[7] = 1.5  # constant: no test
    tests = paired_tests(rows)
    assert tests[7].p is None and tests[7].note is not None and tests[7].mean == pytest.approx(1.5)
    for row, test in zip(rows, tests):
        if test.p is None:
            continue
        reference = scipy_stats.ttest_1samp(row, 0.0)
        assert test.t == pytest.approx(reference.statistic) and test.p == pytest.approx(reference.pvalue)


def test_suite_is_named_from_the_targets() -> None:
    assert suite_label(XTREME_R) == "XTREME-R score (mean over its 10 tasks)"
    assert suite_label(list(reversed(XTREME))) == f"XTREME score (mean over its {len(XTREME)} tasks)"
    assert suite_label(XTREME_R[:3]) == f"mean score over 3 targets ({', '.join(XTREME_R[:3])})"
    assert suite_label(["syn-sent"]) == "mean score over 1 target (syn-sent)"
