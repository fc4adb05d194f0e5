"""Failpoints: named places where a test may kill this process, to prove crash safety.

Every write a node makes to the store passes a failpoint named after what it writes
(`write_kind`): `lease`, `heartbeat`, `state`, `checkpoint-files`, `checkpoint-shards`,
`checkpoint-metadata`, `upload`, `result`, `done`, `released`, ... With
`XSTILTS_FAILPOINT=<name>[@<n>]` in its environment a process SIGKILLs itself just
before the n-th (default first) write of that kind, the harshest interruption there is:
no `finally`, no signal handler, no flush. The fault-injection suite
(`tests/integration/faults`) kills a node at each point in turn and checks that a
relaunch finishes the grid with exactly one completed attempt per node and the same
bytes as an uninterrupted run.

Unset (every real run), a failpoint costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter

ENV = "XSTILTS_FAILPOINT"
_passed: Counter[str] = Counter()


def write_kind(path: str) -> str:
    """The failpoint name of a store write, from the file's name."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if "/lease/" in path:
        return {"json": "lease", "heartbeat": "heartbeat", "released": "released"}.get(name.rsplit(".", 1)[-1], "lease")
    return {"state.json": "state", "result.json": "result", "DONE": "done", "node.json": "node",
            "progress.json": "progress"}.get(name, "upload")


def failpoint(name: str) -> None:
    """Die here if `XSTILTS_FAILPOINT` names this point (and this is its n-th pass)."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition("@")
    if point != name:
        return
    _passed[name] += 1
    if _passed[name] == int(nth or 1):
        print(f"failpoint {wanted}: killing process {os.getpid()}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
