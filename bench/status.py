"""`status`, relaunch and `analysis collect` of the paper plan on S3 with 50 ms per request:
the store's bulk view (listings, parallel reads, done index) side by side with main's
sequential reads; and how plan and status grow with the grid.

The store is generated, not trained: every finished node as a run leaves it (node.json,
state.json with its attempt from `core.state`'s writers, result.json with per-language
scores, metrics.jsonl, a released lease, a log, DONE last carrying the state and result
as `jobs.entry` writes it), written straight to a moto
S3 server. The commands then run in child processes (fresh connections, as a CLI) whose
requests go through `tests/support/s3_fault_proxy.py`, which adds `--latency-ms` to each
request and counts them:

- main: the same child code run on main's tree (`--baseline-ref`, default the merge-base
  with `main`, exported with `git archive`): one file after the other;
- ours: this tree.

Scenarios: the half-finished grid (the first half of the plan done, 100 nodes queued,
20 failed), then the finished grid. Operations, each timed in the child from
`open_experiment` (plan build and the storage probe included) to the end:
- `status`: what `xstilts status --json` computes (`status_rows`); "cold" = no done index;
- `relaunch`: `xstilts launch` of the finished grid (local profile): statuses, selection,
  nothing submitted;
- `collect, nothing cached`: what `xstilts analysis collect` computes (`collect_frame`,
  `missing_cells`) with no rows cache and no done index; `collect, no rows cache`: the
  done index there (any status or launch before leaves it); `collect (cached)`: both.

Growth (`--growth`): plan build and the bulk status (cold and with the index) on a local
store of the paper spec with more seeds (about 10k and 50k nodes, all done), in this
process: the CPU cost, which is what grows with the nodes once requests do not.

Prints median [min-max] of `--repeats` runs for ours, of `--baseline-repeats` for main, and
the request count of the first run of each.

Usage: python bench/status.py [--quick] [--repeats 3] [--baseline-repeats 1] [--latency-ms 50]
                              [--growth] [--no-baseline]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchlib import Samples, end_line, machine_line, offline_env, run_timed, table

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "experiments" / "xtreme-r-multimodal.yaml"
QUICK = ["seeds=[1]", "intermediate.tasks=[none,mnli,coco-itm,coco-itm-shuffled,coco-mcm,coco-mcm-text]",
         "intermediate.per_task={}"]
"""The quick plan: one seed, seven intermediate tasks."""
PACKAGE_DIRS = ("core", "launcher", "analysis", "jobs", "cluster_profiles", "experiments")


# -- the child: one command, timed -------------------------------------------------------------
def child(op: str, spec: str, overrides: list[str]) -> None:
    """Run `op` with whichever xstilts is first on sys.path; print its seconds as JSON."""
    import io

    from rich.console import Console

    from xstilts.analysis.collect import collect_frame, missing_cells
    from xstilts.launcher.commands.status import status_rows
    from xstilts.launcher.executors import LaunchRequest
    from xstilts.launcher.experiment import open_experiment

    started = time.perf_counter()
    experiment = open_experiment(spec, overrides, profile="local")
    if op == "status":
        size = len(status_rows(experiment))
    elif op == "relaunch":
        statuses = experiment.statuses(need_cluster=True)
        console = Console(file=io.StringIO())
        request = LaunchRequest(spec_path=spec, dry_run=False, wait=False, retry_failed=False)
        experiment.executor.submit(experiment, statuses, request, console)
        size = sum(status == "done" for status, _ in statuses.values())
        assert "submitted 0 nodes" in console.file.getvalue(), console.file.getvalue()  # type: ignore[attr-defined]
    elif op == "collect":  # what `xstilts analysis collect` computes: the frame and the missing cells
        size = len(collect_frame(experiment)) + len(missing_cells(experiment))
    else:
        raise SystemExit(f"unknown op {op}")
    print(json.dumps({"seconds": time.perf_counter() - started, "size": size}))


# -- trees ---------------------------------------------------------------------------------------
def package_tree(source: Path, into: Path) -> Path:
    """A folder with `xstilts/` laid out as the installed package (as `.ci/typecheck`
    builds it), for PYTHONPATH: it wins over the editable install of this checkout."""
    package = into / "xstilts"
    package.mkdir(parents=True)
    for file in (source / "xstilts").glob("*.py"):
        (package / file.name).symlink_to(file)
    for name in PACKAGE_DIRS:
        (package / name).symlink_to(source / name)
    return into


def baseline_source(ref: str, into: Path) -> Path:
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


# -- generating the store ------------------------------------------------------------------------
def finished_files(store: Any, node: Any, when: float) -> None:
    """A finished node as a run leaves it: its lease, log and (training) metrics, then
    `finish_node`'s state, result, DONE, then the lease released."""
    from xstilts.core.state import finish_attempt, start_attempt
    from xstilts.core.tasks import TASKS

    from tests.support.results import finish_node

    folder = store.node_path(node.stage, node.key)
    attempt: dict[str, Any] = {"id": "g1", "job_id": "4242_7", "host": "gpu-17", "pid": 4242, "started": when}
    state: dict[str, Any] = {"status": "queued", "attempts": [],
                             "submissions": [{"job_id": "4242_7", "executor": "slurm", "at": when - 60}]}
    start_attempt(state, attempt)
    attempt["started"] = when
    finish_attempt(state, attempt, "done", None)
    state["attempts"][-1]["ended"] = when + 3600
    store.write_json(f"{folder}/lease/000001.json", {"job_id": "4242_7", "host": "gpu-17", "created": when})
    store.write_text(f"{folder}/lease/000001.heartbeat", repr(when + 3590))
    store.write_text(f"{folder}/logs/rank0.log", "training ...\n" * 20)
    result: dict[str, Any] = {"node": {"key": node.key, "stage": node.stage, "seconds": 3600.0}}
    if node.stage == "evaluate":
        task = TASKS[node.task]
        result.update(task=node.task, metric=task.metric, average=61.5,
                      languages={lang: {task.metric: 50.0 + i % 30, "n": 1000.0} for i, lang in enumerate(task.languages)})
    elif node.stage in ("train-intermediate", "train-target"):
        store.write_text(f"{folder}/metrics.jsonl", "".join(f'{{"step": {s}, "loss": 0.5}}\n' for s in range(50)))
        result.update(final_loss=0.5, steps=5000)
    finish_node(store, node, when + 3600, result, state)
    store.write_text(f"{folder}/lease/000001.released", repr(when + 3600))


