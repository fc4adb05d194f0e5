"""Two processes with FSDP2 on gloo: train, checkpoint, preempt, and resume on 1 or 2.

One `torchrun --standalone --nproc_per_node=2` runs the stage twice in one process group
(made by the runner, as jobs.entry makes it): an uninterrupted run, and a run that
checkpoints every 3 steps (asynchronously) and is preempted at step 6 by a stop that
only rank 1 sees.
Its checkpoint is resumed in this process on one process without a process group (DCP
reshards 2 -> 1), and by a second torchrun on two processes; that torchrun also resumes
the 1-process run's step-9 checkpoint on two processes (1 -> 2).

Exactness: the 2-process resume is bit-identical (`torch.equal`) to the uninterrupted
2-process run - every rank restores its own RNG, data position and optimizer shard. The
resumes across world sizes are asserted close (`assert_close_run`: updates within 0.1%
of their norm, the same dev results): the same global batches and the same math, but
gradients may be summed in another order (one backward over 16 examples instead of two
over 8 plus a reduce-scatter), which Adam can magnify in single weights.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from xstilts.jobs.modeling import read_checkpoint
from xstilts.jobs.stages import prepare_data, train
from tests.support.stages import make_ctx
from xstilts.jobs.stages.base import CHECKPOINTS_DIR
from tests.support.resume import (HPARAMS, assert_same_run, comparable, events, nodes, per_step_train_logs, run_to_end,
                               runner_spec, stage_ctx)

__all__ = ["nodes", "per_step_train_logs"]  # fixtures shared with test_resume

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


@pytest.fixture(scope="module")
def tagging_nodes(nodes: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same encoder with prepared syn-pos (tagging) data."""
    out = tmp_path_factory.mktemp("pos") / "data"
    prepare_data.run(make_ctx(out, "prepare", {"task": "syn-pos", "max_seq_length": 128},
                              {"model": nodes["model"]}, kind="data", task="syn-pos"))
    return {"model": nodes["model"], "data": out}


