"""`xstilts analysis collect` and `table` of a finished 100,000-row grid, timed as the
commands users run: CLI subprocesses, start-up included, on `file://` and on S3, with
the S3 requests counted as the server sees them; against the plain sequential reader.

The store is generated, not trained: every node of a grid of 20 intermediates x 3
targets (panx, udpos, tatoeba: 127 languages) x `--seeds` seeds is finished as a job
leaves it (node.json from `materialize`, state.json, result.json, DONE carrying both as
`jobs.entry` writes it); each evaluate node scores 2 metric keys per language, so 20
seeds = 1,200 evaluate nodes and 101,600 rows. S3 is a moto server on loopback; every
child process reaches it through `tests/support/s3_fault_proxy.py`, which adds
`--latency-ms` to each request (a real object store is tens of ms away; moto on
loopback is not) and counts the requests per kind (GET, HEAD, LIST, PUT).

Sides, run interleaved (round r starts at side r mod n, after a warm-up round) so that
a slow minute of the shared machine hits all of them:

- sequential: the plain baseline reader (`sequential_collect`: one evaluate node after
  the other, DONE and result.json only, no costs, no cache) in a child process
  (`python bench/collect.py --child-sequential SPEC`), start-up included;
- collect, cold: `xstilts analysis collect SPEC --output frame.parquet` with neither the
  rows cache nor the done index in the store (both deleted before each run: the first
  collect of a grid nothing has read before);
- collect, cached: the same command with both in place (every later collect);
- table, cached: `xstilts analysis table SPEC --format csv`, the other command that
  reads all results, with both in place;
- start-up only: `xstilts analysis collect --help`, the floor every command pays
  (interpreter, imports) before it reads anything;
- collect, cached, in phases: a child making the same calls as `analysis collect`
  (CLI imports, `open_spec`, `collect_frame`, `missing_cells`, `write_frame`) and
  printing each phase's seconds: where the cached command's time goes.

Each side prints median [min-max] seconds (wall clock of the subprocess) and the
requests of its last run by kind. The grid on S3 defaults to fewer seeds than on
`file://` (`--s3-seeds 3`: 180 evaluate nodes, 15,240 rows) because the sequential
reader pays the latency once per request, about 5 requests per node.

Usage: .venv/bin/python bench/collect.py [--repeats 3] [--seeds 20] [--s3-seeds 3] [--latency-ms 50]
       .venv/bin/python bench/collect.py --quick     # seeds 2 and 1, 2 repeats: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchlib import (  # noqa: E402
    Samples, end_line, interleaved, machine_line, offline_env, ratio_verdict, run_timed, table,
)

INTERMEDIATES = [
    "none", "mnli", "qqp", "squad", "squad_v2", "hellaswag", "commonsenseqa", "cosmosqa", "socialiqa", "ccg",
    "sst2", "paws", "anli_plus", "syn-rate", "syn-chunk", "syn-shapes-mcm", "syn-shapes-mcm-text",
    "syn-shapes-itm", "syn-shapes-itm-shuffled", "syn-shapes-contrastive",
]
TARGETS = ["panx", "udpos", "tatoeba"]
SECOND_KEY = {"seqeval_f1": "precision", "accuracy": "n_correct"}


# -- the baseline, run in a child process ----------------------------------------------------------
def sequential_collect(experiment: Any) -> list[Any]:
    """The plain baseline: every finished evaluate node's result.json, one after the other."""
    from xstilts.analysis.table import rows_from_result

    rows: list[Any] = []
    for node in experiment.plan.evaluations():
        if not experiment.is_done(node):
            continue
        result = experiment.result(node)
        if result is None:
            continue
        rows.extend(rows_from_result(result, node.intermediate, node.task, node.seed, node.key))
    return rows


def child_sequential(spec: str) -> None:
    from xstilts.launcher.experiment import open_experiment

    print(len(sequential_collect(open_experiment(spec))))


def child_phases(spec: str, output: str) -> None:
    """What `xstilts analysis collect SPEC --output FILE` does, phase by phase (the same
    calls as `analysis.cli.analysis_collect`), printing each phase's seconds as JSON: where
    the command's time goes."""
    started = time.perf_counter()
    phases: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal started
        now = time.perf_counter()
        phases[name] = now - started
        started = now

    import xstilts.cli  # noqa: F401  (the CLI's imports: typer, rich, the commands)
    from xstilts.analysis.collect import collect_frame, missing_cells, write_frame
    from xstilts.launcher.commands.common import open_spec
    lap("imports")
    experiment = open_spec(spec, None)
    lap("open spec + store")
    frame = collect_frame(experiment)
    lap("collect_frame")
    missing_cells(experiment)
    lap("missing_cells")
    write_frame(frame, output)
    lap("write output")
    print(json.dumps(phases))


