"""xstilts.analysis.collect on stores written the way jobs write them (no training: the node
files are generated), on a local path and on S3 (moto)."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import pytest
import yaml

from xstilts.analysis.collect import (
    CACHE_FILE, cache_path, collect_frame, infer_format, missing_cells, read_frame, train_chain, write_frame,
)
from xstilts.analysis.frame import COLUMNS
from xstilts.launcher.experiment import Experiment, open_experiment
from xstilts.core.plan import Node, build_plan
from xstilts.core.spec import validate
from xstilts.core.store import DONE, Store
from tests.support.specs import demo_raw
from tests.support.results import (
    Reads, SCORES, T0, assert_same_rows, attempts, eval_hours, evaluate_result, expected_rows, finish,
    finish_cell, open_raw, set_status, spec_raw, train_hours, value_of,
)


def test_rows_values_and_costs_equal_what_the_nodes_hold(tmp_path: Path) -> None:
    experiment = open_raw(tmp_path, spec_raw(str(tmp_path / "store"), gpus=True))
    evaluations = experiment.plan.evaluations()
    for node in evaluations:
        finish_cell(experiment.store, node)
    frame = collect_frame(experiment, workers=4)
    assert len(frame) == len(evaluations) // 2 * 4 * (1 + 4)  # syn-sent: accuracy; syn-pos: 4 keys
    assert_same_rows(frame, expected_rows(experiment, evaluations, (2, 1), "gpu"))
    # seed 1: 0.5 + 1.25 train hours (the killed attempt counts 0) x 2 GPUs + 0.1 evaluate x 1 GPU
    seed1 = frame[(frame["seed"] == 1) & (frame["intermediate"] == "syn-rate")]
    assert set(seed1["cost_hours"].round(9)) == {round(1.75 * 2 + 0.1, 9)}
    assert frame.dtypes["seed"] == "int64" and frame.dtypes["value"] == "float64"
    assert all(v is None for v in frame.loc[frame["intermediate"] != "syn-shapes-mcm-text", "control_of"])


def test_cpu_units_and_retrieval_and_xcopa_chains(tmp_path: Path) -> None:
    experiment = open_raw(tmp_path, spec_raw(str(tmp_path / "store")))
    node = experiment.plan.evaluations()[0]
    finish_cell(experiment.store, node)
    frame = collect_frame(experiment, workers=2)
    assert set(frame["cost_unit"]) == {"cpu"}  # default resources: 1 CPU per stage
    assert set(frame["cost_hours"].round(9)) == {round(sum(h or 0 for h in train_hours(node)) + 0.1, 9)}

    raw = demo_raw()
    raw["intermediate"]["tasks"] = ["none", "syn-rate"]
    raw["target"]["tasks"] = ["xcopa", "tatoeba"]
    plan = build_plan(validate(raw))
    stages = {(n.task, n.intermediate): [(t.stage, t.task) for t in train_chain(n)] for n in plan.evaluations()}
    assert stages[("xcopa", "syn-rate")] == [("train-target", "xcopa"), ("train-target", "socialiqa")]
    assert stages[("tatoeba", "syn-rate")] == [] and stages[("tatoeba", "none")] == []


def test_half_finished_experiment_lists_missing_cells(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    experiment = open_raw(tmp_path, spec_raw(str(tmp_path / "store")))
    store, evaluations = experiment.store, experiment.plan.evaluations()
    done, failed_eval, failed_train, queued = evaluations[:-3], evaluations[-3], evaluations[-2], evaluations[-1]
    for node in done:
        finish_cell(store, node)
    for train in train_chain(failed_eval):
        finish(store, train, train_hours(train))
    set_status(store, failed_eval, "failed")
    set_status(store, train_chain(failed_train)[0], "failed")
    set_status(store, train_chain(queued)[0], "queued")

    import xstilts.core.index as index

    listings: list[int] = []
    real_list_stages = index.list_stages
    monkeypatch.setattr(index, "list_stages", lambda *a, **k: listings.append(1) or real_list_stages(*a, **k))
    frame = collect_frame(experiment, workers=4)
    assert set(frame["key"]) == {n.key for n in done}
    assert_same_rows(frame, expected_rows(experiment, done, (1, 1), "cpu"))

    missing = missing_cells(experiment)
    assert len(listings) == 1  # `analysis collect` lists the store once for the frame and the missing cells
    assert list(missing.columns[:4]) == ["intermediate", "target", "seed", "status"]
    got = {(r.intermediate, r.target, r.seed): (r.status, r.stage) for r in missing.itertuples()}
    assert got == {
        (failed_eval.intermediate, failed_eval.task, failed_eval.seed): ("failed", "evaluate"),
        (failed_train.intermediate, failed_train.task, failed_train.seed): ("failed", "train-target"),
        (queued.intermediate, queued.task, queued.seed): ("queued", "train-target"),
    }
    # nothing finished: every cell is missing, pending on its first unfinished node
    fresh = open_raw(tmp_path, spec_raw(str(tmp_path / "empty")))
    assert collect_frame(fresh).empty and list(collect_frame(fresh).columns) == list(COLUMNS)
    assert set(missing_cells(fresh)["status"]) == {"pending"}
    assert len(missing_cells(fresh)) == len(evaluations)


def test_cache_skips_finished_nodes_and_grows_incrementally(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    experiment = open_raw(tmp_path, spec_raw(str(tmp_path / "store")))
    store, evaluations = experiment.store, experiment.plan.evaluations()
    for node in evaluations[:-2]:
        finish_cell(store, node)
    reads = Reads(store, monkeypatch)

    first = collect_frame(experiment, workers=4)
    assert store.exists(cache_path(experiment)) and cache_path(experiment).endswith(f"demo/analysis/{CACHE_FILE}")
    assert len(reads.node_reads()) == len(evaluations[:-2]) * 2  # each cell: evaluate + train-target
    cache_written = Path(cache_path(experiment)).stat().st_mtime_ns

    reads.clear()
    second = collect_frame(experiment, workers=4)
    pd.testing.assert_frame_equal(first, second)
    assert reads.node_reads() == set()  # nothing of a cached node is read...
    assert not [p for p in reads.exists if "/nodes/" in p]  # ...and no node is checked one by one
    # (a listing per stage tells the unfinished ones: `core.index`)
    assert Path(cache_path(experiment)).stat().st_mtime_ns == cache_written  # nothing new: not rewritten

    newly = evaluations[-2]
    finish_cell(store, newly)
    reads.clear()
    third = collect_frame(experiment, workers=4)
    assert reads.node_reads() == {f"evaluate/{newly.key}", *(t.ref for t in train_chain(newly))}
    assert len(third) == len(first) + len(expected_rows(experiment, [newly], (1, 1), "cpu"))
    assert_same_rows(third, expected_rows(experiment, evaluations[:-1], (1, 1), "cpu"))

    reads.clear()  # the updated cache serves the new node too; no cache: everything read again
    pd.testing.assert_frame_equal(collect_frame(experiment), third)
    assert reads.node_reads() == set()
    pd.testing.assert_frame_equal(collect_frame(experiment, use_cache=False), third)
    assert len(reads.node_reads()) == len(evaluations[:-1]) * 2


def test_costs_follow_the_spec_not_the_cache(tmp_path: Path) -> None:
    """Resources are not part of keys: changing them must not be hidden by cached rows."""
    storage = str(tmp_path / "store")
    experiment = open_raw(tmp_path, spec_raw(storage))
    for node in experiment.plan.evaluations():
        finish_cell(experiment.store, node)
    cpu = collect_frame(experiment)
    gpu = collect_frame(open_raw(tmp_path, spec_raw(storage, gpus=True)))
    assert set(cpu["cost_unit"]) == {"cpu"} and set(gpu["cost_unit"]) == {"gpu"}
    assert gpu["cost_hours"].sum() > cpu["cost_hours"].sum()
    assert gpu[["key", "value"]].equals(cpu[["key", "value"]])


def test_corrupt_cache_is_rebuilt(tmp_path: Path) -> None:
    experiment = open_raw(tmp_path, spec_raw(str(tmp_path / "store")))
    for node in experiment.plan.evaluations()[:3]:
        finish_cell(experiment.store, node)
    first = collect_frame(experiment)
    Path(cache_path(experiment)).write_bytes(b"not parquet")
    pd.testing.assert_frame_equal(collect_frame(experiment), first)
    pd.testing.assert_frame_equal(collect_frame(experiment), first)  # and the rebuilt cache is valid


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
def test_write_frame_round_trips(tmp_path: Path, fmt: str) -> None:
    experiment = open_raw(tmp_path, spec_raw(str(tmp_path / "store"), gpus=True))
    for node in experiment.plan.evaluations():
        finish_cell(experiment.store, node)
    frame = collect_frame(experiment)
    frame.loc[0, "language"] = "nan"  # a real code (Min Nan) that pandas would read as missing
    out = tmp_path / "out" / f"rows.{fmt}"
    write_frame(frame, out)
    back = read_frame(out)
    pd.testing.assert_frame_equal(back, frame, check_exact=False, rtol=1e-12)
    assert back["control_of"].isna().sum() == frame["control_of"].isna().sum() > 0
    assert all(v is None or isinstance(v, str) for v in back["control_of"])  # None, not NaN
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # written through a temporary, renamed
    other = tmp_path / "rows.data"
    write_frame(frame, other, fmt)
    pd.testing.assert_frame_equal(read_frame(other, fmt), back, check_exact=False, rtol=1e-12)


def test_unknown_formats_name_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="csv, parquet, json"):
        infer_format(tmp_path / "x.csv", "xlsx")
    with pytest.raises(ValueError, match="csv, parquet, json"):
        write_frame(pd.DataFrame(columns=list(COLUMNS)), tmp_path / "x.xlsx")


def test_collect_on_s3(s3_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in s3_env.items():
        monkeypatch.setenv(name, value)
    experiment = open_raw(tmp_path, spec_raw(f"s3://xstilts-test/collect-{uuid.uuid4().hex[:8]}", gpus=True))
    store, evaluations = experiment.store, experiment.plan.evaluations()
    assert not store.is_local
    for node in evaluations[:-1]:
        finish_cell(store, node)
    reads = Reads(store, monkeypatch)
    cold = collect_frame(experiment, workers=8)
    assert_same_rows(cold, expected_rows(experiment, evaluations[:-1], (2, 1), "gpu"))
    assert store.exists(cache_path(experiment))
    reads.clear()
    warm = collect_frame(experiment, workers=8)
    pd.testing.assert_frame_equal(cold, warm)
    assert reads.node_reads() == set()
    finish_cell(store, evaluations[-1])
    reads.clear()
    full = collect_frame(experiment, workers=8)
    assert reads.node_reads() == {evaluations[-1].ref, *(t.ref for t in train_chain(evaluations[-1]))}
    assert_same_rows(full, expected_rows(experiment, evaluations, (2, 1), "gpu"))
    assert missing_cells(experiment).empty
