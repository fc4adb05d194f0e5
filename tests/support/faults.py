"""The fault-injection harness: node processes forked from a warm server, killed at a
failpoint (`xstilts.core.failpoints`), and a relaunch that finishes the grid.

Each node runs in a real process of its own, so SIGKILL at a failpoint is the real thing
(no `finally`, no handler), but it forks from a multiprocessing forkserver that imported
torch, transformers and the stages once: a case costs the node's work, not its imports.
The relaunch does what `xstilts launch` does between node processes: read every node's
status from the store, pick with `select_nodes` what runs, run what is ready, until
nothing is left.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from xstilts.core.plan import Plan
from xstilts.core.state import node_status, read_state
from xstilts.core.store import Store
from xstilts.launcher.selection import select_nodes

WARM_MODULES = ["tests.support.faults_warm"]
"""Imported once by the forkserver; every node process forks from it."""

SIGKILLED = -9


def _node_process(store_url: str, ref: str, env: dict[str, str], log_path: str) -> None:
    """Body of a forked node process: its own environment and log, then the entry."""
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    os.environ.update(env)
    from xstilts.jobs.entry import run_node

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr, force=True)
    code = run_node(store_url, ref, job_id=f"fault-{os.getpid()}")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class NodeProcesses:
    """Starts node processes from a warm forkserver."""

    def __init__(self, log_dir: Path) -> None:
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(WARM_MODULES)
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, store: Store, ref: str, env: Mapping[str, str], log_name: str) -> Any:
        """Start node `ref` in a process of its own; the multiprocessing Process."""
        process = self.context.Process(target=_node_process,
                                       args=(store.url, ref, dict(env), str(self.log_dir / f"{log_name}.log")))
        process.start()
        return process

    def run(self, store: Store, ref: str, env: Mapping[str, str], log_name: str) -> int:
        """Run node `ref` to its end (or its death); its exit code, -9 if SIGKILLed."""
        process = self.start(store, ref, env, log_name)
        process.join(timeout=600)
        assert process.exitcode is not None, f"{ref} did not finish"
        return process.exitcode

    def relaunch(self, store: Store, plan: Plan, env: Mapping[str, str], log_name: str) -> None:
        """What a relaunch does: run every node that `select_nodes` picks, inputs first,
        until the grid is done; fail if it cannot be."""
        for round_ in range(len(plan.nodes) + 1):
            statuses = {node.key: node_status(store, store.node_path(node.stage, node.key)) for node in plan.nodes}
            selection = select_nodes(plan, statuses, retry_failed=False, live={"running"})
            assert not selection.failed and not selection.blocked and not selection.live, (
                [(n.ref, statuses[n.key][0]) for n in (*selection.failed, *selection.blocked, *selection.live)])
            ready = [n for n in selection.submit if all(statuses[d.key][0] == "done" for d in n.inputs.values())]
            if not selection.submit:
                return
            for node in ready:
                code = self.run(store, node.ref, env, f"{log_name}-{round_}-{node.stage}")
                assert code == 0, f"{node.ref} exited {code} on relaunch; log in {self.log_dir}"
        raise AssertionError("the relaunch did not converge")


TIMING = ("seconds", "_per_s")
"""Keys whose values are wall-clock measurements: they differ between any two runs."""


def without_timing(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if not any(t in k for t in TIMING)}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


RUN_RECORDS = ("state.json", "DONE", "lease/", "logs/", "checkpoints/", "tensorboard/", "wandb/")
"""A node folder's records of how it ran (attempts, leases, logs, resumable state, the live
curves of each attempt), as opposed to what it produced; only the products must be
byte-equal between two runs."""


def products(store: Store, folder: str) -> dict[str, Any]:
    """Every file a node produced, JSON and JSON-lines without their timing fields."""
    out: dict[str, Any] = {}
    for path in sorted(store.fs.find(folder)):
        relative = path[len(folder.rstrip("/")) + 1:]
        if any(relative == r or relative.startswith(r) for r in RUN_RECORDS):
            continue
        data = bytes(store.fs.cat_file(path))
        if relative.endswith(".json") and not relative.startswith("model/"):
            out[relative] = without_timing(json.loads(data))
        elif relative.endswith(".jsonl"):
            out[relative] = [without_timing(json.loads(line)) for line in data.splitlines() if line.strip()]
        else:
            out[relative] = data
    return out


def completed_attempts(store: Store, folder: str) -> list[dict[str, Any]]:
    return [a for a in read_state(store, folder)["attempts"] if a.get("outcome") == "done"]
