"""ASHA against a full grid over the same learning-rate space, side by side in one run.

Prepares a tiny encoder and one synthetic task (`--task`: `syn-pos` tagging, whose
learning rates separate from the first evaluation, or `syn-sent`, which sits at chance
for its first evaluations at every rate) once, then runs the `tune`
stage (`xstilts.jobs.stages.tune`, the code a tune node runs) twice over the same grid of
learning rates with the same per-trial budget: once with ASHA, once with FIFO (every
trial to its full budget). Prints the optimizer steps spent by all trials of each, and
whether both choose the same learning rate.

Usage: .venv/bin/python bench/tune.py [--task syn-pos|syn-sent] [--budget 100] [--grace 1]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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


def done(context: StageContext) -> None:
    (context.out_dir / "DONE").write_text("bench\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=100, help="optimizer steps per trial at most")
    parser.add_argument("--grace", type=int, default=1, help="ASHA grace period, in evaluations")
    parser.add_argument("--task", choices=["syn-pos", "syn-sent"], default="syn-pos", help="the task searched")
    args = parser.parse_args()
    store = Path(tempfile.mkdtemp(prefix="xstilts-bench-tune-"))
    model = ctx(store, "prepare", "model", {"model": TINY, "seed": 0}, {}, kind="model")
    prepare_model.run(model)
    done(model)
    prepared = ctx(store, "prepare", "data", {"task": args.task, "max_seq_length": 64}, {"model": "prepare/model"},
                   kind="data", task=args.task)
    prepare_data.run(prepared)
    done(prepared)
    rows = {}
    for scheduler in ("asha", "fifo"):
        search = {"space": {"learning_rate": {"grid": LEARNING_RATES}}, "trials": 1, "scheduler": scheduler,
                  "grace_period": args.grace, "reduction_factor": 2, "budget_steps": args.budget, "max_concurrent": None}
        started = time.perf_counter()
        result = tune.run(ctx(store, "tune", scheduler,
                              {"task": args.task, "role": "target", "seed": 0, "hparams": HPARAMS, "search": search},
                              {"model": "prepare/model", "data": "prepare/data"}, task=args.task))
        steps = sum(t["evaluations"] for t in result["trials"]) * HPARAMS["eval_interval"]
        rows[scheduler] = (steps, result["best"]["learning_rate"], result["best_metric"],
                           sum(t["stopped_early"] for t in result["trials"]), time.perf_counter() - started)
    print(f"{args.task}, tiny XLM-R, {len(LEARNING_RATES)} learning rates, {args.budget} steps per trial at most, "
          f"{os.cpu_count()} CPUs")
    print(f"{'':26}{'ASHA':>12}{'full grid':>12}{'ratio':>9}")
    print(f"{'trial-steps spent':26}{rows['asha'][0]:>12}{rows['fifo'][0]:>12}{rows['fifo'][0] / rows['asha'][0]:>8.1f}x")
    print(f"{'wall time (s)':26}{rows['asha'][4]:>12.1f}{rows['fifo'][4]:>12.1f}{rows['fifo'][4] / rows['asha'][4]:>8.1f}x")
    print(f"{'trials stopped early':26}{rows['asha'][3]:>12}{rows['fifo'][3]:>12}")
    print(f"{'chosen learning rate':26}{rows['asha'][1]:>12g}{rows['fifo'][1]:>12g}")
    print(f"{'best dev metric':26}{rows['asha'][2]:>12.1f}{rows['fifo'][2]:>12.1f}")
    print(f"same choice: {rows['asha'][1] == rows['fifo'][1]}")


if __name__ == "__main__":
    main()
