"""Does multimodal intermediate training help cross-lingual transfer more than text-only?

The unit of evidence is a delta: a cell's XTREME-R task score (`frame.cell_scores`) minus
the score of `none` (no intermediate training) for the same target and seed, so target
difficulty and the seed's fine-tuning luck cancel before groups are compared.

Uncertainty comes from a two-level percentile bootstrap: resample target tasks with
replacement, then seeds with replacement within each drawn target. Why both levels:
the question is about XTREME-R's *population of tasks* (another set of targets could
favour images less), and within a target the seeds are the only replication of the
fine-tuning noise; resampling only rows would treat the 3 seeds x 30 intermediates of
one target as independent evidence and give far too narrow intervals. Group means are
row-weighted (the mean delta of every multimodal row), so each resample recomputes them
as ratios of sums over the drawn (target, seed) cells, which vectorises over resamples.

Honesty about the sample: every comparison states how many targets, seeds and languages
went into it, warns below `MIN_PAIRED_OBSERVATIONS` / `MIN_TARGETS` (see their docstrings
for the power argument), reports Cohen's d_z beside each interval, and the per-target tests
are corrected across targets with Holm's step-down method (`holm_adjust`), because with 10
targets an uncorrected 5% test flags at least one target in ~40% of grids with no effect.
The headline is named after the targets actually compared, i.e. the spec's targets that
have finished cells (`suite_label`): "XTREME-R" only when they are exactly XTREME-R's
tasks, so neither synthetic targets nor a half-finished grid pass for the benchmark.

Everything here is torch-free and reads only the tidy frame (`xstilts.analysis.frame.COLUMNS`);
missing groups are reported in `Comparison.problems` instead of raised, so a partially
finished grid still gets a report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from xstilts.analysis.frame import cell_scores, deltas, withheld_note
from xstilts.core.tasks import BASELINE, TASKS

MULTIMODAL = "multimodal"
TEXT = "text"
LEVEL = 0.95
ALPHA = 0.05
"""Family-wise error rate of the per-target tests (Holm) and the level of `significant`."""
_CHUNK = 2000  # resamples per vectorised block: bounds memory for large grids

MIN_PAIRED_OBSERVATIONS = 10
"""Below this many paired observations a comparison gets a small-sample warning.

