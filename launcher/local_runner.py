"""The `local` executor: run a plan's nodes as processes on this machine.

A small scheduler over subprocesses: nodes start when their inputs are done, at most
`profile.max_parallel` at once, each as `python -m xstilts.jobs.entry` in its own session (so a
killed launcher does not take running nodes with it: they finish and commit, and the
next launch finds them done or still leased and waits). The node process takes the
node's lease, so two launchers never run one node twice.

Run detached (`xstilts launch` without `--wait`) it is `python -P -m xstilts.launcher.local_runner`,
given the launch record that `xstilts launch` wrote (`launcher.launch_record`): the
profile and the spec it runs are that launch's, whatever the files say by then.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from xstilts.core.allocation import usable_cpus
from xstilts.core.lease import current_lease
from xstilts.core.process import ProcessIdentity
from xstilts.core.stages import facts
from xstilts.core.plan import Node, Plan
from xstilts.launcher.profiles import LocalProfile, profile_from_json
from xstilts.launcher.executors.base import SAFE_PATH_ENV
from xstilts.launcher.selection import FAILED, select_nodes
from xstilts.core.state import node_status, record_submission
from xstilts.core.store import Store, cache_root

POLL_S = 0.3
LIVE = frozenset({"running"})
"""Statuses a local launch leaves alone: a live lease. A `queued` node without one was
recorded by a scheduler that is gone, so it is started again."""
SCHEDULERS_DIR = "local-schedulers"
"""Under the experiment folder: one marker per running detached scheduler."""


@dataclass
class _Running:
    node: Node
    process: subprocess.Popen[bytes]
    log_path: Path
    log_handle: IO[bytes]
    started: float
    submission: str


@dataclass
class RunSummary:
    """What one scheduler run did."""

    done: list[str] = field(default_factory=list)  # keys completed by this run
    failed: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)  # not run: an input failed
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not (self.failed or self.blocked or self.interrupted)


def local_log_path(store: Store, node: Node, submission: str) -> Path:
    """Where a node process writes its log: inside the node folder when the store is a
    local filesystem (so `xstilts logs` can read it live), else a local cache."""
    if store.is_local:
        return Path(store.node_path(node.stage, node.key, "logs", f"{submission}.log"))
    return cache_root() / "logs" / node.stage / node.key / f"{submission}.log"


class LocalRunner:
    """Runs the not-yet-done nodes of a plan in dependency order."""

    def __init__(
        self,
        store: Store,
        plan: Plan,
        profile: LocalProfile,
        retry_failed: bool = False,
        on_event: Callable[[str, Node, str], None] | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.store = store
        self.plan = plan
        self.profile = profile
        self.retry_failed = retry_failed
        self.on_event = on_event or (lambda kind, node, detail: None)
        self.extra_env = dict(extra_env or {})
        self.running: dict[str, _Running] = {}
        self.done: set[str] = set()
        self.failed: set[str] = set()
        self.retrying: set[str] = set()
        self._stop_signal: int | None = None

    # -- helpers -------------------------------------------------------------------------
    def _node_dir(self, node: Node) -> str:
        return self.store.node_path(node.stage, node.key)

    def _procs(self, node: Node) -> int:
        """Processes for a node: several (torch.distributed ranks) only for stages that
        run as ranks; a tune node is one process per host, and this is one host."""
        return self.profile.procs_per_node if facts(node.stage).processes == "ranks" else 1

    def _env(self, node: Node) -> dict[str, str]:
        threads = str(max(1, usable_cpus() // (self.profile.max_parallel * self._procs(node))))
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        env.update(self.extra_env)
        env.update(self.profile.env)
        env.update(SAFE_PATH_ENV)
        return env

    def _command(self, node: Node, submission: str) -> list[str]:
        entry = ["-m", "xstilts.jobs.entry", "--store", self.store.url, "--ref", node.ref, "--job-id", submission]
        procs = self._procs(node)
        if procs == 1:
            return [sys.executable, "-P", *entry]
        # torchrun on one host: picks a free rendezvous port, sets RANK/WORLD_SIZE/...
        # (our flags must not be prefixes of torchrun's own: argparse abbreviates); its
        # workers inherit PYTHONSAFEPATH from the environment
        return [sys.executable, "-P", "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", *entry]

    def _start(self, node: Node) -> None:
        submission = f"local-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        record_submission(self.store, self._node_dir(node), submission, "local")
        log_path = local_log_path(self.store, node, submission)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(log_path, "ab")
        process = subprocess.Popen(
            self._command(node, submission), stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=self._env(node), start_new_session=True,
        )
        self.running[node.key] = _Running(node, process, log_path, handle, time.time(), submission)
        self.on_event("start", node, submission)

    def _reap(self, summary: RunSummary) -> None:
        for key, run in list(self.running.items()):
            code = run.process.poll()
            if code is None:
                continue
            run.log_handle.close()
            del self.running[key]
            if not self.store.is_local:
                self.store.upload_dir(run.log_path.parent, self.store.node_path(run.node.stage, key, "logs"))
            elapsed = f"{time.time() - run.started:.1f}s"
            # Judge by the store, not the exit code: torchrun folds its workers' codes into 1.
            status, state = node_status(self.store, self._node_dir(run.node))
            if status == "done":
                self.done.add(key)
                summary.done.append(key)
                self.on_event("done", run.node, elapsed)
            elif status == "running":
                self.on_event("busy", run.node, "another process holds its lease; waiting for it")
            elif self._stop_signal is not None:
                continue
            elif status == "preempted" and int(state.get("requeues", 0)) <= self.profile.max_requeues:
                self.on_event("requeued", run.node, f"checkpointed after {elapsed}; starting it again")
                self._start(run.node)
            else:
                self.failed.add(key)
                summary.failed.append(key)
                self.on_event("failed", run.node, f"exit code {code} after {elapsed}; see `xstilts logs`")

    def _handle_signal(self, signum: int, _frame: object) -> None:
        self._stop_signal = signum

    def _statuses(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """Every node's status as this run sees it: the store's, except that nodes it runs
        are running, nodes that failed in it are failed (never retried twice), and nodes
        it was asked to retry are pending until it starts them."""
        statuses: dict[str, tuple[str, dict[str, Any]]] = {}
        for node in self.plan.nodes:
            if node.key in self.running:
                statuses[node.key] = ("running", {})
            elif node.key in self.failed:
                statuses[node.key] = ("failed", {})
            elif node.key in self.done:
                statuses[node.key] = ("done", {})
            elif node.key in self.retrying:
                statuses[node.key] = ("pending", {})
            else:
                statuses[node.key] = node_status(self.store, self._node_dir(node))
                if statuses[node.key][0] == "done":
                    self.done.add(node.key)  # DONE is final: not read again
        return statuses

    # -- main loop -----------------------------------------------------------------------
    def run(self) -> RunSummary:
        summary = RunSummary()
        previous = {sig: signal.signal(sig, self._handle_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        if self.retry_failed:
            self.retrying = {key for key, (status, _) in self._statuses().items() if status in FAILED}
        blocked: tuple[Node, ...] = ()
        try:
            while True:
                self._reap(summary)
                if self._stop_signal is not None:
                    self._terminate_children()
                    summary.interrupted = True
                    break
                statuses = self._statuses()
                selection = select_nodes(self.plan, statuses, retry_failed=False, live=LIVE)
                blocked = selection.blocked
                for node in selection.submit:  # those whose inputs are done start, as slots allow
                    ready = all(statuses[dep.key][0] == "done" for dep in node.inputs.values())
                    if ready and len(self.running) < self.profile.max_parallel:
                        self.retrying.discard(node.key)
                        self._start(node)
                # live: ours, or another launcher's; submit: started now, or waiting for inputs or a slot
                if not self.running and not selection.live and not selection.submit:
                    break
                time.sleep(POLL_S)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        summary.blocked = sorted(node.key for node in blocked)
        return summary

    def _terminate_children(self, grace_s: float = 30.0) -> None:
        """Forward the stop to every node process and wait for them to record it."""
        for run in self.running.values():
            try:
                os.killpg(run.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace_s
        for run in self.running.values():
            try:
                run.process.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(run.process.pid, signal.SIGKILL)
            run.log_handle.close()
            self.on_event("interrupted", run.node, "stopped")
        self.running.clear()


def scheduler_marker(store: Store, experiment: str, identity: ProcessIdentity) -> str:
    """The marker file of one detached scheduler: one file per scheduler, so a second
    detached launch of the same experiment never hides the first from `cancel`."""
    return store.experiment_path(experiment, SCHEDULERS_DIR, f"{identity.host}-{identity.pid}.json")


def stop_local_nodes(store: Store, plan: Plan) -> tuple[int, list[Node]]:
    """Send SIGTERM to every detached scheduler of the experiment on this host, then to
    every process on this host that holds a live lease of the plan's nodes. Returns the
    number of schedulers and the nodes signalled.

    A process is signalled only if it is the one its marker or lease recorded (PID and
    start time, `ProcessIdentity.signal`): a PID reused by another process after a
    scheduler was SIGKILLed is left alone, and the dead scheduler's marker is removed."""
    folder = store.experiment_path(plan.experiment, SCHEDULERS_DIR)
    schedulers = 0
    for name in store.list(folder):
        marker = f"{folder}/{name}"
        record = store.read_json(marker)
        identity = ProcessIdentity.from_record(record) if record else None
        if identity is None or not identity.on_this_host:
            if identity is None:
                store.remove(marker)  # torn: its scheduler cannot be told from a stranger
            continue
        if identity.signal(signal.SIGTERM):
            schedulers += 1
        else:
            store.remove(marker)  # its scheduler is gone (killed without cleaning up)
    signalled = []
    for node in plan.nodes:
        lease = current_lease(store, store.node_path(node.stage, node.key))
        holder = lease.holder if lease is not None and lease.live() else None
        if holder is not None and holder.signal(signal.SIGTERM):
            signalled.append(node)
    return schedulers, signalled


