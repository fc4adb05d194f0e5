"""Run one node on a compute node (or a laptop): the only way a node's work happens.

    python -m xstilts.jobs.entry --store URL --ref STAGE/KEY [--job-id ID]

Order of events, chosen so that a crash at any point leaves the store readable and the
node re-runnable: take the lease (or exit: someone else runs it), record the attempt,
fetch inputs, run the stage into a private scratch folder, upload it, write
`result.json`, mark the state done, write `DONE` last, release the lease. Each write
after the lease is taken is fenced (`Lease.check`): a process that stalled past its
lease and was superseded stops with EXIT_SUPERSEDED and writes nothing more.

Torch is imported only by the stage modules, after the lease is held.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from xstilts.core.allocation import process_rank
from xstilts.core.lease import Lease, LeaseLost
from xstilts.core.nodes import AnyNodeConfig, NodeRecord, NodeRecordError, parse_node_record
from xstilts.core.provenance import run_provenance
from xstilts.jobs.device_facts import device_facts
from xstilts.core.stages import is_checkpointable, stage_module
from xstilts.core.state import finish_attempt, node_done, start_attempt, update_state
from xstilts.core.commit_record import done_marker
from xstilts.core.store import DONE, Store, cache_root
from xstilts.jobs.stages.base import CheckpointPolicy, Preempted, StageContext

EXIT_DONE = 0
EXIT_FAILED = 1
EXIT_BUSY = 3
EXIT_INTERRUPTED = 143
EXIT_REQUEUE = 75  # EX_TEMPFAIL: preempted after a checkpoint; run me again
EXIT_SUPERSEDED = 4  # stalled past the lease TTL and taken over: another process runs the node

log = logging.getLogger("xstilts.entry")


class Interrupted(BaseException):
    """A stop signal arrived in a stage that cannot checkpoint: stop now, record it, let
    the node be run again from the start."""


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)
"""SIGUSR2 is what SLURM sends (through submitit's `--signal`) before preemption or the
time limit; SIGTERM/SIGINT come from `xstilts cancel`, the local launcher or a user."""
CANCEL_SIGNALS = ("SIGTERM", "SIGINT")
"""A training stage stopped by one of these checkpoints but asks for no requeue."""


class StopHandler:
    """Turns the first stop signal into a checkpoint request or an interruption.

    A checkpointable stage (training) gets `stop` set and saves a checkpoint at its next
    step boundary, then raises `Preempted`. Any other stage is interrupted at once.
    Later signals are ignored: the launcher and `xstilts cancel` may both send one, and
    the second must not break the bookkeeping of the first.
    """

    def __init__(self, checkpointable: bool, stop: threading.Event) -> None:
        self.checkpointable = checkpointable
        self.stop = stop
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        self._previous = {sig: signal.signal(sig, self) for sig in STOP_SIGNALS}

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def __call__(self, signum: int, _frame: Any) -> None:
        if self.received is not None:
            return
        self.received = signal.Signals(signum).name
        if self.checkpointable:
            log.warning("%s received: checkpointing at the next step", self.received)
            self.stop.set()
            return
        raise Interrupted(self.received)


def fetch_input(store: Store, ref: str) -> Path:
    """A local directory with a finished input node's files.

    Finished nodes never change (same key, same content), so a download is cached by
    key and reused by every later node on this machine.
    """
    stage, key = ref.split("/")
    remote = store.node_path(stage, key)
    missing = node_done(store, remote)
    if missing is not None:
        raise RuntimeError(f"input node {ref} is not done: {missing}")
    if store.is_local:
        return Path(remote)
    final = cache_root() / "nodes" / stage / key
    if not (final / DONE).exists():
        final.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=final.parent))  # same filesystem: rename is atomic
        store.local_dir(remote, partial)
        if final.exists() and not (final / DONE).exists():  # an incomplete copy (older versions)
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.rename(partial, final)
        except OSError:  # another process on this machine (a tune trial) got there first
            if not (final / DONE).exists():
                raise
            shutil.rmtree(partial, ignore_errors=True)
    return final


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _agree(decision: str, world_size: int) -> str:
    """Rank 0's decision (run / done / busy), shared with every rank."""
    if world_size == 1:
        return decision
    from xstilts.jobs.distributed import init_distributed  # torch: only multi-process nodes need it

    init_distributed()
    import torch.distributed as dist

    box = [decision]
    dist.broadcast_object_list(box, src=0)
    return str(box[0])


def run_node(store_url: str, ref: str, job_id: str | None = None) -> int:
    """Run the node `ref` ('stage/key') of the store at `store_url`; returns an exit code.

    With several processes (torchrun / SLURM tasks), rank 0 owns the bookkeeping (lease,
    state, upload, DONE) and every rank runs the stage.
    """
    store = Store(store_url)
    stage, key = ref.split("/")
    node_dir = store.node_path(stage, key)
    # read before any process group exists, so that only rank 0 takes the lease
    rank, world_size = process_rank()
    job_id = job_id or os.environ.get("SLURM_JOB_ID") or f"pid-{os.getpid()}"
    # Own the stop signals from the first moment: a preemption signal that arrives while
    # the lease is being taken must still become a clean stop, never a half-recorded run.
    handler = StopHandler(is_checkpointable(stage), threading.Event())
    handler.install()
    try:
        lease = Lease(store, node_dir, {"job_id": job_id}, on_lost=handler.stop.set)
        node, problem = read_node(store, node_dir)
        decision = "run"
        if rank == 0:
            if node is None:
                log.error("%s", problem)
                decision = "failed"
            elif node_done(store, node_dir) is None:
                log.info("%s is already done; nothing to do", ref)
                decision = "done"
            elif not lease.acquire():
                log.info("%s is being run by another process; leaving it alone", ref)
                decision = "busy"
            elif node_done(store, node_dir) is None:  # finished between our first look and the lease
                lease.release()
                decision = "done"
        decision = _agree(decision, world_size)
        if decision != "run":
            return {"done": EXIT_DONE, "busy": EXIT_BUSY}.get(decision, EXIT_FAILED)
        assert node is not None
        return _run_leased(store, node, node_dir, lease, job_id, rank, world_size, handler)
    except Interrupted:
        return EXIT_INTERRUPTED
    finally:
        handler.restore()


def read_node(store: Store, node_dir: str) -> tuple[NodeRecord[AnyNodeConfig] | None, str]:
    """The typed node.json of `node_dir`, or None and why not (absent, torn or foreign):
    a node that cannot be read is not run."""
    path = f"{node_dir}/node.json"
    data = store.read_json(path)
    if data is None:
        if store.exists(path):
            return None, f"{path} is torn (not valid JSON); `xstilts launch` writes it again"
        return None, f"no node.json at {node_dir}: was the experiment launched?"
    try:
        return parse_node_record(data, where=path), ""
    except NodeRecordError as exc:
        return None, f"{exc}\n(written by another version of xstilts? `xstilts launch` writes it again)"


def _run_leased(
    store: Store, node: NodeRecord[AnyNodeConfig], node_dir: str, lease: Lease, job_id: str, rank: int,
    world_size: int, handler: StopHandler,
) -> int:
    stage, key = node.stage, node.key
    ref = node.ref
    attempt: dict[str, Any] = {"id": f"g{lease.generation}" if rank == 0 else "", "job_id": job_id,
                               "host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}

    def commit(write: Any, *args: Any) -> Any:
        """One write of the node's outcome, made only while this process holds the
        newest lease generation (fencing): a superseded process raises LeaseLost here."""
        lease.check()
        return write(*args)

    def finish(outcome: str, error: str | None = None) -> dict[str, Any]:
        """The state as written (rank 0 writes it; other ranks return an empty one)."""
        if rank != 0:
            return {}
        return commit(update_state, store, node_dir, lambda state: finish_attempt(state, attempt, outcome, error))

    if rank == 0:
        commit(update_state, store, node_dir, lambda state: start_attempt(state, attempt))
    scratch = Path(tempfile.mkdtemp(prefix=f"xstilts-{key}-r{rank}-", dir=os.environ.get("XSTILTS_SCRATCH")))
    try:
        if rank == 0:
            # Asked after the attempt is on record (git and CUDA take about a second: a stop
            # meanwhile must still be recorded as one); written with the attempt's outcome
            # (`core.state.finish_attempt`). Only rank 0 writes the attempt.
            attempt["provenance"] = {**run_provenance(world_size, device_facts()), "data": data_provenance_ref(node)}
        inputs = {name: fetch_input(store, input_ref) for name, input_ref in node.inputs.items()}
        ctx = StageContext(
            node=node, out_dir=scratch, inputs=inputs, log=logging.getLogger(f"xstilts.{stage}"),
            node_folder_url=store.url_of(node_dir), stop=handler.stop,
            checkpoint=CheckpointPolicy.from_env(dict(os.environ)), rank=rank, world_size=world_size,
            store_url=store.url, job_id=job_id, fence=lease.check if rank == 0 else _no_fence,
        )
        log.info("running %s (%s) attempt %s", ref, stage, attempt.get("attempt", "-"))
        started = time.time()
        result = importlib.import_module(stage_module(node.stage, node.kind)).run(ctx)
        if rank == 0:
            result = {**(result or {}), "node": {"key": key, "stage": stage, "seconds": round(time.time() - started, 3)}}
            commit(store.upload_dir, scratch, node_dir)
            commit(store.write_json, f"{node_dir}/result.json", result)
            state = finish("done")
            # DONE last, carrying the state and result just written (`core.commit_record`)
            commit(store.write_text, f"{node_dir}/{DONE}", done_marker(time.time(), state, result))
            log.info("%s done in %.1fs", ref, time.time() - started)
        return EXIT_DONE
    except BaseException as exc:  # the job must record why it stopped, whatever it was
        if lease.lost.is_set():
            # Superseded (possibly surfacing as a checkpoint error): the new holder's
            # attempt is the one that counts, and nothing more may be written.
            log.warning("%s: %s", ref, exc if isinstance(exc, LeaseLost) else f"lease lost ({type(exc).__name__})")
            return EXIT_SUPERSEDED
        try:
            return _record_stop(exc, ref, handler, finish)
        except LeaseLost as lost:
            log.warning("%s: %s", ref, lost)
            return EXIT_SUPERSEDED
    finally:
        if rank == 0:
            lease.release()
        shutil.rmtree(scratch, ignore_errors=True)
        if world_size > 1:
            from xstilts.jobs.distributed import destroy  # the group was created by _agree

            destroy()


def data_provenance_ref(node: NodeRecord[AnyNodeConfig]) -> dict[str, Any] | None:
    """Where the data this attempt read is described, by reference (the descriptions
    can be long: one entry per hub split): a prepare-data node's own `result.json`
    (`jobs.stages.prepare_data._provenance`), or the prepare-data nodes among its inputs."""
    if node.stage == "prepare" and node.kind == "data":
        return {"result": "result.json", "keys": ["hub", "data_revision", "data_files"]}
    inputs = {name: ref for name, ref in node.inputs.items() if name == "data" or name.startswith("data.")}
    return {"inputs": inputs} if inputs else None


def _no_fence() -> None:
    """Ranks other than 0 hold no lease and commit nothing: nothing to check."""


def _record_stop(exc: BaseException, ref: str, handler: StopHandler, finish: Any) -> int:
    """Record why the stage stopped (preempted, interrupted or failed); the exit code."""
    if isinstance(exc, Preempted) and handler.received in CANCEL_SIGNALS:
        # A cancel (scancel, `xstilts cancel`, Ctrl-C), not a preemption: SLURM announces
        # preemption and time limits with SIGUSR2 first. The checkpoint stays for the next
        # launch, but the job must not requeue itself: it would outlive the cancel.
        log.warning("%s stopped by %s after a checkpoint (%s); not requeued", ref, handler.received, exc)
        finish("interrupted", f"interrupted by {handler.received} after a checkpoint: {exc}")
        return EXIT_INTERRUPTED
    if isinstance(exc, Preempted):
        log.warning("%s preempted after a checkpoint (%s); asking to be requeued", ref, exc)
        finish("preempted", f"preempted by {handler.received}: {exc}")
        return EXIT_REQUEUE
    if isinstance(exc, Interrupted):
        log.warning("%s interrupted by %s", ref, exc)
        finish("interrupted", f"interrupted by {exc}")
        return EXIT_INTERRUPTED
    if handler.received is not None:
        # Libraries sometimes turn a signal into another exception: still a stop.
        log.warning("%s interrupted by %s (surfaced as %s)", ref, handler.received, type(exc).__name__)
        finish("interrupted", f"interrupted by {handler.received}")
        return EXIT_INTERRUPTED
    details = traceback.format_exc()
    log.error("%s failed: %s\n%s", ref, exc, details)
    finish("failed", _tail(f"{type(exc).__name__}: {exc}\n{details}"))
    return EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xstilts.jobs.entry", description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="storage root URL")
    parser.add_argument("--ref", required=True, help="STAGE/KEY of the node to run")
    parser.add_argument("--job-id", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    return run_node(args.store, args.ref, args.job_id)


if __name__ == "__main__":
    sys.exit(main())
