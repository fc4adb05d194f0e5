"""Resume is exact: a run that is killed or preempted and resumed ends as if uninterrupted.

Each test trains the tiny XLM-R on `syn-sent` for a dozen steps (well inside the first
epoch of 18 batches, so preemptions land mid-epoch) and compares the exported weights
with `torch.equal` and the metrics with `==` against one uninterrupted run. Kills are
real: a subprocess runs the train stage and is SIGKILLed once it has reached a chosen
point, which it announces by writing a marker file and then waiting.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# tests.support.resume sets OMP_NUM_THREADS before torch is imported
from tests.support.resume import (
    HPARAMS, RUNNER, SEED, TASK, assert_same_run, comparable, count_steps, events, kill_when_marked,
    node_folder, node_record, nodes, per_step_train_logs, run_to_end, runner_spec, stage_ctx, start_runner,
    step_then_stop_at, straight, subprocess_env,
)

import pytest
import torch

from xstilts.jobs.modeling import read_checkpoint
from xstilts.jobs.stages import train
from xstilts.jobs.stages.base import CHECKPOINTS_DIR, CheckpointPolicy, Preempted, StageContext
from xstilts.jobs.trainer import Trainer

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


def test_checkpoints_do_not_change_the_run(nodes: dict[str, Path], straight: Path, tmp_path: Path) -> None:
    """Saving every 5 steps (also asynchronously) leaves the result untouched, keeps the
    newest `keep` checkpoints and writes metrics.jsonl exactly as without checkpoints."""
    for async_save in (False, True):
        out, ckpt = tmp_path / f"out-{async_save}", tmp_path / f"ckpt-{async_save}" / CHECKPOINTS_DIR
        train.run(stage_ctx(nodes, out, str(ckpt), every=5, keep=1, async_save=async_save))
        assert_same_run(out, straight)
        assert sorted(p.name for p in ckpt.iterdir()) == ["step-10"]
        assert (ckpt / "step-10" / ".metadata").is_file()


def test_sigkill_after_a_checkpoint_then_resume(nodes: dict[str, Path], straight: Path, tmp_path: Path,
                                                count_steps: list[int]) -> None:
    """Killed at step 5 with a checkpoint at 3: the resumed run redoes steps 4-5, drops
    the killed run's metrics lines after step 3, and ends bit-identical."""
    out, ckpt, marker = tmp_path / "out", tmp_path / "ckpt" / CHECKPOINTS_DIR, tmp_path / "marker"
    process, _ = start_runner(tmp_path, [runner_spec(nodes, out, str(ckpt), every=3, hang_after=5,
                                                     marker=str(marker))])
    kill_when_marked(process, marker, tmp_path / "runner.log")
    killed_out = out / "rank0"
    assert [e["step"] for e in events(killed_out) if e["event"] == "train"] == [1, 2, 3, 4, 5]
    assert not (killed_out / "model").exists()

    train.run(stage_ctx(nodes, killed_out, str(ckpt), every=3))
    assert count_steps == list(range(4, HPARAMS["max_steps"] + 1))
    assert_same_run(killed_out, straight)


