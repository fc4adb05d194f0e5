"""ASHA against a full grid over the same learning-rate space, side by side in one run.

Prepares a tiny encoder and one synthetic task (`--task`: `syn-pos` tagging, whose
learning rates separate from the first evaluation, or `syn-sent`, which sits at chance
for its first evaluations at every rate) once, then runs the `tune`
stage (`xstilts.jobs.stages.tune`, the code a tune node runs) over the same grid of
learning rates with the same per-trial budget: with ASHA, and with FIFO (every trial to
its full budget), `--repeats` rounds interleaved (ASHA first in odd rounds, the full grid
in even ones) after a warm-up round of each. Prints the median [min-max] of the optimizer
steps spent by all trials and of the wall time, each round's chosen learning rate, and
the load average at the start and the end.

Usage: .venv/bin/python bench/tune.py [--task syn-pos|syn-sent] [--repeats 3] [--budget 100] [--grace 1]
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import Samples, end_line, interleaved, machine_line, offline_env, ratio_verdict, table  # noqa: E402

# before torch is imported (by the stages below): it sizes its thread pool at import
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.update(offline_env(os.environ))

from xstilts.core.nodes import parse_node_record  # noqa: E402
from xstilts.jobs.stages import prepare_data, prepare_model, tune  # noqa: E402
from xstilts.jobs.stages.base import StageContext  # noqa: E402

LEARNING_RATES = [1e-5, 3e-3, 1e-7, 3e-4, 3e-7, 1e-3, 1e-6, 3e-5, 3e-6, 1e-4]
"""Ten rates over 4.5 decades, in a fixed shuffled order: ASHA can only stop a trial that
reaches a rung after better ones, so an ascending grid (the good rates last) would hide
what it saves in a real, unordered search."""
TINY = {"name": None, "tiny": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                               "intermediate_size": 64, "max_position_embeddings": 130},
        "tokenizer_vocab_size": 400, "corpus_languages": ["en", "qaa"], "corpus_sentences_per_language": 300,
        "pretrain_steps": 30, "pretrain_lr": 1e-3, "pretrain_batch_size": 16}
HPARAMS = {"learning_rate": 1e-3, "batch_size": 16, "grad_accum_steps": 1, "epochs": 1.0, "max_steps": None,
           "warmup_ratio": 0.1, "max_seq_length": 64, "eval_interval": 10, "patience": None,
           "weight_decay": 0.01, "max_grad_norm": 1.0}


def ctx(store: Path, stage: str, key: str, config: dict[str, Any], inputs: dict[str, str], **node: Any) -> StageContext:
    """A stage's context for node `stage/key` of a plain folder store (`store/nodes/...`):
    tune trials fetch their inputs from the store by reference, as on a cluster."""
    out = store / "nodes" / stage / key
    out.mkdir(parents=True, exist_ok=True)
    record = {"stage": stage, "kind": None, "task": None, "intermediate": None, "seed": None, "key": key,
              "config": config, "inputs": inputs, **node}
    local = {name: store / "nodes" / ref for name, ref in inputs.items()}
    return StageContext(node=parse_node_record(record), out_dir=out, inputs=local, log=logging.getLogger("bench"),
                        node_folder_url=f"file://{out}", store_url=f"file://{store}", job_id=f"bench-{key}")


def done(context: StageContext, result: dict[str, Any]) -> None:
    """Mark a preparation done as a job does: its result.json, then DONE (trials check both)."""
    (context.out_dir / "result.json").write_text(json.dumps(result))
    (context.out_dir / "DONE").write_text("bench\n")


@dataclass
class Search:
    """One tune run: what it spent and what it chose."""

    steps: int
    learning_rate: float
    best_metric: float
    stopped_early: int
    seconds: float


def search(store: Path, task: str, scheduler: str, budget: int, grace: int, run: int) -> Search:
    """One tune node over LEARNING_RATES with `scheduler` (asha or fifo), in its own node folder."""
    space = {"space": {"learning_rate": {"grid": LEARNING_RATES}}, "trials": 1, "scheduler": scheduler,
             "grace_period": grace, "reduction_factor": 2, "budget_steps": budget, "max_concurrent": None}
    started = time.perf_counter()
    result = tune.run(ctx(store, "tune", f"{scheduler}-{run}",
                          {"task": task, "role": "target", "seed": 0, "hparams": HPARAMS, "search": space},
                          {"model": "prepare/model", "data": "prepare/data"}, task=task))
    return Search(steps=sum(t["evaluations"] for t in result["trials"]) * HPARAMS["eval_interval"],
                  learning_rate=result["best"]["learning_rate"], best_metric=result["best_metric"],
                  stopped_early=sum(t["stopped_early"] for t in result["trials"]),
                  seconds=time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=100, help="optimizer steps per trial at most")
    parser.add_argument("--grace", type=int, default=1, help="ASHA grace period, in evaluations")
    parser.add_argument("--task", choices=["syn-pos", "syn-sent"], default="syn-pos", help="the task searched")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds of ASHA and the full grid")
    args = parser.parse_args()
    print(machine_line(f"{args.task}, repeats {args.repeats}"), flush=True)
    store = Path(tempfile.mkdtemp(prefix="xstilts-bench-tune-"))
    model = ctx(store, "prepare", "model", {"model": TINY, "seed": 0}, {}, kind="model")
    done(model, prepare_model.run(model))
    prepared = ctx(store, "prepare", "data", {"task": args.task, "max_seq_length": 64}, {"model": "prepare/model"},
                   kind="data", task=args.task)
    done(prepared, prepare_data.run(prepared))
    runs = itertools.count()  # each search in a node folder of its own

    def side(scheduler: str) -> Callable[[], Search]:
        return lambda: search(store, args.task, scheduler, args.budget, args.grace, next(runs))

    results = interleaved({scheduler: side(scheduler) for scheduler in ("asha", "fifo")}, args.repeats)

    def samples(scheduler: str, value: Callable[[Search], float]) -> Samples:
        return Samples([value(r) for r in results[scheduler]])

    def each(scheduler: str, value: Callable[[Search], Any]) -> str:
        """Every repeat's value, in run order (a search that chooses differently shows it)."""
        return " ".join(f"{value(r):g}" for r in results[scheduler])

    steps = {s: samples(s, lambda r: r.steps) for s in ("asha", "fifo")}
    wall = {s: samples(s, lambda r: r.seconds) for s in ("asha", "fifo")}
    print()
    print(f"{args.task}, tiny XLM-R, {len(LEARNING_RATES)} learning rates, {args.budget} steps per trial at most, "
          f"grace {args.grace}; {args.repeats} interleaved repeats after a warm-up round, median [min-max]")
    print(table(["", "ASHA", "full grid", "full grid / ASHA"], [
        ["trial-steps spent", steps["asha"].fmt(0), steps["fifo"].fmt(0),
         ratio_verdict(steps["asha"], steps["fifo"], higher_is_better=False)],
        ["wall time (s)", wall["asha"].fmt(1), wall["fifo"].fmt(1),
         ratio_verdict(wall["asha"], wall["fifo"], higher_is_better=False)],
        ["trials stopped early", each("asha", lambda r: r.stopped_early), each("fifo", lambda r: r.stopped_early), ""],
        ["chosen learning rate", each("asha", lambda r: r.learning_rate), each("fifo", lambda r: r.learning_rate), ""],
        ["best dev metric", each("asha", lambda r: round(r.best_metric, 1)),
         each("fifo", lambda r: round(r.best_metric, 1)), ""],
    ]))
    same = [a.learning_rate == f.learning_rate for a, f in zip(results["asha"], results["fifo"])]
    print(f"same choice in each round: {sum(same)} of {len(same)}")
    print(end_line())


if __name__ == "__main__":
    main()