@pytest.fixture(scope="module")
def first_torchrun(nodes: dict[str, Path], tagging_nodes: dict[str, Path],
                   tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One torchrun, four runs in one process group: `straight/` uninterrupted,
    `preempted/` checkpointing every 3 steps (with `dcp.async_save`) and stopped at step 6
    on rank 1 only, `tagging/`, an uninterrupted syn-pos run, and `recomputed/`, the
    straight run with activation checkpointing switched on by the spec's variable."""
    root = tmp_path_factory.mktemp("fsdp")
    outcomes = run_to_end(root, [
        runner_spec(nodes, root / "straight", None),
        runner_spec(tagging_nodes, root / "tagging", None, task="syn-pos"),
        runner_spec(nodes, root / "preempted", str(root / "ckpt" / CHECKPOINTS_DIR), every=3, async_save=True, stop_at=6,
                    stop_ranks=[1]),
        {**runner_spec(nodes, root / "recomputed", None), "env": {"XSTILTS_ACTIVATION_CHECKPOINTING": "1"}},
    ], nproc=2)
    assert "result" in outcomes[0]
    assert "step 6" in outcomes[2]["preempted"]
    return root


def test_two_processes_checkpoint_and_resume_on_one_or_two(nodes: dict[str, Path], first_torchrun: Path,
                                                           tmp_path: Path) -> None:
    straight, preempted, ckpt = first_torchrun / "straight", first_torchrun / "preempted", first_torchrun / "ckpt" / CHECKPOINTS_DIR
    assert sorted(p.name for p in ckpt.iterdir()) == ["step-3", "step-6"]
    # both ranks wrote shards; rank 0 alone wrote metrics.jsonl and the export
    assert sorted(p.name for p in (ckpt / "step-6").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert not (straight / "rank1" / "metrics.jsonl").exists() and not (straight / "rank1" / "model").exists()
    reference = straight / "rank0"
    assert [e["step"] for e in events(preempted / "rank0") if e["event"] == "train"] == list(range(1, 7))

    two, one, grow = (tmp_path / name / CHECKPOINTS_DIR for name in ("ckpt-two", "ckpt-one", "ckpt-grow"))
    shutil.copytree(ckpt, two)
    shutil.copytree(ckpt, one)
    for out in (tmp_path / "two" / "rank0", tmp_path / "one", tmp_path / "grow" / "rank0"):
        shutil.copytree(preempted / "rank0", out)  # the preempted run's out_dir, as a requeue sees it

    # 2 -> 1: this process, no process group; it checkpoints steps 9 and 12 on the way
    result = train.run(stage_ctx(nodes, tmp_path / "one", str(one), every=3))
    assert result["steps"] == HPARAMS["max_steps"]
    assert_close_run(tmp_path / "one", reference, nodes["model"])

    # 2 -> 2 (exact) and 1 -> 2 (from the 1-process run's step 9), in one torchrun
    shutil.copytree(one, grow)
    shutil.rmtree(grow / "step-12")
    run_to_end(tmp_path, [runner_spec(nodes, tmp_path / "two", str(two), every=3),
                          runner_spec(nodes, tmp_path / "grow", str(grow), every=3)], nproc=2)
    assert_same_run(tmp_path / "two" / "rank0", reference)
    assert_close_run(tmp_path / "grow" / "rank0", reference, nodes["model"])


def assert_close_run(out: Path, reference: Path, start: Path) -> None:
    """The same training up to rounding: the same dev results, every step logged exactly
    once, and updates (final weights minus the pretrained `start`) that differ by under
    0.1% of the update's norm.

    Not elementwise `allclose` on the weights: Adam's first steps move a weight by about
    lr whatever the size of its gradient, so a weight whose gradient is as small as the
    rounding noise of summing in another order (another world size, another CPU's
    kernels) can move by lr in one run and not in the other. On the CI machine one word
    embedding failed rtol 1e-4 that way. Here whole runs differ by about 1e-6 of the
    update; the tagging run with a mean of per-rank means in place of the global
    normalisation differed by 5.5e-2.
    """
    got, expected = read_checkpoint(out / "model"), read_checkpoint(reference / "model")
    assert got.keys() == expected.keys()
    assert update_difference(got, expected, start) < 1e-3
    train_steps = [e["step"] for e in events(out) if e["event"] == "train"]
    assert train_steps == list(range(1, HPARAMS["max_steps"] + 1))
    evals = [e for e in comparable(events(out)) if e["event"] == "eval"]
    assert evals == [e for e in comparable(events(reference)) if e["event"] == "eval"]


def update_difference(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], start: Path) -> float:
    """Norm of the difference between two runs' weights over the norm of `expected`'s
    update from the start encoder; a task head the encoder lacks counts from zero."""
    initial = {f"roberta.{name}": tensor for name, tensor in read_checkpoint(start / "model").items()}
    difference = update = 0.0
    for name, final in expected.items():
        moved = final.double() - initial.get(name, torch.zeros_like(final)).double()
        update += float(moved.square().sum())
        difference += float((got[name].double() - final.double()).square().sum())
    return (difference / update) ** 0.5


def test_world_size_does_not_change_the_run(nodes: dict[str, Path], first_torchrun: Path, tmp_path: Path) -> None:
    """Each rank trains on its slice of the same global batch: one process and two end
    with close weights (`assert_close_run`) and the same dev metrics (dropout is off in
    this model)."""
    two = first_torchrun / "straight" / "rank0"
    train.run(stage_ctx(nodes, tmp_path / "one"))
    assert_close_run(tmp_path / "one", two, nodes["model"])
    losses = [e["loss"] for e in events(tmp_path / "one") if e["event"] == "train"]
    assert losses == pytest.approx([e["loss"] for e in events(two) if e["event"] == "train"], rel=1e-5)
    assert json.loads((two / "model" / "config.json").read_text())["architectures"] == [
        "XLMRobertaForSequenceClassification"]


def test_activation_checkpointing_under_fsdp2_does_not_change_the_run(first_torchrun: Path) -> None:
    """Recomputing each layer inside its FSDP2 unit (re-gathering its parameters in the
    backward pass) gives the same weights and metrics, bit for bit, as keeping the
    activations: the switch trades compute for memory and nothing else."""
    outcomes = json.loads((first_torchrun / "outcome.json").read_text())
    assert "activation checkpointing" in outcomes[3]["result"]["speedups"]  # the switch reached the job
    assert "activation checkpointing" not in outcomes[0]["result"]["speedups"]
    assert_same_run(first_torchrun / "recomputed" / "rank0", first_torchrun / "straight" / "rank0")


def test_tagging_loss_is_normalised_over_the_global_batch(tagging_nodes: dict[str, Path], first_torchrun: Path,
                                                          tmp_path: Path) -> None:
    """Tagging sentences carry different numbers of labelled words: each rank divides its
    summed loss by the global batch's count, so 2 processes match 1 (a mean of per-rank
    means would not)."""
    train.run(stage_ctx(tagging_nodes, tmp_path / "one", task="syn-pos"))
    two = first_torchrun / "tagging" / "rank0"
    assert_close_run(tmp_path / "one", two, tagging_nodes["model"])
    losses = [e["loss"] for e in events(tmp_path / "one") if e["event"] == "train"]
    assert losses == pytest.approx([e["loss"] for e in events(two) if e["event"] == "train"], rel=1e-5)
