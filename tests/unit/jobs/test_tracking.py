"""Live tracking of a training node (issue 19): TensorBoard event files in the node's
folder that TensorBoard's own reader reads back as metrics.jsonl's numbers, a W&B run in
offline mode with the node's config, tags and curves, and no tracking when turned off."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from tests.support.stages import (  # noqa: F401  (fixtures)
    HPARAMS, data_nodes, make_ctx, model_node, workdir,
)

import pytest

from tests.support.wandb_records import config_of, history_of, read_records, run_of
from xstilts.jobs import tracking
from xstilts.jobs.stages import train


def _train_node(out: Path, model: Path, data: Path, node_folder: Path | None) -> dict[str, Any]:
    config = {"task": "syn-rate", "seed": 3, "hparams": HPARAMS}
    ctx = make_ctx(out, "train-intermediate", config, {"model": model, "data": data}, task="syn-rate", seed=3,
                   node_folder_url=f"file://{node_folder}" if node_folder else None)
    return train.run(ctx)


def read_events(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} of the event files in `folder`, by TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reader = EventAccumulator(str(folder))
    reader.Reload()
    return {tag: [(e.step, e.value) for e in reader.Scalars(tag)] for tag in reader.Tags()["scalars"]}


def expected_curves(metrics: Path) -> dict[str, list[tuple[int, float]]]:
    """The curves metrics.jsonl says there are (`tracking.scalars_of`, the one rule)."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for line in metrics.read_text().splitlines():
        parsed = tracking.scalars_of(json.loads(line))
        assert parsed is not None
        step, scalars = parsed
        for tag, value in scalars.items():
            curves.setdefault(tag, []).append((step, value))
    return curves


def test_training_node_writes_event_files_with_metrics_jsonl_values(
    tmp_path: Path, model_node: Any, data_nodes: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(tracking.ENV_TENSORBOARD, raising=False)  # the default: on
    node_folder = tmp_path / "node"
    _train_node(tmp_path / "out", model_node[0], data_nodes["syn-rate"][0], node_folder)

    curves = read_events(node_folder / tracking.TENSORBOARD_DIR)
    expected = expected_curves(tmp_path / "out" / "metrics.jsonl")
    assert {"train/loss", "train/lr", "dev/accuracy"} <= set(curves)
    assert set(curves) == set(expected)
    for tag, points in expected.items():
        assert [step for step, _ in curves[tag]] == [step for step, _ in points], tag
        assert [value for _, value in curves[tag]] == pytest.approx([value for _, value in points], rel=1e-6), tag
    assert [step for step, _ in curves["dev/accuracy"]] == [5, 10, 12]
    assert not (tmp_path / "out" / tracking.TENSORBOARD_DIR).exists()  # straight into the node folder


def test_a_stage_run_by_hand_keeps_its_events_in_out_dir(tmp_path: Path, model_node: Any, data_nodes: Any) -> None:
    _train_node(tmp_path / "out", model_node[0], data_nodes["syn-rate"][0], None)
    assert read_events(tmp_path / "out" / tracking.TENSORBOARD_DIR)["dev/accuracy"]


def test_tensorboard_off_writes_no_events(tmp_path: Path, model_node: Any, data_nodes: Any,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tracking.ENV_TENSORBOARD, "0")
    node_folder = tmp_path / "node"
    _train_node(tmp_path / "out", model_node[0], data_nodes["syn-rate"][0], node_folder)
    assert not (node_folder / tracking.TENSORBOARD_DIR).exists()
    assert not (tmp_path / "out" / tracking.TENSORBOARD_DIR).exists()


def test_wandb_offline_run_has_config_tags_and_final_metrics(
    tmp_path: Path, model_node: Any, data_nodes: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(tracking.ENV_TENSORBOARD, "0")
    monkeypatch.setenv(tracking.ENV_WANDB_PROJECT, "xstilts-test")
    monkeypatch.setenv(tracking.ENV_WANDB_MODE, "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "out"
    result = _train_node(out, model_node[0], data_nodes["syn-rate"][0], tmp_path / "node")

    runs = sorted((out / "wandb").glob("offline-run-*"))  # kept in the node folder for `wandb sync`
    assert len(runs) == 1, runs
    records = read_records(next(runs[0].glob("*.wandb")))
    run = run_of(records)
    assert (run.project, run.run_id, run.display_name) == ("xstilts-test", out.name, "train-intermediate/syn-rate/seed3")
    assert set(run.tags) == {"train-intermediate", "syn-rate", "seed3", f"key:{out.name}"}
    config = config_of(run)
    assert config["task"] == "syn-rate" and config["seed"] == 3
    assert config["hparams"]["learning_rate"] == HPARAMS["learning_rate"]

    rows = {row["_step"]: row for row in history_of(records)}
    assert sorted(rows) == [5, 10, result["steps"]]
    for tag, points in expected_curves(out / "metrics.jsonl").items():
        assert [rows[step][tag] for step, _ in points] == pytest.approx([value for _, value in points]), tag


def test_a_failing_sink_never_fails_training(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def log(self, step: int, scalars: dict[str, float], evaluation: bool) -> None:
            raise OSError("disk full")

        def close(self) -> None:
            raise OSError("disk full")

    with tracking.Tracker([Broken()], logging.getLogger("test")) as tracker:
        tracker.record({"event": "eval", "split": "dev", "step": 1, "accuracy": 50.0, "best": True})
    assert "disk full" in caplog.text


def test_scalars_of_records() -> None:
    assert tracking.scalars_of({"event": "train", "step": 5, "epoch": 0, "loss": 1.5, "lr": 1e-3}) == (
        5, {"train/epoch": 0.0, "train/loss": 1.5, "train/lr": 1e-3})
    assert tracking.scalars_of({"event": "eval", "split": "dev", "step": 5, "f1": 70.0, "best": True}) == (
        5, {"dev/f1": 70.0})
    assert tracking.scalars_of({"event": "other", "step": 5, "x": 1.0}) is None


def test_tracking_policy_from_env() -> None:
    assert tracking.TrackingPolicy.from_env({}) == tracking.TrackingPolicy()
    policy = tracking.TrackingPolicy.from_env({
        "XSTILTS_TENSORBOARD": "0", "XSTILTS_TENSORBOARD_UPLOAD_S": "5", "XSTILTS_WANDB_PROJECT": "p",
        "XSTILTS_WANDB_ENTITY": "", "XSTILTS_WANDB_MODE": "offline"})
    assert policy == tracking.TrackingPolicy(False, 5.0, tracking.WandbPolicy("p", None, "offline"))
    assert tracking.TrackingPolicy.from_env({"XSTILTS_WANDB_PROJECT": ""}).wandb is None


def test_a_resumed_run_replaces_the_points_after_its_checkpoint(tmp_path: Path) -> None:
    """The first attempt logged steps 5..15 and was killed; its checkpoint was at step 10.
    The second attempt starts at 10 with purge_step=10: TensorBoard keeps 5 from the first
    attempt and 10, 15 from the second, no doubled tail."""
    log = logging.getLogger("test")
    first = tracking.TensorBoardSink(tmp_path, None, log)
    for step in (5, 10, 15):
        first.log(step, {"dev/accuracy": 1.0}, evaluation=True)
    first.close()
    second = tracking.TensorBoardSink(tmp_path, None, log, purge_step=10)
    for step in (10, 15):
        second.log(step, {"dev/accuracy": 2.0}, evaluation=True)
    second.close()
    assert read_events(tmp_path)["dev/accuracy"] == [(5, 1.0), (10, 2.0), (15, 2.0)]