# -- the grid --------------------------------------------------------------------------------------
def grid_spec(work: Path, storage: str, seeds: int) -> Path:
    from tests.support.specs import demo_raw

    raw = demo_raw()
    raw.update(name=f"bench-collect-{uuid.uuid4().hex[:6]}", storage=storage, seeds=list(range(seeds)))
    raw["intermediate"]["tasks"] = INTERMEDIATES
    raw["target"]["tasks"] = TARGETS
    raw["resources"] = {"train-target": {"gpus": 1}, "evaluate": {"gpus": 1}}
    spec = work / f"{raw['name']}.yaml"
    spec.write_text(yaml.safe_dump(raw, sort_keys=False))
    return spec


def node_result(node: Any) -> dict[str, Any]:
    from xstilts.core.tasks import TASKS

    result: dict[str, Any] = {"node": {"key": node.key, "stage": node.stage, "seconds": 600.0}}
    if node.stage == "evaluate":
        task = TASKS[node.task]
        result.update(task=node.task, metric=task.metric, languages={
            lang: {task.metric: 50.0 + i * 0.5 + node.seed, SECOND_KEY[task.metric]: 40.0 + i}
            for i, lang in enumerate(task.eval_languages)})
    return result


def finish(store: Any, node: Any) -> None:
    """One attempt of 600 s, then `finish_node`'s state, result, DONE."""
    from tests.support.results import finish_node

    when = 1.8e9
    state = {"status": "done", "attempts": [{"id": "g1", "started": when, "ended": when + 600, "host": "h",
                                             "job_id": "1", "outcome": "done"}]}
    finish_node(store, node, when + 600, node_result(node), state)


def generate(spec: Path) -> tuple[int, int, int]:
    """Finish every node of the grid (in parallel: S3 PUTs are round trips); returns
    (nodes, evaluate nodes, rows)."""
    from xstilts.core.listing import in_parallel
    from xstilts.launcher.experiment import open_experiment

    experiment = open_experiment(str(spec))
    experiment.materialize()
    in_parallel(lambda node: finish(experiment.store, node), experiment.plan.nodes, 16)
    evaluations = experiment.plan.evaluations()
    rows = sum(2 * len(node_result(node)["languages"]) for node in evaluations)
    return len(experiment.plan.nodes), len(evaluations), rows


# -- measuring -------------------------------------------------------------------------------------
@dataclass
class Side:
    """One command of the comparison: its argv, what the store must (not) hold first."""

    argv: list[str]
    forget_caches: bool = False
    seconds: Samples = field(default_factory=Samples)
    requests: dict[str, int] = field(default_factory=dict)
    phases: dict[str, Samples] = field(default_factory=dict)
    """Seconds per phase, from a child that prints them as JSON (`child_phases`)."""


class Grid:
    """A generated grid in one store (its size: `generate`'s counts and the seeds), and
    the commands run against it."""

    def __init__(self, label: str, spec: Path, env: dict[str, str], proxy: Any | None, out: Path,
                 size: tuple[int, int, int], seeds: int) -> None:
        from xstilts.analysis.collect import cache_path
        from xstilts.core.index import index_path
        from xstilts.launcher.experiment import open_experiment

        self.label, self.spec, self.env, self.proxy = label, spec, env, proxy
        (self.nodes, self.evaluations, self.rows), self.seeds = size, seeds
        experiment = open_experiment(str(spec))  # in this process: straight to moto, not through the proxy
        self.store = experiment.store
        self.caches = [cache_path(experiment), index_path(self.store, experiment.spec.name)]
        frame = str(out / f"{spec.stem}.parquet")
        cli = [sys.executable, "-m", "xstilts", "analysis"]
        self.sides = {
            "sequential (baseline)": Side([sys.executable, __file__, "--child-sequential", str(spec)]),
            "collect, cold": Side([*cli, "collect", str(spec), "--output", frame], forget_caches=True),
            "collect, cached": Side([*cli, "collect", str(spec), "--output", frame]),
            "table, cached": Side([*cli, "table", str(spec), "--format", "csv"]),
            "start-up only (--help)": Side([*cli, "collect", "--help"]),
            "collect, cached, in phases": Side([sys.executable, __file__, "--child-phases", str(spec), frame]),
        }

    def run(self, name: str) -> Callable[[], tuple[float, dict[str, float]]]:
        side = self.sides[name]

        def once() -> tuple[float, dict[str, float]]:
            """One run: its wall seconds and, from `--child-phases`, its phases' seconds."""
            if side.forget_caches:
                for path in self.caches:
                    self.store.remove(path)
            elif name.startswith(("collect, cached", "table")):
                assert self.store.exists(self.caches[0]), "cached run without a rows cache"
            if self.proxy is not None:
                self.proxy.reset_counts()
            done = run_timed(side.argv, label=f"{self.label}: {' '.join(side.argv[1:])}", env=self.env, cwd=REPO)
            if self.proxy is not None:
                side.requests = {"total": self.proxy.counts()["requests"], **self.proxy.methods}
            return done.wall_s, (done.last_json() if "--child-phases" in side.argv else {})

        return once

    def measure(self, repeats: int) -> None:
        print(f"{self.label}:", flush=True)
        results = interleaved({name: self.run(name) for name in self.sides}, repeats)  # without the warm-up
        for name, side in self.sides.items():
            side.seconds, side.phases = Samples([seconds for seconds, _ in results[name]]), {}
            for _, phases in results[name]:
                for phase, value in phases.items():
                    side.phases.setdefault(phase, Samples()).add(value)


