"""`xstilts analysis compare` on a finished demo-shaped store (2 synthetic targets x 2 seeds
x 4 languages, written without training): the demo's grid is far too small for its
interval to mean much, and the command says so, in the text and in --json, and never calls
the mean over two synthetic targets an XTREME-R score."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.grid import cli_env, run_cli
from tests.support.results import finish_cell, open_raw, spec_raw
from xstilts.analysis.stats import MIN_PAIRED_OBSERVATIONS, MIN_TARGETS


@pytest.fixture(scope="module")
def demo_spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("compare")
    experiment = open_raw(tmp, spec_raw(str(tmp / "store")))
    for node in experiment.plan.evaluations():
        finish_cell(experiment.store, node)
    return next(tmp.glob("spec-*.yaml"))


def _compare(spec: Path, *args: str) -> str:
    result = run_cli("analysis", "compare", str(spec), "--bootstrap", "200", *args,
                     env=cli_env({"HF_HUB_OFFLINE": "1"}))
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_compare_on_the_demo_store_warns_of_the_small_sample(demo_spec: Path) -> None:
    text = _compare(demo_spec)
    lines = text.splitlines()
    assert lines[0].startswith("Multimodal intermediate tasks change the mean score over 2 targets "
                               "(syn-pos, syn-sent) by ")
    assert "XTREME" not in text
    assert lines[0].endswith("but the sample is too small to trust it (see the warning).")
    assert lines[1] == "sample: 2 targets x 2 seeds x 4 languages, 4 paired (target, seed) cells"
    assert lines[2].startswith(f"warning: small sample for the multimodal - text difference: 4 paired observations "
                               f"(< {MIN_PAIRED_OBSERVATIONS}: 29% power")
    assert f"2 targets (< {MIN_TARGETS}" in lines[2]
    assert "p Holm-corrected across" in text


def test_compare_json_carries_the_warning_and_the_counts(demo_spec: Path) -> None:
    data = json.loads(_compare(demo_spec, "--json"))
    assert data["small_sample"] is True
    assert data["warnings"][0].startswith("small sample for the multimodal - text difference: 4 paired observations")
    assert data["sample"] == {"n_targets": 2, "n_seeds": 2, "n_languages": 4, "n_pairs": 4}
    assert data["suite"] == "mean score over 2 targets (syn-pos, syn-sent)"
    assert data["thresholds"]["min_paired_observations"] == MIN_PAIRED_OBSERVATIONS
    assert all({"d_z", "p_holm", "n_languages"} <= set(row) for row in data["targets"])
