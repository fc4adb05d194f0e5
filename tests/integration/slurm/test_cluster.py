"""Smoke tests of the throw-away SLURM cluster: each checks one behaviour the product's SLURM
tests rely on (name resolution in jobs, multi-node steps, arrays, dependencies, preemption
signals and requeue, submitit, sacct with and without accounting, clean shutdown)."""

from __future__ import annotations

import os
import re
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import submitit

from tests.integration.slurm.cluster import Cluster

pytestmark = pytest.mark.integration

SIGREC = Path(__file__).with_name("sigrec.py")


def _wait(what: str, predicate: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


# ------------------------------------------------------------------ the cluster itself

def test_both_nodes_idle_and_configured(slurm: Cluster) -> None:
    nodes = slurm.run("scontrol", "show", "node", "-o", check=True).stdout
    states = dict(re.findall(r"NodeName=(\S+) .*?State=(\S+)", nodes))
    assert states == {"n1": "IDLE", "n2": "IDLE"}
    assert slurm.nodes_up()
    config = slurm.run("scontrol", "show", "config", check=True).stdout
    setting = dict(re.findall(r"^(\w+)\s+= (.*)$", config, re.MULTILINE))
    assert setting["MaxArraySize"] == str(slurm.max_array_size)
    assert setting["AccountingStorageType"] == "accounting_storage/none"
    assert setting["PreemptType"] == "preempt/partition_prio"
    assert setting["PreemptMode"] == "REQUEUE"
    assert "kill_invalid_depend" in setting["DependencyParameters"]
    partitions = slurm.run("scontrol", "show", "partition", "-o", check=True).stdout
    assert "PartitionName=low " in partitions and f"GraceTime={slurm.grace_time} " in partitions
    assert "PartitionName=high " in partitions


def test_job_resolves_node_names(slurm: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "job.out"
    job = slurm.sbatch("-o", str(out), "--wrap", "hostname; getent hosts n1")
    assert slurm.wait_for_job(job) == {job: "COMPLETED"}
    hostname, n1 = out.read_text().splitlines()
    assert hostname == socket.gethostname()
    address, *names = n1.split()
    assert address == "127.0.0.1" and "n1" in names


def test_two_node_job_runs_on_n1_and_n2(slurm: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "job.out"
    job = slurm.sbatch("-N", "2", "-o", str(out), "--wrap", "srun hostname; srun printenv SLURMD_NODENAME")
    assert slurm.wait_for_job(job) == {job: "COMPLETED"}
    lines = out.read_text().splitlines()
    assert lines[:2] == [socket.gethostname()] * 2
    assert sorted(lines[2:]) == ["n1", "n2"]


def test_job_pids_are_host_pids(slurm: Cluster, tmp_path: Path) -> None:
    """No PID namespace: what a job records as its PID can be signalled from the test (the
    product checks a lease's owner with os.kill(pid, 0))."""
    out = tmp_path / "job.out"
    job = slurm.sbatch("-o", str(out), "--wrap", "echo $$; exec sleep 300")
    _wait("the job's PID", lambda: out.exists() and out.read_text().strip() != "")
    pid = int(out.read_text())
    _wait("the exec", lambda: _cmdline(pid).startswith("sleep 300"))
    assert pid in slurm.pids()
    os.kill(pid, 9)
    assert slurm.wait_for_job(job) == {job: "FAILED"}


def test_array_of_five_tasks_completes(slurm: Cluster, tmp_path: Path) -> None:
    job = slurm.sbatch("-a", "1-5", "-o", str(tmp_path / "task-%a.out"), "--wrap", "echo $SLURM_ARRAY_TASK_ID")
    assert slurm.wait_for_job(job) == {f"{job}_{i}": "COMPLETED" for i in range(1, 6)}
    assert [(tmp_path / f"task-{i}.out").read_text().strip() for i in range(1, 6)] == ["1", "2", "3", "4", "5"]


def test_slow_job_ends_keep_a_finished_job_completing_in_squeue(slurm: Cluster, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with slurm.slow_job_ends(6):
        job = slurm.sbatch("-o", "/dev/null", "--wrap", f"touch {marker}")
        _wait("the batch script", marker.exists)
        _wait("the job to complete", lambda: slurm.run("squeue", "-h", "-j", job, "-o", "%T").stdout.strip()
              in ("COMPLETING", ""))
        assert slurm.run("squeue", "-h", "-j", job, "-o", "%T").stdout.strip() == "COMPLETING"
        assert slurm.wait_for_job(job, timeout=30) == {job: "COMPLETED"}
    job = slurm.sbatch("-o", "/dev/null", "--wrap", "true")  # without it, a job ends at once
    assert slurm.wait_for_job(job, timeout=5) == {job: "COMPLETED"}


def test_afterok_on_a_failed_job_is_cancelled(slurm: Cluster, tmp_path: Path) -> None:
    failed = slurm.sbatch("-o", "/dev/null", "--wrap", "exit 3")
    after = slurm.sbatch("-d", f"afterok:{failed}", "-o", "/dev/null", "--wrap", f"touch {tmp_path}/ran")
    assert slurm.wait_for_job(after) == {after: "CANCELLED"}
    assert slurm.wait_for_job(failed) == {failed: "FAILED"}
    reason = slurm.run("squeue", "--states=all", "-h", "-j", after, "-o", "%r").stdout.strip()
    assert reason == "DependencyNeverSatisfied"
    assert not (tmp_path / "ran").exists()


def test_sacct_fails_without_accounting_but_jobcomp_records(slurm: Cluster) -> None:
    job = slurm.sbatch("-o", "/dev/null", "--wrap", "true")
    assert slurm.wait_for_job(job) == {job: "COMPLETED"}
    sacct = slurm.run("sacct", "-j", job)
    assert sacct.returncode != 0
    assert "accounting storage is disabled" in sacct.stdout + sacct.stderr
    _wait("the jobcomp record", lambda: f"JobId={job} " in slurm.jobcomp_log.read_text(), timeout=10)
    record = next(line for line in slurm.jobcomp_log.read_text().splitlines() if f"JobId={job} " in line)
    assert "JobState=COMPLETED" in record


def test_two_clusters_run_side_by_side(slurm_cluster: Cluster, slurm_cluster_accounting: Cluster) -> None:
    assert slurm_cluster.nodes_up() and slurm_cluster_accounting.nodes_up()
    assert slurm_cluster.root != slurm_cluster_accounting.root
    assert slurm_cluster.env["SLURM_CONF"] != slurm_cluster_accounting.env["SLURM_CONF"]
    names = {c.run("scontrol", "show", "config").stdout.split("ClusterName", 1)[1].split()[1]
             for c in (slurm_cluster, slurm_cluster_accounting)}
    assert len(names) == 2


def test_max_array_size_and_stop_leaves_nothing_running(tmp_path: Path) -> None:
    with Cluster(max_array_size=10) as small:
        assert small.startup_seconds is not None and small.startup_seconds < 30
        too_big = small.run("sbatch", "-a", "0-10", "-o", "/dev/null", "--wrap", "true")
        assert too_big.returncode != 0 and "array" in too_big.stderr.lower()
        job = small.sbatch("-o", "/dev/null", "--wrap", "sleep 300")
        small.wait_for_job(job, timeout=30, done=lambda states: states.get(job) == "RUNNING")
        _wait("the job's sleep", lambda: any(_cmdline(pid).startswith("sleep") for pid in small.pids()))
        pids = small.pids()
        namespace = os.readlink(f"/proc/{pids[0]}/ns/mnt")
        root = small.root
        assert len(pids) >= 7  # nsinit, munged, slurmctld, 2 slurmd, slurmstepd, sleep
    alive = [pid for pid in pids if _namespace(pid) == namespace]
    assert alive == []
    assert not root.exists()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


# ------------------------------------------------------------------ preemption

def _signals(log: Path) -> list[tuple[float, str, int, str]]:
    """(time, label, restart count, event) of each line sigrec.py wrote."""
    events = []
    for line in log.read_text().splitlines():
        stamp, label, _job_step, restart, event = line.split()
        events.append((float(stamp), label, int(restart.split("=")[1]), event))
    return events


def _first(events: Sequence[tuple[float, str, int, str]], label: str, event: str) -> float | None:
    return next((t for t, who, restart, what in events if who == label and restart == 0 and what == event), None)


def test_preemption_signals_then_requeues(slurm: Cluster, tmp_path: Path) -> None:
    """A `high` job preempts two `low` jobs. Observed (and asserted): at once the user signal of
    --signal goes, with SIGCONT, to the batch shell only with `B:`, else to every process of the
    job's steps (not the batch shell: submitit's case); SIGTERM follows no earlier than GraceTime
    later (the controller checks on a ~12 s cycle, so GraceTime=5 gives ~12 s), SIGKILL KillWait
    after that; then the job is requeued and starts again with SLURM_RESTART_COUNT=1."""
    log = tmp_path / "signals.log"
    record = f"{sys.executable} {SIGREC} {log}"
    low = ("-p", "low", "-N", "1", "--exclusive", "--requeue", "-t", "10")
    batch_job = slurm.sbatch(*low, "--signal=B:USR2@300", "-o", str(tmp_path / "batch.out"),
                             "--wrap", f"exec {record} batch")
    step_job = slurm.sbatch(*low, "--signal=USR2@300", "-o", str(tmp_path / "step.out"),
                            "--wrap", f"{record} step-batch & srun {record} step; wait")
    started = lambda: {who for _, who, r, what in _signals(log) if what == "start" and r == 0}  # noqa: E731
    _wait("the low jobs", lambda: log.exists() and started() == {"batch", "step-batch", "step"})
    submitted = time.time()
    high = slurm.sbatch("-p", "high", "-N", "2", "--exclusive", "-o", "/dev/null", "--wrap", "sleep 1")
    assert slurm.wait_for_job(high, timeout=90) == {high: "COMPLETED"}
    restarted = lambda: {who for _, who, r, what in _signals(log) if what == "start" and r == 1}  # noqa: E731
    _wait("the requeued low jobs", lambda: restarted() >= {"batch", "step"}, timeout=60)

    events = _signals(log)
    for label in ("batch", "step"):
        usr2, term = _first(events, label, "SIGUSR2"), _first(events, label, "SIGTERM")
        assert usr2 is not None and term is not None, (label, events)
        assert usr2 - submitted < 5, (label, events)  # sent when the high job is scheduled
        assert _first(events, label, "SIGCONT") is not None
        assert term - usr2 >= slurm.grace_time - 0.5, (label, events)
    # Without B: the batch shell gets no user signal, only the final SIGTERM.
    assert _first(events, "step-batch", "SIGUSR2") is None
    assert _first(events, "step-batch", "SIGTERM") is not None
    states = slurm.job_states(f"{batch_job},{step_job}")
    assert set(states.values()) <= {"RUNNING", "PENDING"}, states


# ------------------------------------------------------------------ submitit, as the product submits

def _square(x: int) -> tuple[int, str | None]:
    return x * x, os.environ.get("SLURMD_NODENAME")


def _rendezvous() -> tuple[int, str, str]:
    env = submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    return env.rank, env.master_addr, socket.gethostbyname(env.master_addr)


def _wait_done(jobs: Sequence[submitit.Job[Any]], timeout: float = 60) -> None:
    # job.result() would wait forever on a job that never writes its result.
    _wait("submitit jobs", lambda: all(job.done() for job in jobs), timeout)


@pytest.mark.filterwarnings("ignore:.*sacct.*")  # no accounting: submitit warns on each poll
def test_submitit_runs_functions(slurm_environ: Cluster, tmp_path: Path) -> None:
    executor = submitit.SlurmExecutor(folder=tmp_path / "submitit")
    executor.update_parameters(partition="low", time=5)
    single = executor.submit(_square, 7)
    with executor.batch():  # one array job, as the product submits a stage
        batch = [executor.submit(_square, i) for i in range(3)]
    _wait_done([single, *batch])
    value, node = single.result()
    assert value == 49 and node in ("n1", "n2")
    assert [job.result()[0] for job in batch] == [0, 1, 4]
    assert "_" in batch[0].job_id  # an array


@pytest.mark.filterwarnings("ignore:.*sacct.*")
def test_submitit_two_nodes_master_addr_resolves(slurm_environ: Cluster, tmp_path: Path) -> None:
    executor = submitit.SlurmExecutor(folder=tmp_path / "submitit")
    executor.update_parameters(partition="low", time=5, nodes=2, ntasks_per_node=1)
    job = executor.submit(_rendezvous)
    _wait_done([job])
    results = sorted(job.results())
    assert [rank for rank, _, _ in results] == [0, 1]
    assert {(addr, ip) for _, addr, ip in results} == {("n1", "127.0.0.1")}


# ------------------------------------------------------------------ accounting

def test_sacct_shows_completed_with_accounting(slurm_accounting: Cluster, tmp_path: Path) -> None:
    assert slurm_accounting.accounting
    job = slurm_accounting.sbatch("-o", "/dev/null", "--wrap", "hostname")
    assert slurm_accounting.wait_for_job(job) == {job: "COMPLETED"}

    def state() -> str:
        return slurm_accounting.run("sacct", "-n", "-X", "-P", "-j", job, "-o", "State").stdout.strip()

    _wait("sacct to record the job", lambda: state() == "COMPLETED", timeout=20)


def test_submitit_reads_state_from_sacct(slurm_accounting_environ: Cluster, tmp_path: Path) -> None:
    executor = submitit.SlurmExecutor(folder=tmp_path / "submitit")
    executor.update_parameters(partition="low", time=5)
    job = executor.submit(_square, 3)
    _wait_done([job])
    assert job.result()[0] == 9
    _wait("submitit to see COMPLETED", lambda: job.watcher.get_state(job.job_id, mode="force") == "COMPLETED",
          timeout=20)
