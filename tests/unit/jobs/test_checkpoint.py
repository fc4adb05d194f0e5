"""CheckpointManager: completeness, retention, failures, async saves, and S3.

Unit tests save small state dicts (a Linear layer, plain values, an extra file) on a
plain path, a `file://` URI and `memory://`; the S3 tests run against a moto server on
127.0.0.1, first with the manager alone and then with a whole training run that is
preempted and resumed from `s3://`.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.distributed.checkpoint.filesystem import FileSystemWriter

from xstilts.jobs.checkpoint import CheckpointError, CheckpointManager
from xstilts.jobs.stages import train
from xstilts.jobs.stages.base import Preempted
from xstilts.jobs.trainer import Trainer
from tests.support.resume import (assert_same_run, events, nodes, per_step_train_logs, stage_ctx, step_then_stop_at,
                               straight)

__all__ = ["nodes", "per_step_train_logs", "straight"]  # module-scoped fixtures shared with test_resume

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


def state_for(value: float) -> dict[str, Any]:
    torch.manual_seed(int(value))
    layer = torch.nn.Linear(3, 2)
    return {"model": layer.state_dict(), "note": f"value {value}", "nested": {"x": torch.full((4,), value)}}


def placeholder() -> dict[str, Any]:
    return {"model": torch.nn.Linear(3, 2).state_dict(), "note": "", "nested": {"x": torch.zeros(4)}}


@pytest.fixture(params=["path", "file", "memory"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "path":
        return str(tmp_path / "ckpt")
    if request.param == "file":
        return f"file://{tmp_path}/ckpt"
    return f"memory://ckpt-{uuid.uuid4().hex[:8]}"


def test_round_trip_with_extra_files(url: str) -> None:
    manager = CheckpointManager(url, keep=2)
    assert manager.latest() is None
    saved = state_for(7)
    manager.save(7, saved, {"metrics.jsonl": '{"step": 7}\n'})
    assert manager.latest() == 7
    loaded = placeholder()
    manager.load(7, loaded)
    assert loaded["note"] == "value 7" and torch.equal(loaded["nested"]["x"], saved["nested"]["x"])
    assert all(torch.equal(loaded["model"][k], saved["model"][k]) for k in saved["model"])
    assert manager.read_file(7, "metrics.jsonl") == '{"step": 7}\n'
    assert manager.read_file(7, "absent.txt") is None
    assert {"note", "nested.x", "model.weight", "model.bias"} <= manager.saved_keys(7)


def test_retention_and_incomplete_folders(url: str) -> None:
    manager = CheckpointManager(url, keep=2)
    for step in (1, 2, 3):
        manager.save(step, state_for(step))
    assert manager.complete_steps() == [2, 3]
    # debris of killed saves: shards without .metadata, older and newer than the latest
    for step in (1, 4):
        manager.fs.makedirs(f"{manager.root}/step-{step}", exist_ok=True)
        with manager.fs.open(f"{manager.root}/step-{step}/__0_0.distcp", "wb") as handle:
            handle.write(b"partial")
    assert manager.latest() == 3
    manager.save(5, state_for(5))
    names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in manager.fs.ls(manager.root, detail=False))
    assert names == ["step-3", "step-5"]  # debris older than the newest complete one is gone
    loaded = placeholder()
    CheckpointManager(url).load(5, loaded)
    assert loaded["note"] == "value 5"


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DCP's CheckpointException (a BaseException) becomes CheckpointError (an Exception),
    and with keep=1 the only complete checkpoint survives its failed successor."""
    manager = CheckpointManager(str(tmp_path / "ckpt"), keep=1)
    manager.save(1, state_for(1))

    def broken_finish(self: FileSystemWriter, metadata: Any, results: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(FileSystemWriter, "finish", broken_finish)
    with pytest.raises(CheckpointError, match="step-2"):
        manager.save(2, state_for(2))
    monkeypatch.undo()
    assert manager.latest() == 1
    assert (tmp_path / "ckpt" / "step-2").is_dir() and not (tmp_path / "ckpt" / "step-2" / ".metadata").exists()
    manager.save(3, state_for(3))
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step-3"]


def test_async_save_is_finished_and_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manager = CheckpointManager(str(tmp_path / "ckpt"), keep=1, async_save=True)
    state = state_for(1)
    manager.save(1, state)
    state["nested"]["x"].fill_(-1.0)  # staged before save() returned: the checkpoint keeps 1.0
    manager.close()
    assert manager.latest() == 1
    loaded = placeholder()
    manager.load(1, loaded)
    assert torch.equal(loaded["nested"]["x"], torch.full((4,), 1.0))

    def broken_finish(self: FileSystemWriter, metadata: Any, results: Any) -> None:
        raise OSError("bucket gone")

    monkeypatch.setattr(FileSystemWriter, "finish", broken_finish)
    manager.save(2, state_for(2))  # returns: the failure surfaces when the save is awaited
    with pytest.raises(CheckpointError, match="step-2"):
        manager.close()
    assert manager.latest() == 1


def test_keep_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep"):
        CheckpointManager(str(tmp_path), keep=0)


# ------------------------------------------------------------------ S3 (moto server)


@pytest.fixture
def s3_url(s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    for name, value in s3_env.items():
        monkeypatch.setenv(name, value)
    return f"s3://xstilts-ckpt/nodes/train/{uuid.uuid4().hex[:8]}/checkpoints"


def test_s3_round_trip_retention_and_async(s3_url: str) -> None:
    manager = CheckpointManager(s3_url, keep=2, async_save=True)
    for step in (1, 2, 3):
        manager.save(step, state_for(step), {"metrics.jsonl": f"{step}\n"})
    manager.close()
    assert manager.complete_steps() == [2, 3]
    manager.fs.makedirs(f"{manager.root}/step-9", exist_ok=True)
    with manager.fs.open(f"{manager.root}/step-9/__0_0.distcp", "wb") as handle:
        handle.write(b"partial")
    fresh = CheckpointManager(s3_url)  # e.g. the requeued job
    assert fresh.latest() == 3
    loaded = placeholder()
    fresh.load(3, loaded)
    assert loaded["note"] == "value 3" and fresh.read_file(3, "metrics.jsonl") == "3\n"
    assert all(torch.equal(loaded["model"][k], state_for(3)["model"][k]) for k in loaded["model"])


def test_training_preempted_and_resumed_through_s3(nodes: dict[str, Path], straight: Path, s3_url: str,
                                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = stage_ctx(nodes, tmp_path / "out", s3_url, every=3)
    original = Trainer.step
    monkeypatch.setattr(Trainer, "step", step_then_stop_at(7, ctx))
    with pytest.raises(Preempted, match="step 7"):
        train.run(ctx)
    monkeypatch.setattr(Trainer, "step", original)
    assert CheckpointManager(s3_url).complete_steps() == [6, 7]
    # a requeue on another machine: an empty out_dir, everything comes from s3://
    resumed = tmp_path / "elsewhere"
    train.run(stage_ctx(nodes, resumed, s3_url, every=3))
    assert [e["step"] for e in events(resumed) if e["event"] == "train"][:7] == list(range(1, 8))
    assert_same_run(resumed, straight)
    assert os.environ["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
