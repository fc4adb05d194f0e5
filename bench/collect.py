"""Collecting a 100,000-row experiment: cold, with the rows cache, and the plain sequential reader.

Generates the node files `xstilts.analysis.collect` reads (DONE, result.json and state.json of
every evaluate node, state.json of every train-target node) for a grid of 20
intermediates x 3 targets (panx, udpos, tatoeba: 127 languages) x 20 seeds = 1,200
evaluate nodes, 2 metric keys per language = 101,600 rows, into a `file://` store in a
temp dir and into S3 (a moto server started on a free loopback port), then prints for
each store, side by side:

- sequential: `sequential_collect` below, the plain reader (one node after the other,
  result.json only, no costs): the baseline;
- cold: `collect_frame` without a cache (parallel reads; includes writing the cache);
- cached: `collect_frame` again (reads the cache object, checks nothing: every node is done);

median of `--repeats` runs (min-max), and the row counts.

Usage: .venv/bin/python bench/collect.py [--repeats 3] [--workers 16] [--seeds 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from xstilts.analysis.collect import cache_path, collect_frame, train_chain  # noqa: E402
from xstilts.analysis.table import ResultRow, rows_from_result  # noqa: E402
from xstilts.core.tasks import TASKS  # noqa: E402
from xstilts.launcher.experiment import Experiment, open_experiment  # noqa: E402
from xstilts.core.plan import Node  # noqa: E402
from xstilts.core.store import DONE, Store  # noqa: E402
from tests.support.specs import demo_raw  # noqa: E402
from tests.support.moto import moto_server  # noqa: E402

INTERMEDIATES = [
    "none", "mnli", "qqp", "squad", "squad_v2", "hellaswag", "commonsenseqa", "cosmosqa", "socialiqa", "ccg",
    "sst2", "paws", "anli_plus", "syn-rate", "syn-chunk", "syn-shapes-mcm", "syn-shapes-mcm-text",
    "syn-shapes-itm", "syn-shapes-itm-shuffled", "syn-shapes-contrastive",
]
TARGETS = ["panx", "udpos", "tatoeba"]
SECOND_KEY = {"seqeval_f1": "precision", "accuracy": "n_correct"}


def sequential_collect(experiment: Experiment) -> list[ResultRow]:
    """The plain baseline: every finished evaluate node's result.json, one after the other."""
    rows: list[ResultRow] = []
    for node in experiment.plan.evaluations():
        if not experiment.is_done(node):
            continue
        result = experiment.result(node)
        if result is None:
            continue
        assert node.intermediate is not None and node.task is not None and node.seed is not None
        rows.extend(rows_from_result(result, node.intermediate, node.task, node.seed, node.key))
    return rows


def grid_raw(storage: str, seeds: int) -> dict[str, Any]:
    raw = demo_raw()
    raw.update(name="bench-collect", storage=storage, seeds=list(range(seeds)))
    raw["intermediate"]["tasks"] = INTERMEDIATES
    raw["target"]["tasks"] = TARGETS
    raw["resources"] = {"train-target": {"gpus": 1}, "evaluate": {"gpus": 1}}
    return raw


def open_grid(work: Path, storage: str, seeds: int) -> Experiment:
    spec = work / f"grid-{uuid.uuid4().hex[:6]}.yaml"
    spec.write_text(yaml.safe_dump(grid_raw(storage, seeds), sort_keys=False))
    return open_experiment(str(spec))


def node_files(node: Node) -> list[tuple[str, str, Any]]:
    """(stage/key, file name, content) of what a finished cell leaves that collect reads."""
    task = TASKS[node.task]
    languages = {lang: {task.metric: 50.0 + i * 0.5 + node.seed, SECOND_KEY[task.metric]: 40.0 + i}
                 for i, lang in enumerate(task.eval_languages)}
    state = {"status": "done", "attempts": [{"started": 1.8e9, "ended": 1.8e9 + 600, "host": "h", "job_id": "1"}]}
    files = [(node.ref, "result.json", {"task": node.task, "metric": task.metric, "languages": languages}),
             (node.ref, "state.json", state), (node.ref, DONE, "1800000000.0\n")]
    return files + [(train.ref, "state.json", {**state, "attempts": state["attempts"] * 2}) for train in train_chain(node)]


def generate(experiment: Experiment, threads: int) -> int:
    """Write every evaluate node's files (in parallel: S3 PUTs are round trips); returns the file count."""
    store = experiment.store
    files = [f for node in experiment.plan.evaluations() for f in node_files(node)]

    def write(file: tuple[str, str, Any]) -> None:
        ref, name, content = file
        path = store.path("nodes", ref, name)
        store.write_text(path, content) if isinstance(content, str) else store.write_json(path, content)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(write, files))
    return len(files)


