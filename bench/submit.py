"""Submitting a grid to SLURM: ours against two submitit baselines, measured and simulated.

Two tables in one output, because neither alone is fair:

1. Measured, on the throw-away SLURM cluster of the test suite
   (tests/integration/slurm/cluster.py) with partition `low` set DOWN, so that nothing
   runs and only submission and status are timed. Four sides, repeated and interleaved
   (A B C, B C A, ...; a fresh store and every job cancelled between two submissions):
   - ours: `xstilts launch` as a CLI subprocess, start-up included (the arrays of
     `xstilts.launcher.slurm`, default `array_grouping`);
   - submitit, one job array per stage wave: what a submitit user writes, one
     `executor.map_array` per stage of each wave with `afterok` on the whole arrays of
     its inputs (the waves of `plan_arrays(grouping="wave")`);
   - submitit, one job per node: a loop of `executor.submit` over the plan, each with
     `afterok` on its inputs' jobs; once as submitit ships (it waits 0.2 s between two
     submissions to spare the controller) and once with that throttle set to 0, so the
     cost of the sbatch calls themselves is seen apart from submitit's policy.
   For each: submit wall time (median [min-max]), `sbatch` calls, and the scheduler calls
   of one status refresh (ours: `xstilts status --json`; submitit: one update of its
   `SlurmInfoWatcher` over the jobs of that submission, as `job.state` does), counted by
   PATH shims in front of `sbatch`, `squeue` and `sacct`.
   The cluster runs with accounting (slurmdbd), as a real one does: submitit's status is
   `sacct`, which fails without it (`--no-accounting` to skip the database).
2. Simulated, because the cluster runs nothing: when the first target training can start
   under each design's dependencies, on a plan with `gpu_hours` (default the paper plan),
   a node lasting its spec `gpu_hours` over the GPUs of its job in the profile, on an
   unbounded cluster. The schedule is computed from the DAG: one run is the answer, there
   is no spread.

- `--simulate SPEC`: only the simulation, for every `array_grouping` of
  `xstilts.launcher.slurm.plan_arrays` (wave, row, lineage, node), with the median target
  start, the critical path and what one failed intermediate training cancels.

Usage: .venv/bin/python bench/submit.py [--seeds 24] [--repeats 3]
       .venv/bin/python bench/submit.py --seeds 4 --repeats 1     (a short check)
       .venv/bin/python bench/submit.py --simulate experiments/xtreme-r-multimodal.yaml [--profile slurm]
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from benchlib import Samples, end_line, interleaved, machine_line, ratio_verdict, run_timed, table  # noqa: E402
from tests.integration.slurm.cluster import Cluster  # noqa: E402
from tests.support.grid import XSTILTS  # noqa: E402
from tests.support.specs import demo_raw  # noqa: E402
from xstilts.core.plan import build_plan  # noqa: E402
from xstilts.core.spec import validate  # noqa: E402

PAPER_SPEC = "experiments/xtreme-r-multimodal.yaml"

OURS, ARRAYS, PER_NODE, UNTHROTTLED = "ours", "submitit-arrays", "submitit-per-node", "submitit-per-node-unthrottled"
LABELS = {OURS: "ours (xstilts launch)", ARRAYS: "submitit: array per stage wave",
          PER_NODE: "submitit: job per node", UNTHROTTLED: "job per node, throttle 0"}
GROUPING_OF = {OURS: "lineage", ARRAYS: "wave", PER_NODE: "node"}
"""The `plan_arrays` grouping each side's dependencies equal, for the simulation."""


# ----------------------------------------------------------------------------- counting calls

def shims(folder: Path, real_path: str, names: tuple[str, ...]) -> Path:
    """Wrappers that log each call of `names` to `<folder>/calls.txt`, then run the real command."""
    folder.mkdir(parents=True, exist_ok=True)
    calls = folder / "calls.txt"
    for name in names:
        real = next(Path(d) / name for d in real_path.split(":") if (Path(d) / name).exists())
        shim = folder / name
        shim.write_text(f'#!/bin/sh\necho "{name} $*" >> {calls}\nexec {real} "$@"\n')
        shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    return calls


