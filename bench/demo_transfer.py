"""Run the demo grid's stages in-process and print the zero-shot transfer table.

    python bench/demo_transfer.py [--threads 1] [--seeds 0 1] [--workdir DIR] [--json OUT]

The grid is the demo experiment: a tiny XLM-R pretrained on the synthetic corpus,
intermediate tasks {none, syn-rate, syn-chunk}, targets {syn-sent, syn-pos}, two seeds.
Every node runs through its real stage function (`jobs.stages.*.run`) with the configs
the launcher would give it, one after another in this process, each timed. The printed
estimate of the grid's wall time adds the per-process import cost (measured in a fresh
interpreter) to every node and packs the nodes onto two one-thread slots in dependency
order, which is how the `local` profile runs the demo on a 2-core machine.

The constants below are the demo configuration this benchmark was used to choose; the
experiment spec `experiments/demo.yaml` should carry the same values.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL: dict[str, Any] = {
    "name": None,
    "tiny": {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 128,
        "max_position_embeddings": 130,
    },
    "tokenizer_vocab_size": 1000,
    "corpus_languages": ["en", "qaa", "qab", "qac"],
    "pretrain_steps": 1500,
    "pretrain_lr": 2e-3,
    "pretrain_batch_size": 32,
}

BASE_HPARAMS: dict[str, Any] = {
    "learning_rate": 2e-3,
    "batch_size": 32,
    "grad_accum_steps": 1,
    "epochs": 3.0,
    "max_steps": None,
    "warmup_ratio": 0.1,
    "max_seq_length": 128,
    "eval_interval": 50,
    "patience": None,
    "weight_decay": 0.01,
    "max_grad_norm": 1.0,
}
INTERMEDIATE_HPARAMS: dict[str, Any] = {**BASE_HPARAMS, "max_steps": 600, "eval_interval": 100}
TARGET_HPARAMS: dict[str, Any] = {**BASE_HPARAMS, "epochs": 20.0, "eval_interval": 30}

INTERMEDIATES = ("none", "syn-rate", "syn-chunk")
TARGETS = ("syn-sent", "syn-pos")


def _ctx(node: dict[str, Any], out_dir: Path, inputs: dict[str, Path]) -> Any:
    from jobs.stages.base import StageContext

    out_dir.mkdir(parents=True, exist_ok=True)
    return StageContext(node=node, out_dir=out_dir, inputs=inputs, log=logging.getLogger(f"demo.{node['stage']}"))


def _timed(label: str, fn: Any, ctx: Any, timings: list[dict[str, Any]], deps: list[str]) -> dict[str, Any]:
    started = time.perf_counter()
    result = fn(ctx)
    seconds = time.perf_counter() - started
    timings.append({"node": label, "seconds": seconds, "deps": deps})
    print(f"  {label:<42} {seconds:6.1f}s", flush=True)
    return result


def import_seconds() -> float:
    """Wall time of importing the stage modules in a fresh interpreter (paid by every node)."""
    code = "import jobs.stages.train, jobs.stages.evaluate, jobs.stages.prepare_data, datasets"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    return time.perf_counter() - started


def makespan(timings: list[dict[str, Any]], overhead: float, slots: int = 2) -> float:
    """Greedy list scheduling of the nodes (in the order they ran, which respects their
    dependencies) onto `slots` workers, each node costing its time plus `overhead`."""
    finish: dict[str, float] = {}
    free = [0.0] * slots
    for t in timings:
        ready = max((finish[d] for d in t["deps"]), default=0.0)
        slot = min(range(slots), key=lambda i: max(free[i], ready))
        start = max(free[slot], ready)
        free[slot] = finish[t["node"]] = start + t["seconds"] + overhead
    return max(free)


def run_grid(work: Path, seeds: list[int], model_cfg: dict[str, Any], inter_hp: dict[str, Any],
             target_hp: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from jobs.stages import evaluate, prepare_data, prepare_model, train

    timings: list[dict[str, Any]] = []
    model_dir = work / "prepare-model"
    _timed("prepare model", prepare_model.run,
           _ctx({"stage": "prepare", "kind": "model", "config": {"model": model_cfg, "seed": 0}}, model_dir, {}),
           timings, [])
    data_dirs: dict[str, Path] = {}
    for task in (*INTERMEDIATES[1:], *TARGETS):
        data_dirs[task] = work / f"data-{task}"
        hp = target_hp if task in TARGETS else inter_hp
        node = {"stage": "prepare", "kind": "data", "task": task,
                "config": {"task": task, "max_seq_length": hp["max_seq_length"]}}
        _timed(f"prepare data {task}", prepare_data.run, _ctx(node, data_dirs[task], {"model": model_dir}),
               timings, ["prepare model"])
    inter_dirs: dict[tuple[str, int], Path] = {}
    for task in INTERMEDIATES[1:]:
        for seed in seeds:
            out = inter_dirs[(task, seed)] = work / f"inter-{task}-{seed}"
            node = {"stage": "train-intermediate", "task": task, "seed": seed,
                    "config": {"task": task, "seed": seed, "hparams": inter_hp}}
            result = _timed(f"train-intermediate {task} s{seed}", train.run,
                            _ctx(node, out, {"model": model_dir, "data": data_dirs[task]}),
                            timings, [f"prepare data {task}"])
            print(f"      dev {result['dev']}  steps {result['steps']}")
    results: dict[str, Any] = {}
    for inter in INTERMEDIATES:
        for target in TARGETS:
            for seed in seeds:
                init = model_dir if inter == "none" else inter_dirs[(inter, seed)]
                init_dep = "prepare model" if inter == "none" else f"train-intermediate {inter} s{seed}"
                out = work / f"target-{inter}-{target}-{seed}"
                node = {"stage": "train-target", "task": target, "seed": seed,
                        "config": {"task": target, "seed": seed, "intermediate": inter, "hparams": target_hp}}
                label = f"train-target {inter}>{target} s{seed}"
                trained = _timed(label, train.run, _ctx(node, out, {"init": init, "data": data_dirs[target]}),
                                 timings, [init_dep, f"prepare data {target}"])
                node = {"stage": "evaluate", "task": target, "seed": seed, "config": {"task": target}}
                scores = _timed(f"evaluate {inter}>{target} s{seed}", evaluate.run,
                                _ctx(node, work / f"eval-{inter}-{target}-{seed}", {"model": out, "data": data_dirs[target]}),
                                timings, [label])
                results[f"{inter}|{target}|{seed}"] = {"train": trained, "eval": scores}
                langs = " ".join(f"{lang} {v[scores['metric']]:5.1f}" for lang, v in scores["languages"].items())
                print(f"      dev {trained['dev'][scores['metric']]:5.1f} best@{trained['best_step']}  test {langs}")
    return results, timings


def table(results: dict[str, Any], seeds: list[int]) -> str:
    """Rows: intermediate task; per target the mean over seeds per language, the average,
    and the average's delta against `none`."""
    from jobs.tasks.registry import get_task

    lines = []
    for target in TARGETS:
        task = get_task(target)
        langs = task.eval_languages
        lines.append(f"\n{target} ({task.metric}, mean over seeds {seeds})")
        lines.append(f"{'intermediate':<12}" + "".join(f"{lang:>8}" for lang in langs) + f"{'avg':>8}{'delta':>8}{'sd(avg)':>9}")
        base = None
        for inter in INTERMEDIATES:
            runs = [results[f"{inter}|{target}|{s}"]["eval"] for s in seeds]
            per_lang = [statistics.mean(r["languages"][lang][task.metric] for r in runs) for lang in langs]
            averages = [r["average"] for r in runs]
            avg = statistics.mean(averages)
            base = avg if inter == "none" else base
            sd = statistics.stdev(averages) if len(averages) > 1 else 0.0
            lines.append(f"{inter:<12}" + "".join(f"{v:8.1f}" for v in per_lang) + f"{avg:8.1f}{avg - base:+8.1f}{sd:9.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 = one of two parallel nodes)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--workdir", type=Path, default=None, help="keep node outputs here")
    parser.add_argument("--json", type=Path, default=None, help="write results and timings here")
    parser.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a constant, e.g. model.pretrain_steps=800 target.learning_rate=5e-4")
    args = parser.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING)

    model_cfg, inter_hp, target_hp = copy.deepcopy(MODEL), dict(INTERMEDIATE_HPARAMS), dict(TARGET_HPARAMS)
    sections = {"model": model_cfg, "tiny": model_cfg["tiny"], "intermediate": inter_hp, "target": target_hp}
    for item in args.set:
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        sections[section][name] = json.loads(value) if value not in ("None", "null") else None

    overhead = import_seconds()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="xstilts-demo-"))
    print(f"workdir {work}; per-process import {overhead:.1f}s; threads {args.threads}")
    print(json.dumps({"model": model_cfg, "intermediate": inter_hp, "target": target_hp}))
    started = time.perf_counter()
    results, timings = run_grid(work, args.seeds, model_cfg, inter_hp, target_hp)
    total = time.perf_counter() - started
    print(table(results, args.seeds))
    by_kind: dict[str, list[float]] = {}
    for t in timings:
        words = t["node"].split(" ")
        kind = " ".join(words[:2]) if words[0] == "prepare" else words[0]
        by_kind.setdefault(kind, []).append(t["seconds"])
    print("\nnode seconds (without imports):")
    for kind, values in by_kind.items():
        print(f"  {kind:<22} n={len(values):2d}  mean {statistics.mean(values):5.1f}  max {max(values):5.1f}")
    print(f"sequential in-process total {total:.0f}s; estimated grid wall time on 2 one-thread slots "
          f"(+{overhead:.1f}s imports per node): {makespan(timings, overhead):.0f}s")
    if args.json:
        args.json.write_text(json.dumps({"config": {"model": model_cfg, "intermediate": inter_hp, "target": target_hp},
                                         "results": results, "timings": timings, "import_seconds": overhead}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
