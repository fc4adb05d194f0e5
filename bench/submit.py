"""Submitting a 1,000-node grid to SLURM: chained job arrays against one job per node.

Starts the throw-away two-node cluster of the test suite (tests/integration/slurm/cluster.py), with
partition `low` set DOWN so that nothing runs (only submission and status are measured),
and prints side by side:

- ours: `xstilts launch` (the arrays of `xstilts.launcher.slurm`, afterok between them): wall
  time and the number of `sbatch` calls;
- per node: one submitit `submit()` per node with an `afterok` on the jobs of its
  inputs, as a loop over the plan would do it: wall time and `sbatch` calls;
- one status refresh: `xstilts status` counts the `squeue`/`sacct` calls it makes (PATH
  shims), against asking SLURM about each node's job.

- `--simulate SPEC`: the dependency designs of `xstilts.launcher.slurm.plan_arrays` (one
  array per stage wave, per intermediate row, per intermediate node = lineage, one job per
  node) on a plan, without a cluster: sbatch calls, and a schedule simulated from the DAG
  on an unbounded cluster, each node lasting its spec `gpu_hours` divided by the GPUs its
  job gets from the profile: when the first target training starts, the median target
  start, the critical path, and what one failed intermediate training cancels.

Usage: .venv/bin/python bench/submit.py [--seeds 72]
       .venv/bin/python bench/submit.py --no-per-node --grouping wave|row|lineage [--seeds 14] [--repeats 3]
       .venv/bin/python bench/submit.py --simulate experiments/xtreme-r-multimodal.yaml [--profile slurm]
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from xstilts.core.plan import build_plan  # noqa: E402
from xstilts.core.spec import validate  # noqa: E402
from tests.support.specs import demo_raw  # noqa: E402
from tests.integration.slurm.cluster import Cluster  # noqa: E402

XSTILTS = [sys.executable, "-c", "from xstilts.cli import main; main()"]


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


def per_node_submission(spec_raw: dict, folder: Path) -> tuple[float, int]:
    """One submitit submit per node, each after its inputs' jobs: (seconds, jobs)."""
    import submitit

    from xstilts.jobs.submitit_job import NodeJob

    plan = build_plan(validate(spec_raw))
    executor = submitit.SlurmExecutor(folder=folder)
    job_of: dict[str, str] = {}
    started = time.perf_counter()
    for node in plan.nodes:
        after = [job_of[dep.key] for dep in node.inputs.values()]
        params = {"partition": "low", "time": 20, "job_name": "per-node", "signal_delay_s": 30}
        if after:
            params["dependency"] = "afterok:" + ":".join(after)
        executor.update_parameters(**params)
        job_of[node.key] = executor.submit(NodeJob(spec_raw["storage"], f"{node.stage}/{node.key}")).job_id
    return time.perf_counter() - started, len(plan.nodes)


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