Power argument: a two-sided paired t-test at alpha = 0.05 has 80% power for a
standardised effect of d_z = 1 (a mean difference as large as the SD of the paired
differences) at n = 10 pairs; at n = 4 (the demo's 2 targets x 2 seeds) it has 29%,
at n = 3 (one target's 3 seeds) 18%, at n = 2 9%. Below 10, a true effect of one SD is
more likely missed than found, and an interval that excludes zero is mostly the luck of
a few draws, so we say so instead of letting "excludes zero" stand alone. The pairs are
(target, seed) cells for the main and the control comparisons, and seeds for a target's
own test.
"""

MIN_TARGETS = 5
"""Below this many targets the main comparison gets a small-sample warning.

The bootstrap's top level resamples targets, so the question "does this hold for
XTREME-R's tasks" has as many independent observations as there are targets, however many
seeds each has. With k targets there are only C(2k-1, k) distinct target draws (3 for
k = 2, 35 for k = 4, 126 for k = 5) and the percentile interval is too narrow by about
sqrt((k-1)/k) (29% at k = 2, 11% at k = 5); below 5 the interval's coverage is not worth
the name. (At 10 targets, as XTREME-R has, the power argument of
`MIN_PAIRED_OBSERVATIONS` holds at the target level too.)
"""


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Sample:
    """How much evidence went into one comparison: stated beside every number, because an
    interval means little without the count it rests on."""

    n_targets: int
    n_seeds: int
    n_languages: int
    n_pairs: int
    """Paired observations the test rests on: (target, seed) cells, or a target's seeds."""

    def describe(self) -> str:
        return (f"{_count(self.n_targets, 'target')} x {_count(self.n_seeds, 'seed')} x "
                f"{_count(self.n_languages, 'language')}, {self.n_pairs} paired")

    def to_json(self) -> dict[str, int]:
        return {"n_targets": self.n_targets, "n_seeds": self.n_seeds, "n_languages": self.n_languages,
                "n_pairs": self.n_pairs}


@dataclass(frozen=True)
class PairedTest:
    """A one-sample t-test of paired differences against 0, with Cohen's d_z.

    d_z = mean / SD of the paired differences: the standardised effect the paired test's
    power depends on (t = d_z * sqrt(n)), so it reads on the same scale as the
    small-sample threshold (`MIN_PAIRED_OBSERVATIONS` is set for d_z = 1). The raw mean
    difference in points stays beside it: points are what a reader of XTREME tables knows.
    """

    n: int
    mean: float | None
    d_z: float | None
    t: float | None
    p: float | None
    note: str | None = None


@dataclass(frozen=True)
class TargetDifference:
    """Multimodal minus text on one target; `p` from a paired t-test across seeds,
    `p_holm` the same p adjusted across all targets (Holm), `d_z` its effect size."""

    target: str
    difference: float | None
    ci: tuple[float, float] | None
    n_seeds: int
    t: float | None = None
    p: float | None = None
    note: str | None = None
    d_z: float | None = None
    p_holm: float | None = None
    n_languages: int = 0

    @property
    def significant(self) -> bool | None:
        """Holm-corrected significance at `ALPHA` (None without a test)."""
        return None if self.p_holm is None else self.p_holm < ALPHA


@dataclass(frozen=True)
class ControlDifference:
    """A multimodal task minus its control(s), paired on (target, seed)."""

    task: str
    controls: list[str]
    difference: float | None
    ci: tuple[float, float] | None
    n_pairs: int
    note: str | None = None
    d_z: float | None = None
    n_targets: int = 0
    n_seeds: int = 0


@dataclass(frozen=True)
class LanguageDifference:
    """The main difference recomputed from one language's headline scores."""

    language: str
    difference: float | None
    ci: tuple[float, float] | None
    n_targets: int
    n_cells: int
    d_z: float | None = None


@dataclass
class Comparison:
    """Everything `compare_by_modality` found; render with `render_text`/`render_markdown`."""

    multimodal: float | None = None
    text: float | None = None
    difference: float | None = None
    ci: tuple[float, float] | None = None
    n_multimodal: int = 0
    n_text: int = 0
    n_targets: int = 0
    multimodal_tasks: list[str] = field(default_factory=list)
    text_tasks: list[str] = field(default_factory=list)
    targets: list[TargetDifference] = field(default_factory=list)
    controls: list[ControlDifference] = field(default_factory=list)
    languages: list[LanguageDifference] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    n_boot: int = 10000
    seed: int = 0
    sample: Sample | None = None
    d_z: float | None = None
    suite: str = "score"
    warnings: list[str] = field(default_factory=list)
    """Small-sample warnings (`MIN_PAIRED_OBSERVATIONS`, `MIN_TARGETS`), in text and JSON:
    the main difference's first, then the per-target tests' and the controls'."""
    small_sample: bool = False
    """The main multimodal - text difference rests on too few pairs or targets."""

    @property
    def excludes_zero(self) -> bool | None:
        return _excludes_zero(self.ci)


    def sentence(self) -> str:
        """The plain answer to the research question, or what stops it being given."""
        if self.difference is None or self.multimodal is None or self.text is None:
            return "No modality comparison: " + "; ".join(self.problems or ["no data"]) + "."
        direction = "better" if self.difference >= 0 else "worse"
        head = (
            f"Multimodal intermediate tasks change the {self.suite} by {self.multimodal:+.2f} points on average, "
            f"text-only ones by {self.text:+.2f}: multimodal is {direction} by {abs(self.difference):.2f} points"
        )
        if self.ci is None:
            return head + " (no confidence interval: a single target and seed)."
        verdict = "excludes" if self.excludes_zero else "includes"
        caveat = " but the sample is too small to trust it (see the warning)" if self.small_sample else ""
        return head + f" (95% CI {_fmt_ci(self.ci)}, d_z {_fmt_dz(self.d_z)}); the interval {verdict} zero{caveat}."

    def _head_lines(self) -> list[str]:
        lines = [self.sentence()]
        if self.sample is not None:
            lines.append(f"sample: {self.sample.describe()} (target, seed) cells")
        lines += [f"warning: {warning}" for warning in self.warnings]
        return lines

    def render_text(self) -> str:
        """A few plain lines: the sentence, per-target table, controls, languages."""
        lines = self._head_lines()
        lines += [f"note: {problem}" for problem in self.problems]
        if self.targets:
            lines += ["", f"per target (multimodal - text; paired t-test across seeds, p Holm-corrected across "
                          f"{_count(self._n_tested(), 'target')}):"]
            lines += [f"  {'target':<14} {'seeds':>5} {'langs':>5} {'diff':>7}  {'95% CI':<18} {'d_z':>6} "
                      f"{'p':>8} {'p Holm':>8}"]
            for row in self.targets:
                lines.append(
                    f"  {row.target:<14} {row.n_seeds:>5} {row.n_languages:>5} {_fmt(row.difference):>7}  "
                    f"{_fmt_ci(row.ci):<18} {_fmt_dz(row.d_z):>6} {_fmt_p(row.p):>8} {_fmt_p(row.p_holm):>8}"
                    + (f"  ({row.note})" if row.note else "")
                )
        if self.controls:
            lines += ["", "multimodal task vs its control (paired on target and seed):"]
            for c in self.controls:
                lines.append(
                    f"  {c.task} vs {', '.join(c.controls)}: {_fmt(c.difference)} points "
                    f"(95% CI {_fmt_ci(c.ci)}, d_z {_fmt_dz(c.d_z)}; {_count(c.n_targets, 'target')} x "
                    f"{_count(c.n_seeds, 'seed')}, {c.n_pairs} pairs)" + (f" ({c.note})" if c.note else "")
                )
        lines += self._language_lines()
        return "\n".join(lines)

    def _n_tested(self) -> int:
        return sum(row.p is not None for row in self.targets)

    def _language_lines(self, k: int = 3) -> list[str]:
        ranked = sorted((lang for lang in self.languages if lang.difference is not None),
                        key=lambda lang: lang.difference, reverse=True)  # type: ignore[arg-type, return-value]
        if not ranked:
            return []

        sizes = {(lang.n_targets, lang.n_cells) for lang in ranked}
        uniform = len(sizes) == 1

        def item(lang: LanguageDifference) -> str:
            size = "" if uniform else f" ({_count(lang.n_targets, 'target')}, {lang.n_cells} cells)"
            return f"{lang.language} {_fmt(lang.difference)} {_fmt_ci(lang.ci)} d_z {_fmt_dz(lang.d_z)}{size}"

        each = f"; each over {_count(ranked[0].n_targets, 'target')}, {ranked[0].n_cells} cells" if uniform else ""
        lines = ["", f"per language ({len(ranked)} languages; multimodal - text{each}):"]
        lines.append("  largest:  " + "; ".join(item(lang) for lang in ranked[:k]))
        rest = ranked[max(k, len(ranked) - k):]  # never repeat a language listed as largest
        if rest:
            lines.append("  smallest: " + "; ".join(item(lang) for lang in rest[::-1]))
        return lines

    def render_markdown(self) -> str:
        """The same content as Markdown tables, for the report."""
        parts = [self.sentence()]
        if self.sample is not None:
            parts.append(f"Sample: {self.sample.describe()} (target, seed) cells.")
        if self.warnings:
            parts.append("\n".join(f"> **Warning:** {warning}" for warning in self.warnings))
        if self.problems:
            parts.append("\n".join(f"- {problem}" for problem in self.problems))
        if self.targets:
            rows = [[t.target, str(t.n_seeds), str(t.n_languages), _fmt(t.difference), _fmt_ci(t.ci), _fmt_dz(t.d_z),
                     _fmt_p(t.p), _fmt_p(t.p_holm), t.note or ""] for t in self.targets]
            parts.append(f"**Per target** (multimodal - text delta; paired t-test across seeds, p Holm-corrected "
                         f"across {_count(self._n_tested(), 'target')})\n\n"
                         + _md_table(["target", "seeds", "languages", "difference", "95% CI", "d_z", "p", "p (Holm)",
                                      "note"], rows))
        if self.controls:
            rows = [[c.task, ", ".join(c.controls), str(c.n_targets), str(c.n_seeds), str(c.n_pairs),
                     _fmt(c.difference), _fmt_ci(c.ci), _fmt_dz(c.d_z)] for c in self.controls]
            parts.append("**Multimodal task vs control** (paired on target and seed)\n\n"
                         + _md_table(["task", "control", "targets", "seeds", "pairs", "difference", "95% CI", "d_z"],
                                     rows))
        if self.languages:
            ranked = sorted(self.languages, key=lambda lang: -math.inf if lang.difference is None else lang.difference,
                            reverse=True)
            rows = [[lang.language, str(lang.n_targets), str(lang.n_cells), _fmt(lang.difference), _fmt_ci(lang.ci),
                     _fmt_dz(lang.d_z)] for lang in ranked]
            parts.append("**Per language** (multimodal - text delta of the language's headline score)\n\n"
                         + _md_table(["language", "targets", "cells", "difference", "95% CI", "d_z"], rows))
        return "\n\n".join(parts) + "\n"

    def to_json(self) -> dict[str, Any]:
        """A plain, JSON-serialisable dict (points rounded to 4 decimals, p to 4 digits)."""
        return {
            "multimodal": _r(self.multimodal),
            "text": _r(self.text),
            "difference": _r(self.difference),
            "ci": _r_ci(self.ci),
            "d_z": _r(self.d_z),
            "excludes_zero": self.excludes_zero,
            "suite": self.suite,
            "sample": None if self.sample is None else self.sample.to_json(),
            "small_sample": self.small_sample,
            "warnings": list(self.warnings),
            "thresholds": {"min_paired_observations": MIN_PAIRED_OBSERVATIONS, "min_targets": MIN_TARGETS,
                           "alpha": ALPHA},
            "n_multimodal": self.n_multimodal,
            "n_text": self.n_text,
            "n_targets": self.n_targets,
            "multimodal_tasks": list(self.multimodal_tasks),
            "text_tasks": list(self.text_tasks),
            "targets": [
                {"target": t.target, "difference": _r(t.difference), "ci": _r_ci(t.ci), "n_seeds": t.n_seeds,
                 "n_languages": t.n_languages, "d_z": _r(t.d_z), "t": _r(t.t), "p": _r_p(t.p),
                 "p_holm": _r_p(t.p_holm), "significant": t.significant, "note": t.note}
                for t in self.targets
            ],
            "controls": [
                {"task": c.task, "controls": list(c.controls), "difference": _r(c.difference), "ci": _r_ci(c.ci),
                 "d_z": _r(c.d_z), "n_targets": c.n_targets, "n_seeds": c.n_seeds, "n_pairs": c.n_pairs,
                 "note": c.note}
                for c in self.controls
            ],
            "languages": [
                {"language": lang.language, "difference": _r(lang.difference), "ci": _r_ci(lang.ci),
                 "d_z": _r(lang.d_z), "n_targets": lang.n_targets, "n_cells": lang.n_cells}
                for lang in self.languages
            ],
            "problems": list(self.problems),
            "n_boot": self.n_boot,
            "seed": self.seed,
            "level": LEVEL,
            "sentence": self.sentence(),
        }


# ----------------------------------------------------------------------------- entry point


def compare_by_modality(frame: pd.DataFrame, n_boot: int = 10000, seed: int = 0) -> Comparison:
    """Multimodal vs text-only intermediate tasks, from a tidy results frame.

    Controls (modality "text control") are left out of the text group: they exist to
    isolate what the images add to a caption task, not to represent text-only STILTs.
    Each estimate draws from its own generator seeded with `seed`, so adding a language or
    a control never changes another estimate's interval.
    """
    result = Comparison(n_boot=n_boot, seed=seed)
    cells = _cell_deltas(frame, result.problems)
    if cells is None:
        return result
    mm, tx = cells[cells["modality"] == MULTIMODAL], cells[cells["modality"] == TEXT]
    result.multimodal_tasks = sorted(mm["intermediate"].unique())
    result.text_tasks = sorted(tx["intermediate"].unique())
    result.n_multimodal, result.n_text = len(mm), len(tx)
    result.multimodal = _mean(mm["delta"])
    result.text = _mean(tx["delta"])
    result.controls = _control_differences(cells, n_boot, seed)
    if mm.empty or tx.empty:
        missing = "multimodal" if mm.empty else "text-only"
        result.problems.append(f"no {missing} intermediate rows with a baseline: no multimodal - text difference")
        result.warnings = _breakdown_warnings(result)  # the controls may still rest on too little
        return result
    result.n_targets = int(pd.concat([mm, tx])["target"].nunique())
    result.difference, result.ci = group_difference(mm, tx, n_boot, seed)
    pairs = paired_differences(mm, tx)
    result.d_z = cohens_dz(pairs.to_numpy())
    compared = sorted(pairs.index.get_level_values("target").unique())
    result.suite = suite_label(compared or sorted(set(mm["target"]) | set(tx["target"])))  # unpaired: name all
    result.sample = Sample(len(compared), int(pairs.index.get_level_values("seed").nunique()),
                           _n_languages(frame, compared), int(pairs.size))
    result.targets = _target_differences(mm, tx, n_boot, seed, frame)
    result.languages = _language_differences(frame, n_boot, seed)
    main = small_sample_warning("the multimodal - text difference", result.sample.n_pairs, result.sample.n_targets)
    result.small_sample = main is not None
    result.warnings = ([main] if main else []) + _breakdown_warnings(result)
    return result


def _cell_deltas(frame: pd.DataFrame, problems: list[str]) -> pd.DataFrame | None:
    """`deltas(cell_scores(frame))`, or None with the reason appended to `problems`;
    cells left out because their gold is withheld are named in `problems` too."""
    if frame.empty:
        problems.append("the results frame is empty")
        return None
    note = withheld_note(frame)
    if note is not None:
        problems.append(note)
    scores = cell_scores(frame)
    if not (scores["intermediate"] == BASELINE).any():
        problems.append(f"no baseline ({BASELINE!r}) rows: deltas need the score without intermediate training")
        return None
    cells = deltas(scores, baseline=BASELINE)
    if cells.empty:
        problems.append(f"no intermediate task shares a (target, seed) with the baseline ({BASELINE!r})")
        return None
    return cells


def _n_languages(frame: pd.DataFrame, targets: Sequence[str]) -> int:
    return int(frame.loc[frame["target"].isin(list(targets)), "language"].nunique())


# ----------------------------------------------------------------------------- honesty about the sample


def suite_label(targets: Sequence[str]) -> str:
    """What the mean over `targets` may be called: "XTREME-R score" only when the targets are
    exactly XTREME-R's tasks (`Task.suites`), "XTREME score" likewise; anything else (a subset,
    synthetic targets) is "mean score over <n> targets (<names>)", so a demo or a partial
    grid never passes for the benchmark."""
    names = sorted(set(targets))
    for suite, label in (("xtreme-r", "XTREME-R"), ("xtreme", "XTREME")):
        members = sorted(name for name, task in TASKS.items() if suite in task.suites)
        if names == members:
            return f"{label} score (mean over its {len(members)} tasks)"
    return f"mean score over {_count(len(names), 'target')} ({', '.join(names)})"


def power_at_dz1(n: int, alpha: float = ALPHA) -> float | None:
    """Power of a two-sided paired t-test with `n` pairs against a true d_z of 1 (None below 2 pairs)."""
    if n < 2:
        return None
    df, shift = n - 1, math.sqrt(n)
    critical = scipy_stats.t.ppf(1 - alpha / 2, df)
    power = scipy_stats.nct.sf(critical, df, shift) + scipy_stats.nct.cdf(-critical, df, shift)
    return float(power) if math.isfinite(power) else None


def small_sample_warning(what: str, n_pairs: int, n_targets: int | None = None,
                         unit: str = "paired observations") -> str | None:
    """The warning for one comparison below `MIN_PAIRED_OBSERVATIONS` pairs or `MIN_TARGETS`
    targets (when `n_targets` is given), or None when the sample is adequate."""
    reasons = []
    if n_pairs < MIN_PAIRED_OBSERVATIONS:
        power = power_at_dz1(n_pairs)
        chance = "no test at all" if power is None else f"{power:.0%} power to detect an effect of d_z = 1"
        reasons.append(f"{n_pairs} {unit} (< {MIN_PAIRED_OBSERVATIONS}: {chance}, "
                       f"80% needs {MIN_PAIRED_OBSERVATIONS})")
    if n_targets is not None and n_targets < MIN_TARGETS:
        reasons.append(f"{_count(n_targets, 'target')} (< {MIN_TARGETS}: too few to resample the population of "
                       f"tasks)")
    if not reasons:
        return None
    return f"small sample for {what}: " + "; ".join(reasons) + "; treat the interval and p as descriptive."


def _breakdown_warnings(result: Comparison) -> list[str]:
    """One warning per kind of breakdown that rests on too little: the per-target tests,
    the per-language differences, the controls (each kind together, by its fewest)."""
    out = []
    thin = [row for row in result.targets if row.n_seeds < MIN_PAIRED_OBSERVATIONS]
    if thin:
        fewest = min(row.n_seeds for row in thin)
        out.append(str(small_sample_warning(f"the per-target tests ({len(thin)} of {len(result.targets)} targets)",
                                            fewest, unit="seeds at the fewest")))
    thin_languages = [lang for lang in result.languages if lang.n_cells < MIN_PAIRED_OBSERVATIONS]
    if thin_languages:
        fewest = min(lang.n_cells for lang in thin_languages)
        out.append(str(small_sample_warning(
            f"the per-language differences ({len(thin_languages)} of {len(result.languages)} languages)", fewest,
            unit="paired cells at the fewest")))
    thin_controls = [c for c in result.controls if c.n_pairs < MIN_PAIRED_OBSERVATIONS]
    if thin_controls:
        fewest = min(c.n_pairs for c in thin_controls)
        out.append(str(small_sample_warning(f"the control comparisons ({', '.join(c.task for c in thin_controls)})",
                                            fewest, unit="paired cells at the fewest")))
    return out


def holm_adjust(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values, in the order given; None entries (no test) stay None
    and do not count towards the family.

    Sort the m p-values ascending; the i-th smallest (i from 1) is multiplied by m - i + 1,
    a running maximum keeps the adjusted values monotone, and each is capped at 1. Rejecting
    where the adjusted p < alpha controls the family-wise error rate at alpha under any
    dependence between the tests (Holm 1979), and is uniformly more powerful than Bonferroni.
    """
    tested = [(p, i) for i, p in enumerate(p_values) if p is not None]
    adjusted: list[float | None] = [None] * len(p_values)
    m, running = len(tested), 0.0
    for rank, (p, i) in enumerate(sorted(tested)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def paired_differences(a: pd.DataFrame, b: pd.DataFrame, by: Sequence[str] = ("target", "seed"),
                       value: str = "delta") -> pd.Series:
    """mean(a) - mean(b) per `by` key where both groups have rows: the paired observations.

    Both groups of one (target, seed) share that seed's baseline run, so differencing there
    removes the seed's fine-tuning luck before anything is averaged or tested.
    """
    keys = list(by)
    paired = a.groupby(keys)[value].mean() - b.groupby(keys)[value].mean()
    return paired.dropna()


def cohens_dz(differences: np.ndarray) -> float | None:
    """Cohen's d_z: mean / SD (n - 1) of paired differences; None below 2 or with SD 0."""
    differences = np.asarray(differences, dtype=float)
    if differences.size < 2:
        return None
    sd = float(differences.std(ddof=1))
    if not math.isfinite(sd) or sd <= 1e-12 * max(1.0, float(np.abs(differences).max())):
        return None
    return float(differences.mean()) / sd


def paired_test(differences: np.ndarray) -> PairedTest:
    """One-sample t-test of paired differences against 0, with d_z; a note instead of a test
    when there are fewer than 2 differences or they are all equal."""
    return paired_tests(np.asarray(differences, dtype=float)[None, :])[0]


def paired_tests(differences: np.ndarray) -> list[PairedTest]:
    """`paired_test` of each row of a 2-D array (rows of equal length), vectorised: the
    same t = d_z * sqrt(n) and two-sided p as `scipy.stats.ttest_1samp`, one scipy call for
    all rows, so simulations of thousands of grids stay fast."""
    differences = np.asarray(differences, dtype=float)
    n = differences.shape[1]
    if n < 2:
        return [PairedTest(n, float(row.mean()) if n else None, None, None, None,
                           f"{n} seed(s) with both groups: no paired test") for row in differences]
    mean = differences.mean(axis=1)
    sd = differences.std(axis=1, ddof=1)
    constant = np.isclose(differences, differences[:, :1]).all(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        d_z = np.where(constant, np.nan, mean / sd)
        t = d_z * math.sqrt(n)
    p = 2.0 * scipy_stats.t.sf(np.abs(t), n - 1)
    return [
        PairedTest(n, float(mean[i]), None, None, None, "identical differences across seeds: t-test undefined")
        if constant[i] else PairedTest(n, float(mean[i]), float(d_z[i]), float(t[i]), float(p[i]))
        for i in range(differences.shape[0])
    ]


# ----------------------------------------------------------------------------- the bootstrap


@dataclass(frozen=True)
class CellSums:
    """Per (target, seed slot): sum and count of deltas of groups a and b.

    Padded to the largest number of seeds; `n_seeds[t]` says how many slots of target t
    are real, so targets with different seed sets bootstrap correctly.
    """

    a_sum: np.ndarray
    a_cnt: np.ndarray
    b_sum: np.ndarray
    b_cnt: np.ndarray
    n_seeds: np.ndarray

    @property
    def n_cells(self) -> int:
        return int(self.n_seeds.sum())


def cell_sums(a: pd.DataFrame, b: pd.DataFrame, value: str = "delta") -> CellSums:
    """Aggregate two groups of rows (target, seed, `value`) onto a shared cell grid."""
    keys = pd.concat([a[["target", "seed"]], b[["target", "seed"]]]).drop_duplicates()
    keys = keys.sort_values(["target", "seed"]).reset_index(drop=True)
    targets = sorted(keys["target"].unique())
    t_index = {t: i for i, t in enumerate(targets)}
    keys["t"] = keys["target"].map(t_index)
    keys["s"] = keys.groupby("target").cumcount()
    n_seeds = keys.groupby("t").size().reindex(range(len(targets)), fill_value=0).to_numpy()
    shape = (len(targets), int(n_seeds.max()) if len(targets) else 0)

    def fill(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        total, count = np.zeros(shape), np.zeros(shape)
        grouped = rows.groupby(["target", "seed"])[value].agg(["sum", "count"]).reset_index()
        located = grouped.merge(keys, on=["target", "seed"])
        np.add.at(total, (located["t"].to_numpy(), located["s"].to_numpy()), located["sum"].to_numpy(float))
        np.add.at(count, (located["t"].to_numpy(), located["s"].to_numpy()), located["count"].to_numpy(float))
        return total, count

    a_sum, a_cnt = fill(a)
    b_sum, b_cnt = fill(b)
    return CellSums(a_sum, a_cnt, b_sum, b_cnt, n_seeds)


def bootstrap_differences(sums: CellSums, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """`n_boot` two-level resamples of mean(a) - mean(b); NaN where a draw lacks a group.

    Level 1 draws as many targets as there are, with replacement; level 2 draws, for each
    drawn target, as many of its seeds as it has, with replacement. A cell drawn k times
    weighs k times in both groups' sums. With few targets (XTREME-R has 10) a percentile
    interval is somewhat narrow (about sqrt((n-1)/n)), a known limit worth stating next
    to the number rather than hiding behind a more elaborate interval.
    """
    n_targets, width = sums.a_sum.shape
    out = np.empty(n_boot)
    slots = np.arange(width)
    for start in range(0, n_boot, _CHUNK):
        size = min(_CHUNK, n_boot - start)
        t_draw = rng.integers(0, n_targets, size=(size, n_targets))
        seeds_of = sums.n_seeds[t_draw][..., None]
        s_draw = np.minimum((rng.random((size, n_targets, width)) * seeds_of).astype(np.int64), width - 1)
        keep = slots < seeds_of
        t_idx = np.broadcast_to(t_draw[..., None], s_draw.shape)

        def total(values: np.ndarray) -> np.ndarray:
            return np.where(keep, values[t_idx, s_draw], 0.0).sum(axis=(1, 2))

        with np.errstate(invalid="ignore", divide="ignore"):
            out[start:start + size] = total(sums.a_sum) / total(sums.a_cnt) - total(sums.b_sum) / total(sums.b_cnt)
    return out


def percentile_ci(draws: np.ndarray, level: float = LEVEL) -> tuple[float, float] | None:
    """The percentile interval of the finite draws; None when none are finite."""
    finite = draws[np.isfinite(draws)]
    if finite.size == 0:
        return None
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return float(low), float(high)


def group_difference(a: pd.DataFrame, b: pd.DataFrame, n_boot: int, seed: int,
                     value: str = "delta") -> tuple[float | None, tuple[float, float] | None]:
    """mean(a) - mean(b) over rows, with the two-level bootstrap CI.

    The CI is None when there is only one (target, seed) cell: resampling a single value
    says nothing about its uncertainty.
    """
    if a.empty or b.empty:
        return None, None
    difference = float(a[value].mean() - b[value].mean())
    sums = cell_sums(a, b, value)
    if sums.n_cells < 2:
        return difference, None
    draws = bootstrap_differences(sums, n_boot, np.random.default_rng(seed))
    return difference, percentile_ci(draws)


# ----------------------------------------------------------------------------- breakdowns


def _target_differences(mm: pd.DataFrame, tx: pd.DataFrame, n_boot: int, seed: int,
                        frame: pd.DataFrame) -> list[TargetDifference]:
    """Per target: difference, seed-resampling CI, a paired t-test across seeds with d_z,
    and the p-values Holm-adjusted across the targets that have a test.

    The test pairs, for each seed, the mean multimodal and mean text delta of that seed:
    both share the seed's baseline run, so the pairing removes the seed's luck.
    """
    rows = []
    for target in sorted(set(mm["target"]) | set(tx["target"])):
        a, b = mm[mm["target"] == target], tx[tx["target"] == target]
        difference, ci = group_difference(a, b, n_boot, seed)
        if a.empty or b.empty:
            test = PairedTest(0, None, None, None, None, f"no {'multimodal' if a.empty else 'text-only'} rows")
        else:
            test = paired_test(paired_differences(a, b, by=("seed",)).to_numpy())
        rows.append(TargetDifference(target, difference, ci, test.n, test.t, test.p, test.note, test.d_z,
                                     n_languages=_n_languages(frame, [target])))
    adjusted = holm_adjust([row.p for row in rows])
    return [replace(row, p_holm=p_holm) for row, p_holm in zip(rows, adjusted)]


def _control_differences(cells: pd.DataFrame, n_boot: int, seed: int) -> list[ControlDifference]:
    """Each multimodal task against the rows whose control_of names it.

    Only (target, seed) cells where the task and a control both exist count, so the
    difference is paired: same target, same seed, same baseline.
    """
    out = []
    controlled = cells[cells["control_of"].notna()]
    for task in sorted(cells.loc[cells["modality"] == MULTIMODAL, "intermediate"].unique()):
        controls = controlled[controlled["control_of"] == task]
        if controls.empty:
            continue
        a = cells[cells["intermediate"] == task]
        shared = a[["target", "seed"]].merge(controls[["target", "seed"]].drop_duplicates())
        a, b = (rows.merge(shared, on=["target", "seed"]) for rows in (a, controls))
        names = sorted(controls["intermediate"].unique())
        n_pairs = int(len(shared.drop_duplicates()))
        if n_pairs == 0:
            out.append(ControlDifference(task, names, None, None, 0, "no (target, seed) with both"))
            continue
        difference, ci = group_difference(a, b, n_boot, seed)
        shared = shared.drop_duplicates()
        out.append(ControlDifference(task, names, difference, ci, n_pairs,
                                     d_z=cohens_dz(paired_differences(a, b).to_numpy()),
                                     n_targets=int(shared["target"].nunique()),
                                     n_seeds=int(shared["seed"].nunique())))
    return out


def language_deltas(frame: pd.DataFrame) -> pd.DataFrame:
    """Deltas per (intermediate, target, seed, language) of the headline metric.

    `cell_scores` of a one-language slice is exactly that language's headline score, so
    reusing it keeps the metric choice and labelling identical to the main analysis.
    """
    parts = []
    for language, rows in frame.groupby("language", sort=True):
        scores = cell_scores(rows)
        if not (scores["intermediate"] == BASELINE).any():
            continue
        part = deltas(scores, baseline=BASELINE)
        part["language"] = language
        parts.append(part)
    if not parts:
        return pd.DataFrame(columns=["intermediate", "target", "seed", "delta", "modality", "language"])
    return pd.concat(parts, ignore_index=True)


def _language_differences(frame: pd.DataFrame, n_boot: int, seed: int) -> list[LanguageDifference]:
    """The main difference per language, bootstrapped over that language's targets and seeds."""
    out = []
    per_language = language_deltas(frame)
    for language, rows in per_language.groupby("language", sort=True):
        a, b = rows[rows["modality"] == MULTIMODAL], rows[rows["modality"] == TEXT]
        if a.empty or b.empty:
            continue
        difference, ci = group_difference(a, b, n_boot, seed)
        n_cells = int(pd.concat([a, b])[["target", "seed"]].drop_duplicates().shape[0])
        out.append(LanguageDifference(str(language), difference, ci, int(rows["target"].nunique()), n_cells,
                                      cohens_dz(paired_differences(a, b).to_numpy())))
    return out


# ----------------------------------------------------------------------------- formatting


def _mean(values: pd.Series) -> float | None:
    return float(values.mean()) if len(values) else None


def _excludes_zero(ci: tuple[float, float] | None) -> bool | None:
    return None if ci is None else bool(ci[0] > 0 or ci[1] < 0)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def _fmt_dz(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _fmt_ci(ci: tuple[float, float] | None) -> str:
    return "-" if ci is None else f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"


def _fmt_p(p: float | None) -> str:
    return "-" if p is None else (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def _r_p(p: float | None) -> float | None:
    return None if p is None or not math.isfinite(p) else float(f"{p:.4g}")


def _r_ci(ci: tuple[float, float] | None) -> list[float | None] | None:
    return None if ci is None else [_r(ci[0]), _r(ci[1])]