def requests_text(requests: dict[str, int]) -> str:
    if not requests:
        return "-"
    kinds = ", ".join(f"{kind} {n:,}" for kind, n in sorted(requests.items()) if kind != "total" and n)
    return f"{requests['total']:,} ({kinds})"


def report(grids: list[Grid], args: argparse.Namespace) -> None:
    print(f"\nmedian [min-max] seconds of {args.repeats} interleaved runs (after a warm-up round), "
          f"wall clock of the subprocess, start-up included; S3 at {args.latency_ms:g} ms per request")
    for grid in grids:
        print(f"\n{grid.label}: {grid.seeds} seeds, {grid.nodes:,} nodes, {grid.evaluations:,} evaluate nodes, "
              f"{grid.rows:,} rows")
        baseline = grid.sides["sequential (baseline)"].seconds
        body = [[name, side.seconds.fmt(2, " s"), f"{side.seconds.spread:.0%}",
                 "1.00x" if side is grid.sides["sequential (baseline)"]
                 else "-" if not name.startswith(("collect", "table"))
                 else ratio_verdict(side.seconds, baseline, higher_is_better=False),
                 requests_text(side.requests)]
                for name, side in grid.sides.items()]
        print(table(["command", "seconds", "spread", "speed vs sequential", "requests (last run)"], body))
        phased = grid.sides["collect, cached, in phases"]
        print("collect, cached, in phases (in the child; the rest of its wall clock is the interpreter's start):")
        print("  " + "; ".join(f"{phase} {samples.fmt(2, ' s')}" for phase, samples in phased.phases.items()))
    print("spread = (max-min)/median of that command's own runs: the noise of this run.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child-sequential", metavar="SPEC", help=argparse.SUPPRESS)
    parser.add_argument("--child-phases", nargs=2, metavar=("SPEC", "OUTPUT"), help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=20, help="file:// grid (20: 1,200 evaluate nodes, 101,600 rows)")
    parser.add_argument("--s3-seeds", type=int, default=3, help="S3 grid (3: 180 evaluate nodes, 15,240 rows)")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="added to each S3 request by the proxy")
    parser.add_argument("--quick", action="store_true", help="a smoke run: seeds 2, S3 seeds 1, 2 repeats")
    args = parser.parse_args()
    if args.child_sequential:
        child_sequential(args.child_sequential)
        return
    if args.child_phases:
        child_phases(*args.child_phases)
        return
    if args.quick:
        args.seeds, args.s3_seeds, args.repeats = 2, 1, 2
    os.environ.update(offline_env(os.environ))
    from tests.support.moto import moto_server
    from tests.support.s3_fault_proxy import fault_proxy

    print(machine_line(), flush=True)
    work = Path(tempfile.mkdtemp(prefix="xstilts-bench-collect-"))
    grids: list[Grid] = []

    def add_grid(label: str, storage: str, seeds: int, env: dict[str, str], proxy: Any | None) -> Grid:
        """Generate a grid of `seeds` seeds in `storage`, then measure its commands."""
        started = time.perf_counter()
        spec = grid_spec(work, storage, seeds)
        size = generate(spec)
        print(f"{label}: {size[0]:,} nodes written in {time.perf_counter() - started:.0f} s", flush=True)
        grid = Grid(label, spec, env, proxy, work, size, seeds)
        grid.measure(args.repeats)
        grids.append(grid)
        return grid

    try:
        add_grid("file://", f"file://{work / 'store'}", args.seeds, {**os.environ}, None)
        with moto_server(["bench"]) as env, fault_proxy(env["AWS_ENDPOINT_URL"], latency_s=args.latency_ms / 1000) as proxy:
            os.environ.update(env)
            add_grid(f"S3 (moto, +{args.latency_ms:g} ms/request)", f"s3://bench/{uuid.uuid4().hex[:8]}",
                     args.s3_seeds, {**os.environ, "AWS_ENDPOINT_URL": proxy.url}, proxy)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(grids, args)
    print(end_line())


if __name__ == "__main__":
    main()
