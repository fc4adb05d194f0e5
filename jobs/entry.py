"""Run one node on a compute node (or a laptop): the only way a node's work happens.

    python -m jobs.entry --store URL --node STAGE/KEY [--job-id ID]

Order of events, chosen so that a crash at any point leaves the store readable and the
node re-runnable: take the lease (or exit: someone else runs it), record the attempt,
fetch inputs, run the stage into a private scratch folder, upload it, write
`result.json`, mark the state done, write `DONE` last, release the lease.

Torch is imported only by the stage modules, after the lease is held.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from jobs.stages.base import StageContext, stage_module
from launcher.lease import Lease
from launcher.state import update_state
from launcher.store import DONE, Store

EXIT_DONE = 0
EXIT_FAILED = 1
EXIT_BUSY = 3
EXIT_INTERRUPTED = 143

log = logging.getLogger("xstilts.entry")


class Interrupted(BaseException):
    """SIGTERM/SIGINT arrived: stop now, record it, let the node be run again."""


_stop_signal: str | None = None
"""Set by the first stop signal. Libraries sometimes catch BaseException and re-raise
something else; a failure after a stop request is still an interruption, not a fault of
the node, so it must not be recorded as `failed` (which a relaunch would not retry)."""


def _raise_interrupted(signum: int, _frame: Any) -> None:
    global _stop_signal
    _stop_signal = signal.Signals(signum).name
    # One stop is enough: a second signal (launcher and `cancel` both send one) must not
    # interrupt the bookkeeping that records the first.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signal.Signals(signum).name)


def cache_root() -> Path:
    return Path(os.environ.get("XSTILTS_CACHE", Path.home() / ".cache" / "xstilts"))


def fetch_input(store: Store, ref: str) -> Path:
    """A local directory with a finished input node's files.

    Finished nodes never change (same key, same content), so a download is cached by
    key and reused by every later node on this machine.
    """
    stage, key = ref.split("/")
    remote = store.node_path(stage, key)
    if not store.exists(f"{remote}/{DONE}"):
        raise RuntimeError(f"input node {ref} is not done")
    if store.is_local:
        return Path(remote)
    final = cache_root() / "nodes" / stage / key
    if not (final / DONE).exists():
        partial = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=final.parent if final.parent.exists() else None))
        store.local_dir(remote, partial)
        final.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
    return final


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run_node(store_url: str, ref: str, job_id: str | None = None) -> int:
    """Run the node `ref` ('stage/key') of the store at `store_url`; returns an exit code."""
    store = Store(store_url)
    stage, key = ref.split("/")
    node_dir = store.node_path(stage, key)
    node = store.read_json(f"{node_dir}/node.json")
    if node is None:
        log.error("no node.json at %s: was the experiment launched?", node_dir)
        return EXIT_FAILED
    if store.exists(f"{node_dir}/{DONE}"):
        log.info("%s is already done; nothing to do", ref)
        return EXIT_DONE

    job_id = job_id or os.environ.get("SLURM_JOB_ID") or f"pid-{os.getpid()}"
    lease = Lease(store, node_dir, {"job_id": job_id})
    if not lease.acquire():
        log.info("%s is being run by another process; leaving it alone", ref)
        return EXIT_BUSY
    if store.exists(f"{node_dir}/{DONE}"):  # finished between our first look and the lease
        lease.release()
        return EXIT_DONE

    attempt: dict[str, Any] = {"job_id": job_id, "host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}

    def start(state: dict[str, Any]) -> None:
        state["status"] = "running"
        attempt["attempt"] = len(state.setdefault("attempts", [])) + 1
        state["attempts"].append(attempt)

    def finish(outcome: str, error: str | None = None) -> None:
        def change(state: dict[str, Any]) -> None:
            state["status"] = outcome
            state["attempts"][-1].update(ended=time.time(), outcome=outcome, error=error)
            state["last_error"] = error

        update_state(store, node_dir, change)

    update_state(store, node_dir, start)
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGTERM, signal.SIGINT)}
    scratch = Path(tempfile.mkdtemp(prefix=f"xstilts-{key}-", dir=os.environ.get("XSTILTS_SCRATCH")))
    try:
        inputs = {name: fetch_input(store, input_ref) for name, input_ref in node["inputs"].items()}
        ctx = StageContext(node=node, out_dir=scratch, inputs=inputs, log=logging.getLogger(f"xstilts.{stage}"))
        log.info("running %s (%s) attempt %s", ref, stage, attempt["attempt"])
        started = time.time()
        result = importlib.import_module(stage_module(node)).run(ctx)
        result = {**(result or {}), "node": {"key": key, "stage": stage, "seconds": round(time.time() - started, 3)}}
        store.upload_dir(scratch, node_dir)
        store.write_json(f"{node_dir}/result.json", result)
        finish("done")
        store.write_text(f"{node_dir}/{DONE}", f"{time.time()}\n")
        log.info("%s done in %.1fs", ref, time.time() - started)
        return EXIT_DONE
    except Interrupted as exc:
        log.warning("%s interrupted by %s", ref, exc)
        finish("interrupted", f"interrupted by {exc}")
        return EXIT_INTERRUPTED
    except Exception as exc:  # the job must record why it failed, whatever it was
        if _stop_signal is not None:
            log.warning("%s interrupted by %s (surfaced as %s)", ref, _stop_signal, type(exc).__name__)
            finish("interrupted", f"interrupted by {_stop_signal}")
            return EXIT_INTERRUPTED
        details = traceback.format_exc()
        log.error("%s failed: %s\n%s", ref, exc, details)
        finish("failed", _tail(f"{type(exc).__name__}: {exc}\n{details}"))
        return EXIT_FAILED
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        lease.release()
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.entry", description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="storage root URL")
    parser.add_argument("--node", required=True, help="STAGE/KEY of the node to run")
    parser.add_argument("--job-id", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    return run_node(args.store, args.node, args.job_id)


if __name__ == "__main__":
    sys.exit(main())
