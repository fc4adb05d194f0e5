"""The `slurm` executor: a plan's nodes as SLURM job arrays chained by dependencies.

A launch groups the nodes to run into *waves*: a node's wave is one more than the
deepest wave among its inputs that are submitted in the same launch. The nodes of one
stage in one wave go out as job arrays (split at the cluster's `MaxArraySize`), with
`afterok` on exactly the array tasks holding their inputs (`<job>_<task>`, or the whole
job where every task of it is an input), and on the job of any input still queued or
running from an earlier launch. The launcher can exit: SLURM starts each array when its
inputs are done, and with `DependencyParameters=kill_invalid_depend` cancels it when one
of them failed.

How a wave is split into arrays (`array_grouping` in the profile) was chosen by
measurement (bench/submit.py --simulate on the paper plan, BENCHMARKS.md "SLURM
dependencies"): per *lineage*, one array per intermediate training node for its
targets (and one for their evaluations). Its targets then start when that one
training ends (the first after 2.7 h instead of 32 h behind the whole intermediate
array, whose 20-hour cc3m-mcm gated all 540), one failed intermediate cancels its own 20
cells instead of 1,194 nodes, and the grid is 182 sbatch calls (about 2 s) where one
job per node is 1,299, for a critical path 1.5 h (one evaluation) longer. One array per
intermediate *row* (68 calls) starts as early but lets one failed seed cancel the other
seeds' cells. `aftercorr` was not taken: it needs the arrays index-aligned, which breaks
as soon as a relaunch leaves some cells out, and it spares nothing over naming tasks.

`max_jobs` caps the tasks queued at once (array tasks count one each, like
MaxSubmitJobs): a launch submits the first that fit in wave order, so nothing submitted
waits behind the cap, and the rest goes out as slots free up (`launch --wait` each poll,
or the next `launch`). Jobs lost to the infrastructure (NODE_FAIL, BOOT_FAIL, a node
gone mid-job) are requeued by SLURM itself (`--requeue`): the job id stays, so
dependants keep waiting rather than being cancelled, with no launcher running; the job
counts such restarts against `max_retries` (jobs/submitit_job.py), and status shows
them as `retries`. OUT_OF_MEMORY is not retried: the same request would run out again.

Each array task runs `xstilts.jobs.submitit_job.NodeJob`, which takes the node's lease, runs the
stage, commits it, and on SLURM's USR2 (preemption, time limit) checkpoints and requeues.

What is queued or running is asked from SLURM (one `squeue` per refresh, plus one
`sacct` where accounting exists), never assumed from the store: a job can vanish
(cancelled, killed, node failure) without its node ever writing a word.
Nothing here imports torch.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xstilts.core.plan import Node
from xstilts.core.spec import Resources
from xstilts.launcher.profiles import SlurmProfile, SlurmResources
from xstilts.core.errors import UserError
from xstilts.core.stages import StageName, facts

DEFAULT_MAX_ARRAY_SIZE = 1001
"""SLURM's default `MaxArraySize`: used when `scontrol` cannot be asked (dry runs off-cluster)."""

SLURM_TO_STATUS: dict[str, str] = {
    "PENDING": "queued",
    "CONFIGURING": "running",
    "RUNNING": "running",
    "COMPLETING": "running",
    "SIGNALING": "running",
    "STAGE_OUT": "running",
    "RESIZING": "running",
    "SUSPENDED": "running",
    "PREEMPTED": "preempted",
    "REQUEUED": "preempted",
    "REQUEUE_HOLD": "preempted",
    "REQUEUE_FED": "preempted",
    "COMPLETED": "completed",
    "FAILED": "failed",
    "TIMEOUT": "failed",
    "OUT_OF_MEMORY": "failed",
    "NODE_FAIL": "failed",
    "BOOT_FAIL": "failed",
    "DEADLINE": "failed",
    "CANCELLED": "cancelled",
    "REVOKED": "cancelled",
}
"""SLURM job state -> node status. `completed` is only a job state: whether the node is
done is what its DONE marker says."""

LIVE = frozenset({"queued", "running", "preempted"})
"""Statuses of a node whose job SLURM still holds: a launch leaves it alone."""

PYTHON = f"{shlex.quote(sys.executable)} -P"
"""How jobs start Python: with the safe path, so modules in the submission folder (the
job's working directory) never shadow the package."""


def job_name(experiment: str) -> str:
    """Every job of an experiment carries this name: status and cancel select by it."""
    return f"xstilts-{experiment}"


