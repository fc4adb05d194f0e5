"""Per-node state (`state.json`): attempts, job ids, timestamps, last error; and the
node status the launcher derives from DONE marker, lease and state together.

`DONE` alone means done. It is written last, after `result.json`, by the process holding
the node's current lease generation; `state.json` is a record of what happened, never
proof of completion. A state that says done without a DONE marker (a kill between the
two writes, a deleted marker) is shown as interrupted and run again.

`state.json` is written by the launcher before a node is started (submission) and by the
lease holder while it runs; the holder checks its lease generation before every write
(`Lease.check`), so a superseded process never overwrites the state of its successor.
Attempts are recorded by id (the lease generation), never by position.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from xstilts.core.lease import LeaseInfo, current_lease
from xstilts.core.store import DONE, Store

STATUSES = ("done", "running", "queued", "preempted", "failed", "interrupted", "cancelled", "pending")

NOT_DONE_NOTE = "state.json says done but {missing}; it runs again on the next launch"


def now() -> float:
    return time.time()


MISSING_DONE = "its DONE marker is missing"
MISSING_RESULT = "its result.json is missing or torn"


def read_state(store: Store, node_dir: str) -> dict[str, Any]:
    """The node's state; a missing or torn state.json reads as a fresh one (the torn
    file is named in a warning and replaced by the next write)."""
    return state_from(store.read_json(f"{node_dir}/state.json"))


def state_from(state: dict[str, Any] | None) -> dict[str, Any]:
    """A state as read (None: absent or torn), with its lists made lists."""
    if state is None:
        return {"status": "pending", "attempts": [], "submissions": []}
    if not isinstance(state.get("attempts"), list):
        state["attempts"] = []
    if not isinstance(state.get("submissions"), list):
        state["submissions"] = []
    return state


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
        state["submissions"].append({"job_id": job_id, "executor": executor, "at": now()})

    update_state(store, node_dir, change)


def start_attempt(state: dict[str, Any], attempt: dict[str, Any]) -> None:
    """Record `attempt` (which carries its `id`) as running.

    A node is only started when it is not done, so no earlier attempt completed it: one
    still open ended without saying how (killed, or stalled and superseded by this one's
    lease generation), and one recorded `done` was killed between that record and DONE.
    Both are closed as `lost`, so that a node has exactly one completed attempt."""
    for earlier in state["attempts"]:
        if not isinstance(earlier, dict):
            continue
        if "outcome" not in earlier:
            earlier.update(outcome="lost", error=f"ended without an outcome; superseded by attempt {attempt['id']}")
        elif earlier["outcome"] == "done":
            earlier.update(outcome="lost", error="recorded done, but its DONE marker was never written")
    attempt["attempt"] = len(state["attempts"]) + 1
    state["attempts"].append(attempt)
    state["status"] = "running"


def finish_attempt(state: dict[str, Any], attempt: dict[str, Any], outcome: str, error: str | None) -> None:
    """Record the outcome of the attempt with `attempt["id"]`, wherever it is in the list
    (re-added if a torn state.json lost it)."""
    mine = next((a for a in state["attempts"] if isinstance(a, dict) and a.get("id") == attempt["id"]), None)
    if mine is None:
        mine = dict(attempt)
        state["attempts"].append(mine)
    mine.update(ended=now(), outcome=outcome, error=error)
    if "provenance" in attempt:  # known only once the attempt had started (jobs.entry)
        mine["provenance"] = attempt["provenance"]
    state["status"] = outcome
    state["last_error"] = error
    if outcome == "preempted":
        state["requeues"] = int(state.get("requeues", 0)) + 1


def node_done(store: Store, node_dir: str) -> str | None:
    """None if the node is done (DONE written, result.json readable), else what is missing."""
    if not store.exists(f"{node_dir}/{DONE}"):
        return MISSING_DONE
    if store.read_json(f"{node_dir}/result.json") is None:
        return MISSING_RESULT
    return None


def node_status(store: Store, node_dir: str) -> tuple[str, dict[str, Any]]:
    """(status, state) of a node: done (DONE and a readable result), else a live lease,
    else the recorded state, where a recorded `done` or `running` without a holder is
    `interrupted` (run again). One node, file by file: `core.index` derives the same
    status for a whole plan from a few listings."""
    state = read_state(store, node_dir)
    missing = node_done(store, node_dir)
    if missing is None:
        return "done", state
    return derive_status(state, missing, current_lease(store, node_dir))


def derive_status(state: dict[str, Any], missing: str, lease: LeaseInfo | None) -> tuple[str, dict[str, Any]]:
    """(status, state) of a node that is not done (`missing` says why not), from its
    recorded state and its newest lease: the one rule, whether the files were read one
    by one (`node_status`) or in bulk (`core.index`)."""
    if lease is not None and lease.live():
        return "running", state
    status = state.get("status", "pending")
    if status == "done":
        state["last_error"] = NOT_DONE_NOTE.format(missing=missing)
        status = "interrupted"
    elif status == "running":
        # The recorded holder is gone without saying so (killed): it did not finish.
        status = "interrupted"
    if status not in STATUSES:
        status = "pending"
    return status, state
