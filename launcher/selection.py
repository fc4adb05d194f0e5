"""What a launch submits: the one rule for which nodes run, and which are skipped and why.

Both executors (what `xstilts launch` submits) and the local scheduler's loop (what it
starts next) ask `select_nodes`, so "done", "still running", "failed (not retried)" and
"blocked by a failed input" mean the same everywhere.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from xstilts.core.plan import Node, Plan

NodeStatuses = Mapping[str, tuple[str, dict[str, Any]]]
"""node key -> (status, state.json), as `Experiment.statuses()` returns them."""

FAILED = frozenset({"failed", "cancelled"})
"""Statuses of a node that ended without finishing: run again only with --retry-failed."""


@dataclass(frozen=True)
class Selection:
    """Every node of a plan, in plan order, in exactly one group."""

    submit: tuple[Node, ...]
    """To run now: neither done, nor still running, nor failed (unless retried); every
    input is done, still running, or submitted with it."""
    done: tuple[Node, ...]
    live: tuple[Node, ...]
    """Still queued or running (by another launch, or the cluster): left alone."""
    failed: tuple[Node, ...]
    """Failed or cancelled and not retried."""
    blocked: tuple[Node, ...]
    """Would run, but an input failed (and is not retried) or is itself blocked."""


def select_nodes(plan: Plan, statuses: NodeStatuses, retry_failed: bool, live: Collection[str]) -> Selection:
    """Group the plan's nodes by what a launch does with them.

    `live` names the statuses the executor still runs by itself (local: `running`, a
    live lease; SLURM: also `queued` and `preempted` jobs in its queue): such a node is
    left alone, and its dependants may be submitted after it. A failed or cancelled
    node runs again only with `retry_failed`; without it, nodes that need it are blocked.
    """
    groups: dict[str, list[Node]] = {"submit": [], "done": [], "live": [], "failed": [], "blocked": []}
    can_follow: set[str] = set()  # done, live or submitted: a dependant may be submitted
    for node in plan.nodes:  # plan order: inputs first
        status = statuses[node.key][0]
        if status == "done":
            group = "done"
        elif status in live:
            group = "live"
        elif status in FAILED and not retry_failed:
            group = "failed"
        elif all(dep.key in can_follow for dep in node.inputs.values()):
            group = "submit"
        else:
            group = "blocked"
        groups[group].append(node)
        if group in ("done", "live", "submit"):
            can_follow.add(node.key)
    return Selection(*(tuple(groups[name]) for name in ("submit", "done", "live", "failed", "blocked")))
