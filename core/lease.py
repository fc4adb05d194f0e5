"""Leases: at most one process runs a node at a time, whoever launched it.

Two launchers on the same spec, an orphaned job from a killed launcher, or a requeued
SLURM job may all try to run one node. Each takes the node's lease first; only one can.

A lease is a numbered file `lease/<generation>.json` created exclusively. The holder of
the highest generation owns the node until it writes `<generation>.released`, or until
its heartbeat (`<generation>.heartbeat`, rewritten every few seconds) is older than the
time-to-live, or its process is gone (same host). Taking over creates generation n+1
exclusively, so of two processes racing for a stale lease exactly one wins, on POSIX
filesystems and on object stores alike.
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from xstilts.core.errors import UserError
from xstilts.core.store import FileExists, Store

DEFAULT_TTL_S = 60.0
HEARTBEAT_S = 5.0


MIN_TTL_S = 5.0
"""A TTL below a few heartbeats would let a live holder's lease be taken over between
two of its heartbeats: two processes would then run one node."""


def lease_ttl() -> float:
    """`XSTILTS_LEASE_TTL` seconds (default 60): a lease whose heartbeat is older may be
    taken over. A value that is not a finite number of at least `MIN_TTL_S` seconds is a
    user error (0 once made every lease stale at once)."""
    raw = os.environ.get("XSTILTS_LEASE_TTL")
    if raw is None:
        return DEFAULT_TTL_S
    try:
        ttl = float(raw)
    except ValueError:
        ttl = float("nan")
    if not math.isfinite(ttl) or ttl < MIN_TTL_S:
        raise UserError(f"XSTILTS_LEASE_TTL: '{raw}' is not a number of seconds >= {MIN_TTL_S:g} "
                        f"(default {DEFAULT_TTL_S:g})")
    return ttl


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not alive for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


@dataclass
class LeaseInfo:
    """Who holds (or held) a node's newest lease."""

    generation: int
    owner: dict[str, Any]
    released: bool
    heartbeat: float

    def live(self, ttl: float | None = None) -> bool:
        if self.released:
            return False
        if time.time() - self.heartbeat > (ttl if ttl is not None else lease_ttl()):
            return False
        if self.owner.get("host") == socket.gethostname() and "pid" in self.owner:
            return pid_alive(int(self.owner["pid"]))
        return True


def _lease_dir(store: Store, node_dir: str) -> str:
    return f"{node_dir}/lease"


def current_lease(store: Store, node_dir: str) -> LeaseInfo | None:
    """The newest lease of a node, or None if it was never leased."""
    folder = _lease_dir(store, node_dir)
    generations = [int(name[:-5]) for name in store.list(folder) if name.endswith(".json") and name[:-5].isdigit()]
    if not generations:
        return None
    gen = max(generations)
    owner = store.read_json(f"{folder}/{gen:06d}.json") or {}
    released = store.exists(f"{folder}/{gen:06d}.released")
    beat_text = store.read_text(f"{folder}/{gen:06d}.heartbeat")
    heartbeat = float(beat_text) if beat_text else float(owner.get("created", 0))
    return LeaseInfo(gen, owner, released, heartbeat)


class Lease:
    """A held lease with a background heartbeat; use as a context manager or explicitly."""

    def __init__(self, store: Store, node_dir: str, owner: dict[str, Any]) -> None:
        self.store = store
        self.node_dir = node_dir
        self.folder = _lease_dir(store, node_dir)
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), **owner, "created": time.time()}
        self.generation: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        """Take the lease if nobody live holds it. False if someone does."""
        current = current_lease(self.store, self.node_dir)
        if current is not None and current.live():
            return False
        generation = (current.generation if current else 0) + 1
        try:
            self.store.create_exclusive(f"{self.folder}/{generation:06d}.json", json.dumps(self.owner))
        except FileExists:
            return False
        self.generation = generation
        self._beat()
        self._thread = threading.Thread(target=self._beat_forever, name="lease-heartbeat", daemon=True)
        self._thread.start()
        return True

    def _beat(self) -> None:
        self.store.write_text(f"{self.folder}/{self.generation:06d}.heartbeat", repr(time.time()))

    def _beat_forever(self) -> None:
        while not self._stop.wait(min(HEARTBEAT_S, lease_ttl() / 4)):
            try:
                self._beat()
            except Exception:  # a storage hiccup must not kill the job; the next beat retries
                pass

    def release(self) -> None:
        """Give the lease up so the node can be run again without waiting for the TTL."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self.generation is not None:
            self.store.write_text(f"{self.folder}/{self.generation:06d}.released", repr(time.time()))
            self.generation = None