def count(calls: Path, name: str) -> int:
    return sum(1 for line in calls.read_text().splitlines() if line.split()[0] == name) if calls.exists() else 0


@dataclass
class Submission:
    """One side's submission of the whole grid, and one status refresh after it."""

    seconds: float
    sbatch: int
    status_seconds: float
    squeue: int
    sacct: int
    """The scheduler calls of one refresh."""
    ids: int | None = None
    """How many job ids submitit's one `sacct` names (None: ours)."""

    @property
    def status_call_count(self) -> int:
        return self.squeue + self.sacct

    @property
    def status_calls(self) -> str:
        """The scheduler calls of one refresh, e.g. `1 squeue + 0 sacct`."""
        named = "" if self.ids is None else f" ({self.ids} ids)"
        return f"{self.squeue} squeue + {self.sacct} sacct{named}"


# ----------------------------------------------------------------------------- the three sides

class Sides:
    """The three ways of submitting the grid, on one running cluster: each call submits
    the whole grid into a fresh store, refreshes its status once, and cancels every job."""

    def __init__(self, cluster: Cluster, raw: dict[str, Any], work: Path) -> None:
        self.cluster = cluster
        self.raw = raw
        self.work = work
        self.env = {**cluster.client_env(), "COLUMNS": "200"}
        self.calls = shims(work / "shim", self.env["PATH"], ("sbatch", "squeue", "sacct"))
        self.env["PATH"] = f"{work / 'shim'}:{self.env['PATH']}"
        os.environ.update(self.env)  # submitit calls sbatch/sacct from this process
        self.plan = build_plan(validate(raw))
        self.runs = 0

    def fresh(self, name: str) -> Path:
        """A new folder for one submission: nothing of an earlier one is reused."""
        self.runs += 1
        folder = self.work / f"{self.runs:03d}-{name}"
        folder.mkdir(parents=True)
        return folder

    def counts(self) -> tuple[int, int, int]:
        return count(self.calls, "sbatch"), count(self.calls, "squeue"), count(self.calls, "sacct")

    def cancel_all(self) -> None:
        """Cancel every job and wait until the queue shows none, so the next side starts
        against an empty queue."""
        self.cluster.cancel_all()
        deadline = time.monotonic() + 60
        while self.cluster.run("squeue", "-h").stdout.strip() and time.monotonic() < deadline:
            time.sleep(0.2)

    def ours(self) -> Submission:
        folder = self.fresh(OURS)
        (folder / "profile.yaml").write_text(yaml.safe_dump(
            {"executor": "slurm", "partition": "low", "time_min": 20, "log_dir": str(folder / "logs")}))
        spec = folder / "grid.yaml"
        spec.write_text(yaml.safe_dump({**self.raw, "storage": str(folder / "store"),
                                        "cluster": str(folder / "profile.yaml")}))
        sbatch0, squeue0, sacct0 = self.counts()
        launched = run_timed([*XSTILTS, "launch", str(spec)], label="xstilts launch", env=self.env)
        sbatch1, squeue1, sacct1 = self.counts()
        status = run_timed([*XSTILTS, "status", str(spec), "--json"], label="xstilts status", env=self.env)
        queued = json.loads(status.stdout)["counts"]
        assert queued.get("queued") == len(self.plan.nodes), queued
        _, squeue2, sacct2 = self.counts()
        self.cancel_all()
        return Submission(launched.wall_s, sbatch1 - sbatch0, status.wall_s, squeue2 - squeue1, sacct2 - sacct1)

    def submitit_arrays(self) -> Submission:
        """One `map_array` per stage of each wave, `afterok` on the whole arrays of its inputs."""
        import submitit

        from xstilts.jobs.submitit_job import NodeJob
        from xstilts.launcher.slurm import plan_arrays

        folder = self.fresh(ARRAYS)
        executor = submitit.SlurmExecutor(folder=folder / "logs")
        storage = str(folder / "store")
        waves = plan_arrays(self.plan.nodes, {}, self.cluster.max_array_size - 1, grouping="wave")
        job_ids: list[str] = []  # per wave array: its array job id
        sbatch0 = self.counts()[0]
        started = time.perf_counter()
        for wave in waves:
            params: dict[str, Any] = {"partition": "low", "time": 20, "job_name": "per-stage", "signal_delay_s": 30}
            if wave.after:
                params["dependency"] = "afterok:" + ":".join(job_ids[i] for i in wave.after)
            executor.update_parameters(**params)
            jobs = executor.map_array(lambda job: job(), [NodeJob(storage, f"{n.stage}/{n.key}") for n in wave.nodes])
            job_ids.append(jobs[0].job_id.split("_")[0])
        seconds = time.perf_counter() - started
        sbatch = self.counts()[0] - sbatch0
        assert sbatch == len(waves), (sbatch, len(waves))
        return self._submitit_status(seconds, sbatch, [f"{j}_0" for j in job_ids])

    def submitit_per_node(self, throttled: bool = True) -> Submission:
        """One `submit` per node, each `afterok` on the jobs of its inputs. submitit waits
        `executor._throttling` (0.2 s) between two submissions to spare the controller;
        `throttled=False` sets it to 0, to show what the sbatch calls themselves cost."""
        import submitit

        from xstilts.jobs.submitit_job import NodeJob

        folder = self.fresh(PER_NODE if throttled else UNTHROTTLED)
        executor = submitit.SlurmExecutor(folder=folder / "logs")
        if not throttled:
            executor._throttling = 0.0
        storage = str(folder / "store")
        job_of: dict[str, str] = {}
        sbatch0 = self.counts()[0]
        started = time.perf_counter()
        for node in self.plan.nodes:
            after = [job_of[dep.key] for dep in node.inputs.values()]
            params: dict[str, Any] = {"partition": "low", "time": 20, "job_name": "per-node", "signal_delay_s": 30}
            if after:
                params["dependency"] = "afterok:" + ":".join(after)
            executor.update_parameters(**params)
            job_of[node.key] = executor.submit(NodeJob(storage, f"{node.stage}/{node.key}")).job_id
        seconds = time.perf_counter() - started
        return self._submitit_status(seconds, self.counts()[0] - sbatch0, list(job_of.values()))

    def _submitit_status(self, seconds: float, sbatch: int, job_ids: list[str]) -> Submission:
        """One refresh of submitit's shared watcher over `job_ids` (what `job.state` on
        every job of the submission triggers: one `sacct -j ...` naming each job, arrays
        by their array id), then cancel everything."""
        from submitit.slurm.slurm import SlurmInfoWatcher

        watcher = SlurmInfoWatcher()
        for job_id in job_ids:
            watcher.register_job(job_id)
        _, squeue0, sacct0 = self.counts()
        started = time.perf_counter()
        watcher.update()
        status_seconds = time.perf_counter() - started
        _, squeue1, sacct1 = self.counts()
        self.cancel_all()
        return Submission(seconds, sbatch, status_seconds, squeue1 - squeue0, sacct1 - sacct0,
                          ids=len({j.split("_")[0] for j in job_ids}))


