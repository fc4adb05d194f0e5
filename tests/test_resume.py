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

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

from xstilts.jobs.modeling import read_checkpoint
from xstilts.jobs.stages import prepare_data, prepare_model, train
from xstilts.core.nodes import parse_node_record
from xstilts.jobs.stages.base import CHECKPOINTS_DIR, CheckpointPolicy, Preempted, StageContext
from xstilts.jobs.trainer import Trainer, TrainConfig
from tests.test_jobs_stages import TINY_MODEL, make_ctx

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")

REPO = Path(__file__).resolve().parents[1]
TASK = "syn-sent"
SEED = 3
HPARAMS: dict[str, Any] = {
    "learning_rate": 2e-3,
    "batch_size": 16,
    "grad_accum_steps": 1,
    "epochs": 1.0,
    "max_steps": 12,
    "warmup_ratio": 0.1,
    "max_seq_length": 128,
    "eval_interval": 4,
    "patience": None,
    "weight_decay": 0.01,
    "max_grad_norm": 1.0,
}

RUNNER = r'''
"""Runs the train stage from a JSON description; test hooks live here, not in product code.

argv[1]: JSON list of runs, each {"ctx": {...}, "stop_at": n, "stop_ranks": [...],
"hang_after": n, "hang_in_metadata_of": n, "marker": path}. With several processes
(torchrun), a group made here is shared by all runs, like jobs.entry does.
"""
import json, os, sys, threading, time
from pathlib import Path

from xstilts.core.nodes import parse_node_record
from xstilts.jobs.distributed import init_distributed, destroy
from xstilts.jobs.stages import train
from xstilts.jobs.stages.base import CheckpointPolicy, Preempted, StageContext
from xstilts.jobs.trainer import Trainer, TrainConfig
import logging

TrainConfig.log_interval = property(lambda self: 1)  # a train line every step, as in-process tests log

runs = json.loads(Path(sys.argv[1]).read_text())
info = init_distributed()
hooks = {}


def announce_and_wait():
    if info.rank == 0:
        Path(hooks["marker"]).write_text("ready")
    time.sleep(3600)


original_step = Trainer.step


def step(self):
    if self.state.step == hooks.get("hang_after"):
        announce_and_wait()
    loss = original_step(self)
    if self.state.step == hooks.get("stop_at") and info.rank in hooks.get("stop_ranks", [info.rank]):
        hooks["stop"].set()
    return loss


Trainer.step = step

from torch.distributed.checkpoint.filesystem import FileSystemWriter

original_finish = FileSystemWriter.finish


def finish(self, metadata, results):
    """Dies (when killed) after every shard is written and before `.metadata`."""
    if str(self.path).endswith(f"step-{hooks.get('hang_in_metadata_of')}"):
        announce_and_wait()
    return original_finish(self, metadata, results)


FileSystemWriter.finish = finish

outcomes = []
for run in runs:
    hooks.clear()
    hooks.update({k: v for k, v in run.items() if k != "ctx"})
    hooks["stop"] = threading.Event()
    spec = run["ctx"]
    out = Path(spec["out_dir"]) / f"rank{info.rank}"
    out.mkdir(parents=True, exist_ok=True)
    ctx = StageContext(node=parse_node_record(spec["node"]), out_dir=out,
                       inputs={k: Path(v) for k, v in spec["inputs"].items()},
                       log=logging.getLogger("runner"), node_folder_url=spec.get("node_folder_url"),
                       stop=hooks["stop"], checkpoint=CheckpointPolicy(**spec.get("policy", {})), rank=info.rank)
    try:
        outcomes.append({"result": train.run(ctx)})
    except Preempted as exc:
        outcomes.append({"preempted": str(exc)})
if info.rank == 0:
    Path(sys.argv[2]).write_text(json.dumps(outcomes))
destroy()
'''


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny pretrained encoder and the prepared syn-sent data. Dropout is off so that
    runs on different world sizes can be compared (masks depend on the batch split)."""
    root = tmp_path_factory.mktemp("resume-nodes")
    model_cfg = {**TINY_MODEL, "tiny": {**TINY_MODEL["tiny"], "hidden_dropout_prob": 0.0,
                                        "attention_probs_dropout_prob": 0.0}}
    prepare_model.run(make_ctx(root / "model", "prepare", {"model": model_cfg, "seed": 0}, kind="model"))
    prepare_data.run(make_ctx(root / "data", "prepare", {"task": TASK, "max_seq_length": 128},
                              {"model": root / "model"}, kind="data", task=TASK))
    return {"model": root / "model", "data": root / "data"}


@pytest.fixture(scope="module", autouse=True)
def per_step_train_logs() -> Iterator[None]:
    """A train line in metrics.jsonl after every step (not once per evaluation), so that
    a resumed run is compared with the reference step by step. Module-scoped: the
    reference runs are module fixtures, and tests undo their own monkeypatches."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TrainConfig, "log_interval", property(lambda self: 1))
        yield


