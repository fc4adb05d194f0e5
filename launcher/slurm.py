"""The `slurm` executor: a plan's nodes as SLURM job arrays chained by dependencies.

A launch groups the nodes to run into *waves*: a node's wave is one more than the
deepest wave among its inputs that are submitted in the same launch. The nodes of one
stage in one wave go out as one job array (split at the cluster's `MaxArraySize`), with
`afterok` on the arrays holding their inputs, and on the job of any input that is
still queued or running from an earlier launch. A whole grid is a handful of `sbatch`
calls, and the launcher can exit: SLURM starts each array when its inputs are done, and
with `DependencyParameters=kill_invalid_depend` cancels it when one of them failed.

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


def sacct(job_ids: Iterable[str]) -> dict[str, JobState] | None:
    """Final states of `job_ids` from accounting, or None where there is none (sacct
    fails without slurmdbd: then the store and squeue have to do)."""
    bases = sorted({job_id.split("_")[0] for job_id in job_ids if job_id})
    if not bases:
        return {}
    result = _run(["sacct", "-n", "-P", "-X", "-j", ",".join(bases), "-o", "JobID,State,ExitCode,Reason"])
    if result.returncode != 0:
        return None
    jobs = {}
    for line in result.stdout.splitlines():
        parts = line.split("|")
        if len(parts) < 3:
            continue
        job_id, state, exit_code = parts[0], parts[1].split()[0] if parts[1] else "", parts[2]
        reason = parts[3] if len(parts) > 3 and parts[3] not in ("", "None") else ""
        detail = f"exit code {exit_code}" + (f", {reason}" if reason else "")
        jobs[job_id] = JobState(job_id, state, detail)
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
    """One sbatch call: nodes of one stage in one wave."""

    index: int
    stage: StageName
    wave: int
    nodes: list[Node]
    after: list[int] = field(default_factory=list)
    """Indices of arrays of this launch that hold inputs of these nodes."""
    after_jobs: list[str] = field(default_factory=list)
    """Job ids of inputs still queued or running from an earlier launch."""
    job_id: str | None = None


def plan_arrays(nodes: Sequence[Node], live_inputs: dict[str, str], size: int) -> list[Array]:
    """Group `nodes` (in plan order: inputs first) into dependency-ordered arrays.

    `live_inputs` maps the key of a node not in `nodes` that is queued or running in
    SLURM to its job id; inputs that are neither there nor in `nodes` must be done.
    """
    submitted = {node.key for node in nodes}
    wave: dict[str, int] = {}
    for node in nodes:
        wave[node.key] = 1 + max((wave[dep.key] for dep in node.inputs.values() if dep.key in submitted), default=-1)
    groups: dict[tuple[int, StageName], list[Node]] = {}
    for node in nodes:
        groups.setdefault((wave[node.key], node.stage), []).append(node)
    arrays: list[Array] = []
    array_of: dict[str, int] = {}
    for (level, stage), members in sorted(groups.items(), key=lambda item: item[0][0]):
        for start in range(0, len(members), size):
            chunk = members[start:start + size]
            array = Array(index=len(arrays), stage=stage, wave=level, nodes=chunk)
            inputs = [dep for node in chunk for dep in node.inputs.values()]
            array.after = sorted({array_of[dep.key] for dep in inputs if dep.key in array_of})
            array.after_jobs = sorted({live_inputs[dep.key] for dep in inputs if dep.key in live_inputs})
            arrays.append(array)
            for node in chunk:
                array_of[node.key] = array.index
    return arrays


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
    ids = [arrays[i].job_id or f"<array {i}>" for i in array.after] + list(array.after_jobs)
    return "afterok:" + ":".join(str(i) for i in ids) if ids else None


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
                jobs.append(executor.submit(NodeJob(store_url, f"{node.stage}/{node.key}", profile.max_requeues)))
        array.job_id = jobs[0].job_id.split("_")[0]
        for node, job in zip(array.nodes, jobs):
            on_submit(node, job.job_id)
