"""Per-node state (`state.json`): attempts, job ids, timestamps, last error; and the
node status the launcher derives from state, lease and DONE marker together.

`state.json` is only written by the launcher before a node is started (submission) and
by the lease holder while it runs, so its read-modify-write updates never race.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from xstilts.core.lease import current_lease
from xstilts.core.store import DONE, Store

STATUSES = ("done", "running", "queued", "preempted", "failed", "interrupted", "cancelled", "pending")


def now() -> float:
    return time.time()


def read_state(store: Store, node_dir: str) -> dict[str, Any]:
    return store.read_json(f"{node_dir}/state.json") or {"status": "pending", "attempts": [], "submissions": []}


def update_state(store: Store, node_dir: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Apply `change` to the node's state and write it back atomically."""
    state = read_state(store, node_dir)
    change(state)
    state["updated"] = now()
    store.write_json(f"{node_dir}/state.json", state)
    return state


def record_submission(store: Store, node_dir: str, job_id: str, executor: str) -> None:
    def change(state: dict[str, Any]) -> None:
        state["status"] = "queued"
        state.setdefault("submissions", []).append({"job_id": job_id, "executor": executor, "at": now()})

    update_state(store, node_dir, change)


def node_status(store: Store, node_dir: str) -> tuple[str, dict[str, Any]]:
    """(status, state) of a node: DONE wins, then a live lease, then the recorded state."""
    state = read_state(store, node_dir)
    if store.exists(f"{node_dir}/{DONE}"):
        return "done", state
    lease = current_lease(store, node_dir)
    if lease is not None and lease.live():
        return "running", state
    status = state.get("status", "pending")
    if status == "running":
        # The recorded holder is gone without saying so (killed): it did not finish.
        status = "interrupted"
    return status, state
