"""Training runs to compare: straight, checkpointed, killed and resumed, in-process or under torchrun."""

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
from tests.support.paths import REPO
from tests.support.stages import TINY_MODEL, make_ctx


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
"hang_after": n, "hang_in_metadata_of": n, "marker": path, "env": {name: value}}. With several processes
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
    saved_env = dict(os.environ)
    os.environ.update(run.get("env", {}))  # what the launcher exports from the spec, for this run only
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
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
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