def spawn_detached(store: Store, experiment: str, profile: LocalProfile, retry_failed: bool,
                   launch_id: str | None = None) -> int:
    """Start `python -P -m xstilts.launcher.local_runner` in the background; returns its pid.

    It gets the launch record's id (or, without a record, the resolved profile as JSON),
    not the profile's name: a profile given as a path may not be found again from the
    scheduler's working directory, and a file edited after the launch must not change
    a launch already made."""
    log_dir = Path(store.experiment_path(experiment, "logs")) if store.is_local else None
    if log_dir is None:
        log_dir = cache_root() / "logs" / experiment
    log_dir.mkdir(parents=True, exist_ok=True)
    handle = open(log_dir / "scheduler.log", "ab")
    command = [sys.executable, "-P", "-m", "xstilts.launcher.local_runner", "--store", store.url,
               "--experiment", experiment]
    command += ["--launch", launch_id] if launch_id else ["--profile-json", profile.model_dump_json()]
    if retry_failed:
        command.append("--retry-failed")
    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               env={**os.environ, **SAFE_PATH_ENV}, start_new_session=True)
    # The marker is written here, before `launch` returns, not only by the child once it
    # has read its record and built the plan: a `cancel` right after `launch` must see a
    # scheduler that is still starting (SIGTERM then ends it before it runs anything).
    identity = ProcessIdentity.of(process.pid)
    store.write_json(scheduler_marker(store, experiment, identity), {**identity.as_record(), "started": time.time()})
    return process.pid