def node_record(hparams: dict[str, Any] | None = None, task: str = TASK) -> dict[str, Any]:
    """A train-intermediate node.json (as JSON: the runner subprocess parses it too)."""
    config = {"task": task, "seed": SEED, "hparams": hparams or HPARAMS}
    return {"stage": "train-intermediate", "kind": None, "task": task, "intermediate": task, "seed": SEED,
            "key": "resume", "config": config, "inputs": {}}


def node_folder(checkpoints: str | None) -> str | None:
    """The node folder whose `checkpoints/` is `checkpoints` (where the stage puts them)."""
    if checkpoints is None:
        return None
    folder, name = checkpoints.rstrip("/").rsplit("/", 1)  # a URL: no Path, which would fold s3:// to s3:/
    assert name == CHECKPOINTS_DIR, checkpoints
    return folder


def step_then_stop_at(step: int, ctx: StageContext) -> Callable[[Trainer], float]:
    """A Trainer.step that sets `ctx.stop` once `step` is done, as a preemption
    signal arriving during that step would."""
    original = Trainer.step

    def patched(self: Trainer) -> float:
        loss = original(self)
        if self.state.step == step:
            ctx.stop.set()
        return loss

    return patched


def stage_ctx(nodes: dict[str, Path], out: Path, checkpoint_url: str | None = None, every: int = 0,
              hparams: dict[str, Any] | None = None, task: str = TASK, **policy: Any) -> StageContext:
    out.mkdir(parents=True, exist_ok=True)
    return StageContext(node=parse_node_record(node_record(hparams, task)), out_dir=out, inputs=dict(nodes),
                        log=logging.getLogger("test"), node_folder_url=node_folder(checkpoint_url),
                        checkpoint=CheckpointPolicy(every_steps=every, **policy))


def runner_spec(nodes: dict[str, Path], out: Path, checkpoint_url: str | None, every: int = 0,
                async_save: bool = False, task: str = TASK, **hooks: Any) -> dict[str, Any]:
    ctx = {"node": node_record(task=task), "out_dir": str(out), "inputs": {k: str(v) for k, v in nodes.items()},
           "node_folder_url": node_folder(checkpoint_url), "policy": {"every_steps": every, "keep": 10, "async_save": async_save}}
    return {"ctx": ctx, **hooks}


def subprocess_env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": str(REPO)}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def start_runner(tmp: Path, runs: list[dict[str, Any]], nproc: int = 1) -> tuple[subprocess.Popen[bytes], Path]:
    """The runner script on `runs`, as one process or under torchrun with `nproc`."""
    tmp.mkdir(parents=True, exist_ok=True)
    script, spec, outcome = tmp / "runner.py", tmp / "runs.json", tmp / "outcome.json"
    script.write_text(RUNNER)
    spec.write_text(json.dumps(runs))
    if nproc == 1:
        command = [sys.executable, str(script), str(spec), str(outcome)]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                   str(script), str(spec), str(outcome)]
    log = (tmp / "runner.log").open("wb")
    return subprocess.Popen(command, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True), outcome


def run_to_end(tmp: Path, runs: list[dict[str, Any]], nproc: int = 1) -> list[dict[str, Any]]:
    process, outcome = start_runner(tmp, runs, nproc)
    code = process.wait(timeout=120)
    assert code == 0, (tmp / "runner.log").read_text()[-3000:]
    return json.loads(outcome.read_text())


def kill_when_marked(process: subprocess.Popen[bytes], marker: Path, log: Path) -> None:
    """SIGKILL the runner's whole process group once it wrote `marker` (it then waits)."""
    deadline = time.monotonic() + 90
    while not marker.exists():
        assert process.poll() is None, f"runner ended before the kill point:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "runner never reached the kill point"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL


def events(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def comparable(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Metrics without the timing fields, which legitimately differ between runs."""
    return [{k: v for k, v in r.items() if k not in ("examples_per_s", "tokens_per_s")} for r in records]


def assert_same_run(out: Path, reference: Path) -> None:
    """Same exported weights (bit for bit) and the same metrics, every step exactly once."""
    weights, expected = read_checkpoint(out / "model"), read_checkpoint(reference / "model")
    assert weights.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(weights[name], tensor), name
    got = events(out)
    train_steps = [e["step"] for e in got if e["event"] == "train"]
    assert train_steps == list(range(1, HPARAMS["max_steps"] + 1))
    assert comparable(got) == comparable(events(reference))


@pytest.fixture(scope="module")
def straight(nodes: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted reference run (no checkpoints at all)."""
    out = tmp_path_factory.mktemp("straight")
    train.run(stage_ctx(nodes, out))
    return out


@pytest.fixture
def count_steps(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Records the step counter after every optimizer step of in-process runs."""
    seen: list[int] = []
    original = Trainer.step

    def step(self: Trainer) -> float:
        loss = original(self)
        seen.append(self.state.step)
        return loss

    monkeypatch.setattr(Trainer, "step", step)
    yield seen


# ---------------------------------------------------------------------------------------


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