def generate(experiment: Any, done: list[Any], queued: list[Any], failed: list[Any]) -> None:
    from xstilts.core.listing import in_parallel

    store = experiment.store
    when = time.time() - 86400

    def write(item: tuple[str, Any]) -> None:
        kind, node = item
        folder = store.node_path(node.stage, node.key)
        if kind == "done":
            finished_files(store, node, when)
        else:
            store.write_json(f"{folder}/state.json", {
                "status": kind, "attempts": [{"id": "g1", "outcome": kind, "started": when, "ended": when + 60}]
                if kind == "failed" else [], "last_error": "CUDA out of memory" if kind == "failed" else None,
                "submissions": [{"job_id": "99", "executor": "slurm", "at": when}]})

    items = [("done", n) for n in done] + [("queued", n) for n in queued] + [("failed", n) for n in failed]
    in_parallel(write, items, 16)


# -- measuring ------------------------------------------------------------------------------------
def run_child(tree: Path, op: str, spec: str, overrides: list[str], env: dict[str, str], proxy: Any) -> tuple[float, int]:
    """`op` in a child on `tree`: the seconds it measured itself, and its requests."""
    proxy.reset_counts()
    done = run_timed([sys.executable, __file__, "--child", op, "--spec", spec, *sum((["-o", o] for o in overrides), [])],
                     label=f"{op} on {tree}", env={**env, "PYTHONPATH": str(tree)}, cwd=tempfile.gettempdir())
    return float(done.last_json()["seconds"]), proxy.counts()["requests"]