# --------------------------------------------------------------------------------------
# asking SLURM


@dataclass(frozen=True)
class JobState:
    job_id: str
    state: str
    reason: str = ""

    @property
    def status(self) -> str:
        return SLURM_TO_STATUS.get(self.state, "running" if self.state else "queued")


class SlurmUnavailable(UserError):
    """SLURM's client commands are missing or cannot reach a controller."""


def _run(cmd: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise SlurmUnavailable(f"'{cmd[0]}' not found: the slurm profile needs SLURM's client commands on PATH") from None
    except subprocess.TimeoutExpired:
        raise SlurmUnavailable(f"'{' '.join(cmd)}' did not answer within {timeout:.0f}s") from None


def squeue(name: str) -> dict[str, JobState]:
    """Live jobs called `name`, array tasks one by one (`-r`): job id -> state."""
    result = _run(["squeue", "-h", "-r", "--name", name, "-o", "%i|%T|%r"])
    if result.returncode != 0:
        raise SlurmUnavailable(f"squeue failed: {result.stderr.strip()}")
    jobs = {}
    for line in result.stdout.splitlines():
        job_id, state, reason = (line.split("|") + ["", ""])[:3]
        jobs[job_id.strip()] = JobState(job_id.strip(), state.strip(), "" if reason == "None" else reason.strip())
    return jobs


INFRASTRUCTURE_FAILURES = frozenset({"NODE_FAIL", "BOOT_FAIL"})
"""Job states of a run the infrastructure ended: SLURM requeues such a job (`--requeue`)."""


def sacct(job_ids: Iterable[str], retried: dict[str, int] | None = None) -> dict[str, JobState] | None:
    """Latest states of `job_ids` from accounting, or None where there is none (sacct
    fails without slurmdbd: then the store and squeue have to do). Every run of a requeued
    job is a record (`-D`); the runs the infrastructure ended are counted into `retried`."""
    bases = sorted({job_id.split("_")[0] for job_id in job_ids if job_id})
    if not bases:
        return {}
    result = _run(["sacct", "-n", "-P", "-D", "-X", "-j", ",".join(bases), "-o", "JobID,State,ExitCode,Reason"])
    if result.returncode != 0:
        return None
    jobs = {}
    for line in result.stdout.splitlines():  # oldest run first: the last record of a job wins
        parts = line.split("|")
        if len(parts) < 3:
            continue
        job_id, state, exit_code = parts[0], parts[1].split()[0] if parts[1] else "", parts[2]
        reason = parts[3] if len(parts) > 3 and parts[3] not in ("", "None") else ""
        detail = f"exit code {exit_code}" + (f", {reason}" if reason else "")
        jobs[job_id] = JobState(job_id, state, detail)
        if retried is not None and state in INFRASTRUCTURE_FAILURES:
            retried[job_id] = retried.get(job_id, 0) + 1
    return jobs


def max_array_size(profile: SlurmProfile) -> tuple[int, str]:
    """Tasks per array: the profile's, else the cluster's `MaxArraySize`; and where it came from."""
    if profile.max_array_size:
        return profile.max_array_size, "profile"
    try:
        result = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return DEFAULT_MAX_ARRAY_SIZE, "SLURM default (scontrol unavailable)"
    for line in result.stdout.splitlines():
        if line.strip().startswith("MaxArraySize"):
            return int(line.split("=", 1)[1].strip()), "scontrol show config"
    return DEFAULT_MAX_ARRAY_SIZE, "SLURM default (not in scontrol's output)"


def cancel(experiment: str) -> subprocess.CompletedProcess[str]:
    """Cancel every job of `experiment` (by job name), nothing else."""
    return _run(["scancel", "--name", job_name(experiment)])


def last_job_id(state: dict[str, Any]) -> str | None:
    """The SLURM job of the node's latest submission, if it was submitted to SLURM."""
    submissions = [s for s in state.get("submissions") or [] if s.get("executor") == "slurm"]
    return submissions[-1]["job_id"] if submissions else None


def infrastructure_retries(state: dict[str, Any], retried: dict[str, int] | None = None) -> int:
    """How often the node's job was restarted after the infrastructure lost it: the runs
    accounting recorded as NODE_FAIL or BOOT_FAIL (`retried`, from `sacct`), and at least
    the attempts the store closed as `lost` (`core.state.start_attempt`: a job that vanished
    without a word), which is all there is without accounting. A run that got SIGTERM
    from the failing node in time checkpoints and is recorded `preempted` in the store:
    only accounting tells that apart from a preemption."""
    lost = sum(1 for attempt in state.get("attempts") or [] if isinstance(attempt, dict)
               and attempt.get("outcome") == "lost")
    jobs = {s.get("job_id") for s in state.get("submissions") or [] if s.get("executor") == "slurm"}
    return max(lost, sum((retried or {}).get(job, 0) for job in jobs if job))


def merge_status(
    store_status: str, state: dict[str, Any], live: dict[str, JobState], finished: dict[str, JobState] | None
) -> tuple[str, str | None]:
    """A node's status from the store and SLURM together, and the reason of a failure.

    The store decides `done` and `running` (a live lease); SLURM decides whether a job
    that has not committed is still queued, was preempted, or ended (and why). A job
    that left the queue without its node finishing, where accounting cannot say why,
    is reported failed: nothing will run it any more.
    """
    if store_status in ("done", "running"):
        return store_status, None
    job_id = last_job_id(state)
    if job_id is None:
        return store_status, None
    if job_id in live:
        job = live[job_id]
        if job.status == "queued" and "DependencyNeverSatisfied" in job.reason:
            return "cancelled", f"job {job_id}: an input failed ({job.reason})"
        return job.status, job.reason or None
    ended = (finished or {}).get(job_id)
    if ended is not None:
        if ended.status == "completed":
            return ("failed", f"job {job_id} completed without committing the node") if store_status != "failed" \
                else (store_status, state.get("last_error"))
        if ended.status == "cancelled" and store_status != "failed":
            return "cancelled", f"job {job_id} {ended.state} ({ended.reason})"
        return "failed", f"job {job_id} {ended.state} ({ended.reason})"
    if store_status in ("queued", "preempted", "interrupted", "pending"):
        return "failed", f"job {job_id} left the queue without finishing the node"
    return store_status, state.get("last_error")


# --------------------------------------------------------------------------------------
# planning arrays


@dataclass
class Array:
    """One sbatch call: nodes of one stage in one wave (and one lineage, see `group_of`)."""

    index: int
    stage: StageName
    wave: int
    nodes: list[Node]
    after: list[int] = field(default_factory=list)
    """Indices of arrays of this launch that hold inputs of these nodes."""
    after_jobs: list[str] = field(default_factory=list)
    """Job ids of inputs still queued or running from an earlier launch."""
    after_tasks: dict[int, list[int]] = field(default_factory=dict)
    """Per array of `after`: the task indices these nodes need (all of them: the whole array)."""
    job_id: str | None = None


GROUPINGS = ("wave", "row", "lineage", "node")
"""How nodes of one stage and wave are split into arrays (bench/submit.py compares them):
`wave` one array per stage wave; `row` one per intermediate task; `lineage` one per
intermediate training node (its targets and their evaluations); `node` one job per node."""

DEFAULT_GROUPING = "lineage"
"""Measured in bench/submit.py on the paper plan (BENCHMARKS.md, "SLURM dependencies"):
every target starts as soon as its own intermediate model is trained, like one job per
node, and one failed intermediate cancels exactly its own cells, in ~1/7 of the sbatch
calls of one job per node."""


def is_row_head(node: Node) -> bool:
    """Nodes whose dependants form rows of their own: an intermediate training (its
    targets and their evaluations) and the image features of a caption dataset (its
    caption data, its intermediate trainings). They are the long, row-specific inputs;
    model and data preparations are short and shared by everything."""
    return node.stage == "train-intermediate" or (node.stage == "prepare" and node.kind == "images")


def _lineages(nodes: Sequence[Node], by: str) -> dict[str, tuple[str, ...]]:
    """Each node's lineage: the row heads upstream of it (`lineage`: the nodes; `row`: their
    tasks), through the whole plan (inputs not submitted now included), so that a relaunch
    groups as the first launch did. A head is not in its own lineage: the intermediate
    trainings of a wave stay one array, their targets split by intermediate."""
    memo: dict[str, tuple[str, ...]] = {}

    def passed_on(node: Node) -> tuple[str, ...]:
        own = ((node.key if by == "lineage" else f"{node.stage}:{node.task}"),) if is_row_head(node) else ()
        return tuple(sorted(set(of(node) + own)))

    def of(node: Node) -> tuple[str, ...]:
        if node.key not in memo:
            memo[node.key] = tuple(sorted({mark for dep in node.inputs.values() for mark in passed_on(dep)}))
        return memo[node.key]

    return {node.key: of(node) for node in nodes}


def plan_arrays(nodes: Sequence[Node], live_inputs: dict[str, str], size: int,
                grouping: str = DEFAULT_GROUPING) -> list[Array]:
    """Group `nodes` (in plan order: inputs first) into dependency-ordered arrays.

    `live_inputs` maps the key of a node not in `nodes` that is queued or running in
    SLURM to its job id; inputs that are neither there nor in `nodes` must be done. An
    array waits for exactly the tasks that hold its nodes' inputs (`afterok:<job>_<task>`),
    or for a whole array where it needs every task of it.
    """
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping {grouping!r}: one of {', '.join(GROUPINGS)}")
    submitted = {node.key for node in nodes}
    wave: dict[str, int] = {}
    for node in nodes:
        wave[node.key] = 1 + max((wave[dep.key] for dep in node.inputs.values() if dep.key in submitted), default=-1)
    lineage = _lineages(nodes, grouping) if grouping in ("row", "lineage") else {}
    if lineage:
        # Nodes nothing submitted here depends on (evaluations) of one stage and lineage
        # go out together after the last of them is ready: one array instead of one per
        # wave, and nothing waits on them.
        feeds = {dep.key for node in nodes for dep in node.inputs.values()}
        last: dict[tuple[StageName, tuple[str, ...]], int] = {}
        for node in nodes:
            if node.key not in feeds:
                group = (node.stage, lineage[node.key])
                last[group] = max(last.get(group, 0), wave[node.key])
        for node in nodes:
            if node.key not in feeds:
                wave[node.key] = last[(node.stage, lineage[node.key])]
    groups: dict[tuple[int, StageName, tuple[str, ...]], list[Node]] = {}
    for node in nodes:
        mark = (node.key,) if grouping == "node" else lineage.get(node.key, ())
        groups.setdefault((wave[node.key], node.stage, mark), []).append(node)
    arrays: list[Array] = []
    task_of: dict[str, tuple[int, int]] = {}  # node key -> (array index, task index)
    for (level, stage, _mark), members in sorted(groups.items(), key=lambda item: item[0][0]):
        for start in range(0, len(members), size):
            chunk = members[start:start + size]
            array = Array(index=len(arrays), stage=stage, wave=level, nodes=chunk)
            inputs = [dep for node in chunk for dep in node.inputs.values()]
            needed: dict[int, set[int]] = {}
            for dep in inputs:
                if dep.key in task_of:
                    index, task = task_of[dep.key]
                    needed.setdefault(index, set()).add(task)
            array.after = sorted(needed)
            if grouping == "wave":  # a wave waits for whole arrays: one short dependency, as before
                array.after_tasks = {i: list(range(len(arrays[i].nodes))) for i in array.after}
            else:
                array.after_tasks = {i: sorted(tasks) for i, tasks in sorted(needed.items())}
            array.after_jobs = sorted({live_inputs[dep.key] for dep in inputs if dep.key in live_inputs})
            arrays.append(array)
            for task, node in enumerate(chunk):
                task_of[node.key] = (array.index, task)
    return arrays


def cap_selection(nodes: Sequence[Node], slots: int | None) -> list[Node]:
    """The first `slots` of `nodes` in wave order (inputs first), so that whatever is
    submitted can run: none of its inputs waits behind the cap. None: all of them."""
    if slots is None or slots >= len(nodes):
        return list(nodes)
    submitted = {node.key for node in nodes}
    wave: dict[str, int] = {}
    for node in nodes:
        wave[node.key] = 1 + max((wave[dep.key] for dep in node.inputs.values() if dep.key in submitted), default=-1)
    return sorted(nodes, key=lambda node: wave[node.key])[:max(0, slots)]


# --------------------------------------------------------------------------------------
# submitting


def stage_resources(profile: SlurmProfile, stage: StageName, spec_resources: Resources | None = None) -> SlurmResources:
    """The job of `stage`: the profile's resources, its per-stage overrides, then what the
    spec's `resources` section sets explicitly. Training stages span several processes
    (FSDP ranks); a tune job may span several nodes with one task each (one Ray node per
    host, whose trials use that task's CPUs and GPUs); the others are one process."""
    resources = profile.resources(stage)
    changes: dict[str, Any] = {}
    if spec_resources is not None:
        explicit = spec_resources.model_fields_set
        mapping = {"cpus": "cpus_per_task", "gpus": "gpus_per_node", "mem_gb": "mem_gb", "time_min": "time_min"}
        changes.update({ours: getattr(spec_resources, theirs) for theirs, ours in mapping.items() if theirs in explicit})
    processes = facts(stage).processes
    if processes == "one_per_host":
        changes.update(tasks_per_node=1)
    elif processes == "single":
        changes.update(nodes=1, tasks_per_node=1)
        if resources.gpus_per_node > 1:
            changes["gpus_per_node"] = 1
    return resources.model_copy(update=changes)


def executor_parameters(
    resources: SlurmResources, profile: SlurmProfile, name: str, env: dict[str, str], dependency: str | None
) -> dict[str, Any]:
    """submitit `SlurmExecutor` parameters of one array."""
    setup = [f"export {key}={shlex.quote(value)}" for key, value in sorted(env.items())] + list(resources.setup)
    params: dict[str, Any] = {
        "job_name": name,
        "time": resources.time_min,
        "nodes": resources.nodes,
        "ntasks_per_node": resources.tasks_per_node,
        "cpus_per_task": resources.cpus_per_task,
        "signal_delay_s": resources.signal_delay_s,
        "array_parallelism": profile.array_parallelism,
        "setup": setup,
        "stderr_to_stdout": True,
        # SLURM requeues a job it lost to the infrastructure (NODE_FAIL, BOOT_FAIL) instead of
        # failing it, whatever the cluster's JobRequeue default: same job id, so dependants
        # keep waiting; NodeJob counts these restarts against `max_retries`.
        "additional_parameters": {"requeue": True},
    }
    optional = {
        "partition": resources.partition, "account": resources.account, "qos": resources.qos,
        "constraint": resources.constraint, "exclude": resources.exclude,
        "gpus_per_node": resources.gpus_per_node or None,
        "mem": f"{int(resources.mem_gb * 1024)}M" if resources.mem_gb else None,
        "dependency": dependency,
    }
    params.update({key: value for key, value in optional.items() if value is not None})
    return params


def log_folder(profile: SlurmProfile, experiment: str) -> Path:
    return Path(os.path.expandvars(profile.log_dir)).expanduser().resolve() / experiment


def dependency_string(array: Array, arrays: Sequence[Array]) -> str | None:
    """`afterok` on the jobs this array needs: a whole array where every one of its tasks
    is an input, else the single tasks (`<job>_<task>`), so a failure cancels only what
    depends on it (`kill_invalid_depend`)."""
    ids: list[str] = []
    for i in array.after:
        job = arrays[i].job_id or f"<array {i}>"
        tasks = array.after_tasks.get(i)
        if tasks is None or len(tasks) == len(arrays[i].nodes):
            ids.append(str(job))
        elif len(arrays[i].nodes) == 1:
            ids.append(str(job))
        else:
            ids.extend(f"{job}_{task}" for task in tasks)
    ids += list(array.after_jobs)
    return "afterok:" + ":".join(ids) if ids else None


def render_sbatch(array: Array, params: dict[str, Any], folder: Path) -> str:
    """The sbatch script submitit would write for `array` (dry runs)."""
    from submitit.slurm.slurm import _make_sbatch_string

    command = f"{PYTHON} -u -m submitit.core._submit {shlex.quote(str(folder))}"
    extra: dict[str, Any] = {"map_count": len(array.nodes)} if len(array.nodes) > 1 else {}
    return _make_sbatch_string(command=command, folder=str(folder), **params, **extra)


def submit_arrays(
    arrays: list[Array], store_url: str, experiment: str, profile: SlurmProfile, env: dict[str, str],
    spec_resources: Callable[[StageName], Resources], on_submit: Callable[[Node, str], None],
) -> None:
    """Submit `arrays` in order (each after the ones it depends on), one sbatch each."""
    import submitit

    from xstilts.jobs.submitit_job import NodeJob

    folder = log_folder(profile, experiment)
    folder.mkdir(parents=True, exist_ok=True)
    for array in arrays:
        resources = stage_resources(profile, array.stage, spec_resources(array.stage))
        params = executor_parameters(resources, profile, job_name(experiment), env, dependency_string(array, arrays))
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=profile.max_requeues, python=PYTHON)
        executor.update_parameters(**params)
        jobs = []
        with executor.batch():
            for node in array.nodes:
                task = NodeJob(store_url, f"{node.stage}/{node.key}", profile.max_requeues, profile.max_retries)
                jobs.append(executor.submit(task))
        array.job_id = jobs[0].job_id.split("_")[0]
        for node, job in zip(array.nodes, jobs):
            on_submit(node, job.job_id)