# ----------------------------------------------------------------------------- the simulation

def node_hours(spec: Any, profile: Any, node: Any) -> float:
    """Wall-clock hours of one node: its estimated GPU-hours over the GPUs of its job
    (a CPU-only job: the estimate as hours)."""
    from xstilts.launcher.slurm import stage_resources

    hours = spec.gpu_hours_for(node.stage, node.task) or 0.0
    resources = stage_resources(profile, node.stage, spec.resources_for(node.stage))
    return hours / max(1, resources.gpus_per_node * resources.nodes)


def simulate(plan: Any, spec: Any, profile: Any, grouping: str, size: int = 1000) -> dict[str, float]:
    """Arrays of `grouping`, scheduled on an unbounded cluster: a task starts when every
    job its array's `afterok` names has finished (a whole array: all its tasks)."""
    from statistics import median

    from xstilts.launcher.slurm import plan_arrays

    arrays = plan_arrays(plan.nodes, {}, size, grouping=grouping)
    finish: dict[tuple[int, int], float] = {}
    start_of: dict[str, float] = {}
    blockers: list[set[tuple[int, int]]] = []  # per array: the tasks its afterok waits for
    for array in arrays:
        waits: set[tuple[int, int]] = set()
        for i in array.after:
            tasks = array.after_tasks.get(i)
            whole = tasks is None or len(tasks) == len(arrays[i].nodes) or len(arrays[i].nodes) == 1
            waits.update((i, t) for t in (range(len(arrays[i].nodes)) if whole else tasks or []))
        blockers.append(waits)
        ready = max((finish[w] for w in waits), default=0.0)
        for task, node in enumerate(array.nodes):
            start_of[node.key] = ready
            finish[(array.index, task)] = ready + node_hours(spec, profile, node)
    targets = [n for n in plan.nodes if n.stage == "train-target"
               and any(d.stage == "train-intermediate" for d in n.inputs.values())]
    # one failed intermediate training: what kill_invalid_depend cancels, against what needs it
    position = {node.key: (a.index, t) for a in arrays for t, node in enumerate(a.nodes)}
    cancelled, needed = [], []
    for failed in (n for n in plan.nodes if n.stage == "train-intermediate"):
        dead = {position[failed.key]}
        for array, waits in zip(arrays, blockers):
            if waits & dead:
                dead.update((array.index, t) for t in range(len(array.nodes)))
        cancelled.append(len(dead) - 1)
        downstream = {failed.key}
        for node in plan.nodes:
            if any(d.key in downstream for d in node.inputs.values()):
                downstream.add(node.key)
        needed.append(len(downstream) - 1)
    return {
        "sbatch": len(arrays),
        "first_target_h": min(start_of[n.key] for n in targets),
        "median_target_h": median(start_of[n.key] for n in targets),
        "critical_path_h": max(finish.values()),
        "cancelled": sum(cancelled) / len(cancelled),
        "dependents": sum(needed) / len(needed),
    }


