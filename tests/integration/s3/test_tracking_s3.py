"""Live TensorBoard curves on an object store (issue 19), against moto's S3 server: the
event files are copied into the node folder while the run goes on, a failing upload never
fails training, and a training node's curves end up in its s3:// folder."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.grid import cli_env, run_cli
from tests.support.specs import demo_raw
from tests.support.stages import (  # noqa: F401  (fixtures)
    HPARAMS, data_nodes, make_ctx, model_node, workdir,
)
from xstilts.core.store import Store
from xstilts.jobs import tracking
from xstilts.jobs.stages import train


@pytest.fixture
def s3_prefix(s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    for name, value in s3_env.items():
        monkeypatch.setenv(name, value)
    return f"s3://xstilts-test/tracking-{uuid.uuid4().hex[:8]}"


def events_in_store(url: str, into: Path) -> dict[str, list[tuple[int, float]]]:
    """Download the event files under `url` and read them with TensorBoard's reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    store = Store(url)
    into.mkdir(parents=True, exist_ok=True)
    for path in store.fs.find(store.root):
        (into / Path(path).name).write_bytes(store.fs.cat_file(path))
    reader = EventAccumulator(str(into))
    reader.Reload()
    return {tag: [(e.step, e.value) for e in reader.Scalars(tag)] for tag in reader.Tags()["scalars"]}


def eval_record(step: int, accuracy: float) -> dict[str, Any]:
    return {"event": "eval", "split": "dev", "step": step, "accuracy": accuracy, "best": True}


def test_event_files_stream_to_the_node_folder_while_training(s3_prefix: str, tmp_path: Path) -> None:
    url = f"{s3_prefix}/nodes/train-target/k1/tensorboard"
    policy = tracking.TrackingPolicy(upload_every_s=0.0)  # every evaluation
    run = tracking.RunInfo(name="n", key="k1", tags=(), config={})
    tracker = tracking.open_tracker(policy, run, url, tmp_path / "out", logging.getLogger("test"))
    tracker.record({"event": "train", "step": 5, "loss": 2.0, "lr": 1e-3})
    tracker.record(eval_record(5, 40.0))
    assert events_in_store(url, tmp_path / "a")["dev/accuracy"] == [(5, 40.0)]  # before the run ends
    tracker.record(eval_record(10, 55.0))
    assert events_in_store(url, tmp_path / "b")["dev/accuracy"] == [(5, 40.0), (10, 55.0)]
    tracker.record(eval_record(12, 60.0))
    tracker.close()
    curves = events_in_store(url, tmp_path / "c")
    assert curves["dev/accuracy"] == [(5, 40.0), (10, 55.0), (12, 60.0)] and curves["train/loss"] == [(5, 2.0)]
    assert not (tmp_path / "out" / tracking.TENSORBOARD_DIR).exists()  # written locally elsewhere, not in out_dir


def test_uploads_wait_for_the_interval_but_the_end_always_uploads(s3_prefix: str, tmp_path: Path) -> None:
    url = f"{s3_prefix}/nodes/train-target/k2/tensorboard"
    now = [100.0]
    sink = tracking.TensorBoardSink(tmp_path / "local", url, logging.getLogger("test"), upload_every_s=30.0,
                                    clock=lambda: now[0])
    sink.log(5, {"dev/accuracy": 40.0}, evaluation=True)  # the first evaluation uploads
    now[0] += 10
    sink.log(10, {"dev/accuracy": 50.0}, evaluation=True)  # 10 s later: not yet
    assert events_in_store(url, tmp_path / "a")["dev/accuracy"] == [(5, 40.0)]
    now[0] += 25
    sink.log(15, {"dev/accuracy": 55.0}, evaluation=True)  # 35 s after the first upload
    assert [s for s, _ in events_in_store(url, tmp_path / "b")["dev/accuracy"]] == [5, 10, 15]
    sink.log(16, {"dev/accuracy": 56.0}, evaluation=True)
    sink.close()
    assert [s for s, _ in events_in_store(url, tmp_path / "c")["dev/accuracy"]] == [5, 10, 15, 16]


def test_a_failing_upload_never_fails_training(s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for name, value in s3_env.items():
        monkeypatch.setenv(name, value)
    url = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/nodes/train-target/k3/tensorboard"
    tracker = tracking.open_tracker(tracking.TrackingPolicy(upload_every_s=0.0),
                                    tracking.RunInfo(name="n", key="k3", tags=(), config={}), url, tmp_path,
                                    logging.getLogger("test"))
    tracker.record(eval_record(5, 40.0))
    tracker.close()
    assert "could not copy TensorBoard events" in caplog.text


def test_a_training_node_on_s3_leaves_its_curves_in_its_folder(
    s3_prefix: str, tmp_path: Path, model_node: Any, data_nodes: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(tracking.ENV_TENSORBOARD, raising=False)
    node_url = f"{s3_prefix}/nodes/train-intermediate/abc"
    config = {"task": "syn-rate", "seed": 0, "hparams": HPARAMS}
    ctx = make_ctx(tmp_path / "out", "train-intermediate", config,
                   {"model": model_node[0], "data": data_nodes["syn-rate"][0]},
                   task="syn-rate", seed=0, node_folder_url=node_url)
    train.run(ctx)
    curves = events_in_store(f"{node_url}/{tracking.TENSORBOARD_DIR}", tmp_path / "events")
    assert [step for step, _ in curves["dev/accuracy"]] == [5, 10, 12]
    assert [step for step, _ in curves["train/loss"]] == [5, 10]


def test_tensorboard_print_on_s3_points_at_the_store(s3_env: dict[str, str], tmp_path: Path) -> None:
    prefix = f"s3://xstilts-test/tb-{uuid.uuid4().hex[:8]}"
    raw = demo_raw() | {"storage": prefix}
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(raw))
    done = run_cli("tensorboard", str(spec), "--print", env=cli_env(s3_env), timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"{prefix}/nodes/train-target/" in done.stdout and "/tensorboard" in done.stdout
    assert "S3_ENDPOINT" in done.stderr and "sync" in done.stderr