def measured(times: list[float], requests: int) -> str:
    return f"{Samples(times).fmt(2, ' s')}, {requests:,} req" if times else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child")
    parser.add_argument("--spec", default=str(SPEC))
    parser.add_argument("-o", dest="overrides", action="append", default=[])
    parser.add_argument("--quick", action="store_true", help="a smaller plan (one seed, seven intermediate tasks)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-repeats", type=int, default=1)
    parser.add_argument("--baseline-ref", default=None, help="main's commit (default: merge-base with main)")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--growth", action="store_true", help="also plan and status at ~10k and ~50k nodes")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.spec, args.overrides)
        return
    os.environ.update(offline_env(os.environ))
    sys.path.insert(0, str(REPO))
    from tests.support.moto import moto_server
    from tests.support.s3_fault_proxy import fault_proxy

    print(machine_line(), flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench-status-"))
    try:
        trees = {"ours": package_tree(REPO, work / "ours")}
        if not args.no_baseline:
            ref = args.baseline_ref or subprocess.run(["git", "-C", str(REPO), "merge-base", "HEAD", "main"],
                                                      check=True, capture_output=True, text=True).stdout.strip()
            trees["main"] = package_tree(baseline_source(ref, work / "main-src"), work / "main")
            print(f"baseline: main at {ref[:10]}")
        with moto_server(["bench"]) as env, fault_proxy(env["AWS_ENDPOINT_URL"], latency_s=args.latency_ms / 1000) as proxy:
            os.environ.update(env)
            overrides = (QUICK if args.quick else []) + [f"storage=s3://bench/{uuid.uuid4().hex[:8]}"]
            cells = bench_grid(args, trees, overrides, env, proxy)
        print_table(cells, args)
        if args.growth:
            growth(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(end_line())


def bench_grid(args: argparse.Namespace, trees: dict[str, Path], overrides: list[str], env: dict[str, str],
               proxy: Any) -> dict[str, dict[str, str]]:
    from xstilts.analysis.collect import cache_path
    from xstilts.core.index import index_path
    from xstilts.launcher.experiment import open_experiment

    experiment = open_experiment(args.spec, overrides, profile="local")
    store, nodes = experiment.store, experiment.plan.nodes
    started = time.perf_counter()
    experiment.materialize()
    half = len(nodes) // 2
    generate(experiment, nodes[:half], nodes[half:half + 100], nodes[half + 100:half + 120])
    print(f"{len(nodes):,} nodes; half-finished store written in {time.perf_counter() - started:.0f} s")
    child_env = {**os.environ, "AWS_ENDPOINT_URL": proxy.url}

    def forget(*paths: str) -> None:
        for path in paths:
            store.remove(path)

    index, rows = index_path(store, experiment.spec.name), cache_path(experiment)
    cells: dict[str, dict[str, str]] = {}

    def measure(label: str, op: str, before: tuple[str, ...] = (), baseline: bool = True) -> None:
        """`op` on each tree; with `baseline=False` main's run is the row above (main
        has no index, so with and without it is the same run)."""
        cells[label] = {}
        for name, tree in sorted(trees.items()):  # main first: ours leaves its index for the next row
            if name == "main" and not baseline:
                cells[label][name] = "(as above)"
                continue
            times, requests = [], -1
            for _ in range(args.repeats if name == "ours" else args.baseline_repeats):
                forget(*before)
                seconds, count = run_child(tree, op, args.spec, overrides, child_env, proxy)
                times.append(seconds)
                requests = count if requests < 0 else requests
            cells[label][name] = measured(times, requests)
            print(f"  {label:34} {name:5} {cells[label][name]}", flush=True)

    measure("half-finished: status, no index", "status", (index,))
    measure("half-finished: status", "status", baseline=False)
    started = time.perf_counter()
    generate(experiment, nodes[half:], [], [])
    print(f"rest finished in {time.perf_counter() - started:.0f} s")
    measure("finished: status, no index", "status", (index,))
    measure("finished: status", "status", baseline=False)
    measure("finished: relaunch", "relaunch")
    measure("finished: collect, nothing cached", "collect", (index, rows))
    measure("finished: collect, no rows cache", "collect", (rows,), baseline=False)
    measure("finished: collect (cached)", "collect")
    return cells


def print_table(cells: dict[str, dict[str, str]], args: argparse.Namespace) -> None:
    print(f"\nlatency {args.latency_ms:g} ms/request")
    print(table(["operation", "main (sequential)", "ours (bulk)"],
                [[label, row.get("main", "-"), row.get("ours", "-")] for label, row in cells.items()]))


def growth(work: Path) -> None:
    """Plan build and bulk status at ~1.3k, ~10k, ~50k nodes, all done, on a local store
    in process (fsspec's memory filesystem lists in quadratic time: not a fair floor)."""
    from xstilts.core.index import snapshot
    from xstilts.core.plan import build_plan
    from xstilts.core.spec import load_spec
    from xstilts.core.store import DONE, Store

    print(f"\n{'nodes':>8}{'plan (s)':>10}{'status, no index (s)':>22}{'status (s)':>12}   local disk, all done")
    for seeds in (3, 24, 119):
        root = work / f"growth-{seeds}"
        spec = load_spec(str(SPEC), [f"seeds={list(range(1, seeds + 1))}", f"storage={root}"])
        started = time.perf_counter()
        plan = build_plan(spec)
        plan_s = time.perf_counter() - started
        store = Store(str(root))
        for node in plan.nodes:
            folder = Path(store.node_path(node.stage, node.key))
            folder.mkdir(parents=True)
            (folder / "state.json").write_bytes(b'{"status": "done", "attempts": [{"id": "g1"}]}')
            (folder / "result.json").write_bytes(b'{"value": 1}')
            (folder / DONE).write_bytes(b"1\n")
        started = time.perf_counter()
        cold = snapshot(store, spec.name, plan.nodes)
        cold_s = time.perf_counter() - started
        started = time.perf_counter()
        warm = snapshot(store, spec.name, plan.nodes)
        warm_s = time.perf_counter() - started
        assert cold.statuses.keys() == warm.statuses.keys() and len(warm.results) == len(plan.nodes)
        print(f"{len(plan.nodes):>8,}{plan_s:>10.2f}{cold_s:>22.2f}{warm_s:>12.2f}", flush=True)
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