def main(argv: list[str] | None = None) -> int:
    """Detached scheduler: rebuild the plan from the launch's spec (or the stored one) and run it."""
    import yaml

    from xstilts.core.plan import build_plan
    from xstilts.core.spec import Spec
    from xstilts.launcher.launch_record import read_record

    parser = argparse.ArgumentParser(prog="python -m xstilts.launcher.local_runner")
    parser.add_argument("--store", required=True)
    parser.add_argument("--experiment", required=True)
    given = parser.add_mutually_exclusive_group(required=True)
    given.add_argument("--launch", help="id of the launch record to run (its profile and spec)")
    given.add_argument("--profile-json", help="the resolved local profile (the spec: the stored spec.yaml)")
    parser.add_argument("--retry-failed", action="store_true")
    args = parser.parse_args(argv)
    store = Store(args.store)
    if args.launch:
        record = read_record(store, args.experiment, args.launch)
        if record is None:
            parser.error(f"no launch record '{args.launch}' of experiment '{args.experiment}' in {store.url}")
        profile, spec_text = record.resolved_profile(), record.spec
    else:
        profile = profile_from_json(args.profile_json)
        stored = store.read_text(store.experiment_path(args.experiment, "spec.yaml"))
        if stored is None:
            parser.error(f"no spec.yaml of experiment '{args.experiment}' in {store.url}: launch materializes it first")
        spec_text = stored
    if not isinstance(profile, LocalProfile):
        parser.error(f"the local scheduler runs local profiles, not '{profile.executor}'")
    spec = Spec.model_validate(yaml.safe_load(spec_text))
    plan = build_plan(spec)
    identity = ProcessIdentity.current()
    marker = scheduler_marker(store, args.experiment, identity)
    store.write_json(marker, {**identity.as_record(), "started": time.time()})

    def report(kind: str, node: Node, detail: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {kind:<11} {node.label} [{node.key}] {detail}", flush=True)

    try:
        summary = LocalRunner(store, plan, profile, args.retry_failed, report,
                              extra_env=spec.job_env()).run()
    finally:
        store.remove(marker)
    print(json.dumps({"done": len(summary.done), "failed": len(summary.failed), "blocked": len(summary.blocked)}))
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