class StoreCalls:
    """Counts the store's reads and existence checks (one HTTP request each on S3)."""

    def __init__(self, store: Store) -> None:
        self.fs, self.count, self.lock = store.fs, 0, threading.Lock()
        self.real = {name: getattr(self.fs, name) for name in ("cat_file", "exists")}
        for name, real in self.real.items():
            setattr(self.fs, name, self._counting(real))

    def _counting(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            with self.lock:
                self.count += 1
            return real(*args, **kwargs)
        return call

    def close(self) -> None:
        for name in self.real:
            delattr(self.fs, name)


def timed(run: Callable[[], Any], repeats: int, calls: StoreCalls,
          before: Callable[[], None] = lambda: None) -> tuple[list[float], Any, int]:
    """Seconds of each repeat, the last output and the store calls of one run."""
    times, out, per_run = [], None, 0
    for _ in range(repeats):
        before()
        calls.count = 0
        started = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - started)
        per_run = calls.count
    return times, out, per_run


def measure(name: str, experiment: Experiment, args: argparse.Namespace) -> dict[str, Any]:
    store: Store = experiment.store
    started = time.perf_counter()
    n_files = generate(experiment, args.workers)
    print(f"  {name}: wrote {n_files} files in {time.perf_counter() - started:.1f}s", flush=True)

    def drop_cache() -> None:
        store.remove(cache_path(experiment))

    calls = StoreCalls(store)
    try:
        seq_times, seq_rows, seq_calls = timed(lambda: sequential_collect(experiment), args.repeats, calls)
        cold_times, cold, cold_calls = timed(lambda: collect_frame(experiment, workers=args.workers),
                                             args.repeats, calls, drop_cache)
        warm_times, warm, warm_calls = timed(lambda: collect_frame(experiment, workers=args.workers),
                                             args.repeats, calls)
    finally:
        calls.close()
    assert cold.equals(warm), "cached frame differs from the cold one"
    assert len(seq_rows) == len(cold)
    size = store.fs.info(cache_path(experiment))["size"]
    print(f"  {name}: measured", flush=True)
    return {"name": name, "seq": seq_times, "cold": cold_times, "warm": warm_times, "rows": len(cold),
            "seq_rows": len(seq_rows), "nodes": len(experiment.plan.evaluations()), "cache_mb": size / 1e6,
            "calls": (seq_calls, cold_calls, warm_calls)}


def fmt(times: list[float]) -> str:
    return f"{statistics.median(times):7.2f} [{min(times):.2f}-{max(times):.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=20, help="20: 1,200 evaluate nodes, 101,600 rows")
    args = parser.parse_args()
    import pandas

    print(f"vm: {os.cpu_count()} cores, python {sys.version.split()[0]}, pandas {pandas.__version__}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.2f}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="xstilts-bench-collect-"))
    results = []
    try:
        results.append(measure("file://", open_grid(work, f"file://{work / 'store'}", args.seeds), args))
        with moto_server(["bench"]) as env:
            os.environ.update(env)
            results.append(measure("s3 (moto)", open_grid(work, f"s3://bench/{uuid.uuid4().hex[:8]}", args.seeds), args))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    first = results[0]
    print(f"\n{first['nodes']} evaluate nodes, {first['rows']} rows; {args.workers} threads; "
          f"median of {args.repeats} (min-max) seconds")
    print(f"{'store':12}{'rows':>8}{'sequential':>22}{'cold':>22}{'cached':>22}{'seq/cold':>10}"
          f"{'cold/cached':>13}{'cache MB':>10}")
    for r in results:
        seq, cold, warm = (statistics.median(r[k]) for k in ("seq", "cold", "warm"))
        print(f"{r['name']:12}{r['rows']:>8}{fmt(r['seq']):>22}{fmt(r['cold']):>22}{fmt(r['warm']):>22}"
              f"{seq / cold:>9.1f}x{cold / warm:>12.1f}x{r['cache_mb']:>10.2f}")
    print("store calls per run (cat_file + exists; one request each on S3) and calls per second:")
    for r in results:
        rates = [f"{n} ({n / statistics.median(r[k]):.0f}/s)" for n, k in zip(r["calls"], ("seq", "cold", "warm"))]
        print(f"  {r['name']:12} sequential {rates[0]}, cold {rates[1]}, cached {rates[2]}")
    print(f"sequential = sequential_collect (no costs, no cache); rows equal: "
          f"{all(r['seq_rows'] == r['rows'] for r in results)}")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