def test_preemption_signal_mid_epoch(nodes: dict[str, Path], straight: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGUSR2 after step 5 (of an 18-batch epoch) sets ctx.stop like the entry's handler:
    a checkpoint of step 5 is written, Preempted is raised, and the next attempt starts at
    step 6 and ends bit-identical to the uninterrupted run."""
    out, ckpt = tmp_path / "out", tmp_path / "ckpt" / CHECKPOINTS_DIR
    ctx = stage_ctx(nodes, out, str(ckpt), every=0)
    previous = signal.signal(signal.SIGUSR2, lambda *_: ctx.stop.set())
    original = Trainer.step

    def signalling_step(self: Trainer) -> float:
        loss = original(self)
        if self.state.step == 5:
            os.kill(os.getpid(), signal.SIGUSR2)
        return loss

    try:
        monkeypatch.setattr(Trainer, "step", signalling_step)
        with pytest.raises(Preempted, match="step 5"):
            train.run(ctx)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    monkeypatch.undo()
    assert sorted(p.name for p in ckpt.iterdir()) == ["step-5"]
    assert (ckpt / "step-5" / "metrics.jsonl").read_text() == (out / "metrics.jsonl").read_text()
    assert [e["step"] for e in events(out) if e["event"] == "train"] == [1, 2, 3, 4, 5]

    seen: list[int] = []
    monkeypatch.setattr(Trainer, "step", lambda self: (original(self), seen.append(self.state.step))[0])
    train.run(stage_ctx(nodes, out, str(ckpt), every=0))
    assert seen[0] == 6 and len(seen) == HPARAMS["max_steps"] - 5  # redoes no step
    assert_same_run(out, straight)


def test_stop_from_another_thread(nodes: dict[str, Path], straight: Path, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """ctx.stop set by another thread while a step is running (as the entry's signal
    handler would): preempted at the step boundary, resumed, identical all the same."""
    out, ckpt = tmp_path / "out", tmp_path / "ckpt" / CHECKPOINTS_DIR
    ctx = stage_ctx(nodes, out, str(ckpt))
    reached, original = threading.Event(), Trainer.step

    def step_that_waits_for_the_watcher(self: Trainer) -> float:
        loss = original(self)
        if self.state.step == 3:
            reached.set()
            assert ctx.stop.wait(timeout=30), "the watcher thread never set ctx.stop"
        return loss

    def watch() -> None:
        reached.wait(timeout=60)
        ctx.stop.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    monkeypatch.setattr(Trainer, "step", step_that_waits_for_the_watcher)
    with pytest.raises(Preempted):
        train.run(ctx)
    monkeypatch.undo()
    watcher.join(timeout=5)
    assert [p.name for p in ckpt.iterdir()] == ["step-3"]
    train.run(stage_ctx(nodes, out, str(ckpt)))
    assert_same_run(out, straight)


def test_kill_while_writing_a_checkpoint(nodes: dict[str, Path], straight: Path, tmp_path: Path,
                                         count_steps: list[int]) -> None:
    """Killed after the shards of step-6 are written and before its `.metadata`: resume
    ignores step-6, continues from step-3, replaces the debris and ends identical."""
    out, ckpt, marker = tmp_path / "out", tmp_path / "ckpt" / CHECKPOINTS_DIR, tmp_path / "marker"
    process, _ = start_runner(tmp_path, [runner_spec(nodes, out, str(ckpt), every=3, hang_in_metadata_of=6,
                                                     marker=str(marker))])
    kill_when_marked(process, marker, tmp_path / "runner.log")
    debris = ckpt / "step-6"
    assert any(p.suffix == ".distcp" for p in debris.iterdir()) and not (debris / ".metadata").exists()
    assert (ckpt / "step-3" / ".metadata").is_file()

    train.run(stage_ctx(nodes, out / "rank0", str(ckpt), every=3))
    assert count_steps[0] == 4
    assert_same_run(out / "rank0", straight)
    # step-6 was rewritten whole on the way, then retired by keep=2 like every other
    assert sorted(p.name for p in ckpt.iterdir()) == ["step-12", "step-9"]


def test_resume_only_from_complete_checkpoints(nodes: dict[str, Path], straight: Path, tmp_path: Path,
                                               count_steps: list[int]) -> None:
    """A newer step folder without `.metadata` (here: a copy of a complete one with the
    marker removed) is never used, and is deleted once a newer checkpoint is complete."""
    out, ckpt = tmp_path / "out", tmp_path / "ckpt" / CHECKPOINTS_DIR
    ctx = stage_ctx(nodes, out, str(ckpt), every=2, keep=5)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Trainer, "step", step_then_stop_at(4, ctx))
        with pytest.raises(Preempted):
            train.run(ctx)
    shutil.copytree(ckpt / "step-4", ckpt / "step-5")
    (ckpt / "step-5" / ".metadata").unlink()
    count_steps.clear()
    train.run(stage_ctx(nodes, out, str(ckpt), every=2, keep=5))
    assert count_steps[0] == 5  # from step-4, not from the incomplete step-5
    assert_same_run(out, straight)
    assert sorted(int(p.name.split("-")[1]) for p in ckpt.iterdir()) == [4, 6, 8, 10, 12]