def simulate_main(spec_path: str, profile_name: str) -> None:
    from xstilts.core.spec import load_spec
    from xstilts.launcher.profiles import load_profile
    from xstilts.launcher.slurm import GROUPINGS

    spec = load_spec(spec_path)
    plan = build_plan(spec)
    profile = load_profile(profile_name)
    print(f"plan: {spec_path}, {len(plan.nodes)} nodes; profile {profile_name}; unbounded cluster, "
          f"node time = spec gpu_hours / GPUs of its job")
    print(f"{'grouping':10}{'sbatch':>8}{'1st target (h)':>16}{'median target (h)':>19}{'critical path (h)':>19}"
          f"{'cancelled by 1 failed intermediate':>36}")
    for grouping in GROUPINGS:
        r = simulate(plan, spec, profile, grouping)
        print(f"{grouping:10}{r['sbatch']:>8}{r['first_target_h']:>16.1f}{r['median_target_h']:>19.1f}"
              f"{r['critical_path_h']:>19.1f}{r['cancelled']:>21.1f} (needs it: {r['dependents']:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=72, help="seeds of the demo grid (72: 1,013 nodes)")
    parser.add_argument("--simulate", metavar="SPEC", help="compare the dependency designs on SPEC's plan, no cluster")
    parser.add_argument("--profile", default="slurm", help="profile whose per-stage GPUs turn gpu_hours into hours")
    parser.add_argument("--grouping", default="lineage", help="array_grouping of the profile launched on the cluster")
    parser.add_argument("--no-per-node", action="store_true", help="skip the one-job-per-node comparison (minutes)")
    parser.add_argument("--repeats", type=int, default=3, help="launches timed with --no-per-node")
    args = parser.parse_args()
    if args.simulate:
        simulate_main(args.simulate, args.profile)
        return
    work = Path(tempfile.mkdtemp(prefix="xstilts-bench-submit-"))
    with Cluster() as cluster:
        cluster.run("scontrol", "update", "PartitionName=low", "State=DOWN", check=True)
        env = {**cluster.client_env(), "COLUMNS": "200"}
        calls = shims(work / "shim", env["PATH"], ("sbatch", "squeue", "sacct"))
        env["PATH"] = f"{work / 'shim'}:{env['PATH']}"
        raw = demo_raw()
        raw["seeds"] = list(range(args.seeds))
        raw["storage"] = str(work / "store")
        raw["cluster"] = str(work / "profile.yaml")
        (work / "profile.yaml").write_text(yaml.safe_dump(
            {"executor": "slurm", "partition": "low", "time_min": 20, "log_dir": str(work / "logs"),
             "array_grouping": args.grouping}))
        spec = work / "grid.yaml"
        spec.write_text(yaml.safe_dump(raw))
        n_nodes = len(build_plan(validate(raw)).nodes)

        started = time.perf_counter()
        launched = subprocess.run([*XSTILTS, "launch", str(spec)], env=env, capture_output=True, text=True)
        ours_s = time.perf_counter() - started
        assert launched.returncode == 0, launched.stdout + launched.stderr
        ours_sbatch = count(calls, "sbatch")

        before = (count(calls, "squeue"), count(calls, "sacct"))
        started = time.perf_counter()
        status = subprocess.run([*XSTILTS, "status", str(spec), "--json"], env=env, capture_output=True, text=True)
        status_s = time.perf_counter() - started
        assert status.returncode == 0, status.stderr
        queued = json.loads(status.stdout)["counts"]
        status_calls = (count(calls, "squeue") - before[0], count(calls, "sacct") - before[1])
        cluster.run("scancel", "--name", "xstilts-demo")

        if args.no_per_node:
            from statistics import median

            times = [ours_s]
            for repeat in range(1, args.repeats):  # a fresh store each time: everything is submitted again
                again = work / f"grid-{repeat}.yaml"
                again.write_text(yaml.safe_dump({**raw, "storage": str(work / f"store-{repeat}")}))
                started = time.perf_counter()
                done = subprocess.run([*XSTILTS, "launch", str(again)], env=env, capture_output=True, text=True)
                times.append(time.perf_counter() - started)
                assert done.returncode == 0, done.stdout + done.stderr
                cluster.run("scancel", "--name", "xstilts-demo")
            print(f"grid: demo spec with {args.seeds} seeds = {n_nodes} nodes; array_grouping {args.grouping}: "
                  f"{ours_sbatch} sbatch calls; launch wall time (CLI start-up included) median {median(times):.2f} s, "
                  f"min-max {min(times):.2f}-{max(times):.2f} s over {len(times)}; status {status_s:.2f} s with "
                  f"{sum(status_calls)} scheduler calls")
            return
        os.environ.update(env)
        before_sbatch = count(calls, "sbatch")
        per_node_s, per_node_jobs = per_node_submission({**raw, "storage": str(work / "store2")}, work / "per-node")
        per_node_sbatch = count(calls, "sbatch") - before_sbatch
        started = time.perf_counter()
        for _ in range(per_node_jobs):  # what a status refresh costs when each node's job is asked about
            subprocess.run(["squeue", "-h", "-j", "1"], env=env, capture_output=True)
        per_node_status_s = time.perf_counter() - started
        cluster.run("scancel", "--name", "per-node")

    print(f"grid: demo spec with {args.seeds} seeds = {n_nodes} nodes; local 2-node SLURM cluster, partition DOWN")
    print(f"{'':28}{'ours (arrays)':>16}{'one job per node':>18}{'ratio':>9}")
    print(f"{'submit wall time (s)':28}{ours_s:>16.2f}{per_node_s:>18.2f}{per_node_s / ours_s:>8.1f}x")
    print(f"{'sbatch calls':28}{ours_sbatch:>16}{per_node_sbatch:>18}{per_node_sbatch / ours_sbatch:>8.0f}x")
    print(f"{'scheduler calls per status':28}{sum(status_calls):>16}{per_node_jobs:>18}"
          f"{per_node_jobs / max(1, sum(status_calls)):>8.0f}x")
    print(f"{'status refresh wall time (s)':28}{status_s:>16.2f}{per_node_status_s:>18.2f}")
    print(f"our status refresh: {status_calls[0]} squeue + {status_calls[1]} sacct; states {queued}")


if __name__ == "__main__":
    main()