def simulation_table(spec_path: str, profile_name: str, designs: dict[str, str]) -> str:
    """The simulated schedule of each design (label -> grouping) on `spec_path`'s plan."""
    from xstilts.core.spec import load_spec
    from xstilts.launcher.profiles import load_profile

    spec = load_spec(spec_path)
    plan = build_plan(spec)
    profile = load_profile(profile_name)
    rows = []
    for label, grouping in designs.items():
        r = simulate(plan, spec, profile, grouping)
        rows.append([label, grouping, str(r["sbatch"]), f"{r['first_target_h']:.1f}", f"{r['median_target_h']:.1f}",
                     f"{r['critical_path_h']:.1f}", f"{r['cancelled']:.1f} (needs it: {r['dependents']:.1f})"])
    return (f"plan: {spec_path}, {len(plan.nodes)} nodes; profile {profile_name}; unbounded cluster, "
            f"node time = spec gpu_hours / GPUs of its job; computed, not run: no spread\n"
            + table(["design", "grouping", "sbatch", "1st target (h)", "median target (h)", "critical path (h)",
                     "cancelled by 1 failed intermediate"], rows))


# ----------------------------------------------------------------------------- main

def measured_table(results: dict[str, list[Submission]]) -> str:
    def samples(name: str, value: Callable[[Submission], float]) -> Samples:
        return Samples([value(s) for s in results[name]])

    def single(name: str, value: Callable[[Submission], Any]) -> str:
        """A count that must be the same in every repeat; say so if it is not."""
        seen = sorted({str(value(s)) for s in results[name]})
        return seen[0] if len(seen) == 1 else " / ".join(seen)

    names = [OURS, ARRAYS, PER_NODE, UNTHROTTLED]
    rows = [
        ["submit wall time (s)", *(samples(n, lambda s: s.seconds).fmt() for n in names)],
        ["sbatch calls", *(single(n, lambda s: s.sbatch) for n in names)],
        ["scheduler calls per status", *(single(n, lambda s: s.status_call_count) for n in names)],
        ["  of which", *(single(n, lambda s: s.status_calls) for n in names)],
        ["status refresh wall time (s)", *(samples(n, lambda s: s.status_seconds).fmt() for n in names)],
    ]
    ours = samples(OURS, lambda s: s.seconds)
    verdicts = [f"submit wall time of {LABELS[n]}, in multiples of ours: "
                f"{ratio_verdict(ours, samples(n, lambda s: s.seconds), False)}" for n in (ARRAYS, PER_NODE, UNTHROTTLED)]
    return table(["", *(LABELS[n] for n in names)], rows) + "\n" + "\n".join(verdicts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=24, help="seeds of the demo grid (24: 584 nodes)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds of the three submissions")
    parser.add_argument("--simulate", metavar="SPEC", help="only the simulation of every grouping on SPEC's plan")
    parser.add_argument("--simulate-spec", default=PAPER_SPEC, help="plan whose gpu_hours the simulated schedule uses")
    parser.add_argument("--no-accounting", action="store_true",
                        help="no slurmdbd: starts faster, but sacct (submitit's status) then fails")
    parser.add_argument("--profile", default="slurm", help="profile whose per-stage GPUs turn gpu_hours into hours")
    args = parser.parse_args()
    if args.simulate:
        from xstilts.launcher.slurm import GROUPINGS

        print(machine_line())
        print(simulation_table(args.simulate, args.profile, {g: g for g in GROUPINGS}))
        return
    print(machine_line(f"seeds {args.seeds}, repeats {args.repeats}"), flush=True)
    raw = demo_raw()
    raw["seeds"] = list(range(args.seeds))
    work = Path(tempfile.mkdtemp(prefix="xstilts-bench-submit-"))
    # MinJobAge 10 s: cancelled jobs leave the controller's memory soon, so later rounds
    # do not submit against an ever larger job table.
    with Cluster(accounting=not args.no_accounting, min_job_age=10) as cluster:
        cluster.run("scontrol", "update", "PartitionName=low", "State=DOWN", check=True)
        sides = Sides(cluster, raw, work)
        # No warm-up round: a per-node round is minutes; submitit and the plan are imported first instead.
        import logging

        import submitit

        throttle = submitit.SlurmExecutor(folder=work / "probe")._throttling
        logging.getLogger("submitit").setLevel(logging.ERROR)  # its warning on each sacct without accounting
        results = interleaved({OURS: sides.ours, ARRAYS: sides.submitit_arrays, PER_NODE: sides.submitit_per_node,
                               UNTHROTTLED: lambda: sides.submitit_per_node(throttled=False)},
                              args.repeats, warmup=False)
    n_nodes = len(sides.plan.nodes)
    print()
    print(f"1. measured: demo spec with {args.seeds} seeds = {n_nodes} nodes; local 2-node SLURM cluster "
          f"({'no accounting' if args.no_accounting else 'with accounting: slurmdbd, MariaDB'}), partition DOWN; {args.repeats} interleaved repeats, median [min-max]")
    print(measured_table(results))
    print(f"submitit {submitit.__version__} waits {throttle} s between two submissions (its default throttle); "
          f"the last column sets it to 0.\nStatus: ours is `xstilts status --json`, a CLI subprocess (start-up "
          f"included); submitit's is one update of its watcher in this process: one sacct naming every job "
          f"(arrays by their id)" + (", which fails here without accounting." if args.no_accounting else "."))
    print()
    print("2. simulated: when targets can start under each design's dependencies")
    print(simulation_table(args.simulate_spec, args.profile, {LABELS[n]: GROUPING_OF[n] for n in GROUPING_OF}))
    print()
    print(end_line())


if __name__ == "__main__":
    main()
