"""Leases: at most one process runs a node at a time, whoever launched it.

Two launchers on the same spec, an orphaned job from a killed launcher, or a requeued
SLURM job may all try to run one node. Each takes the node's lease first; only one can.

A lease is a numbered file `lease/<generation>.json` created exclusively. The holder of
the highest generation owns the node until it writes `<generation>.released`, or until
its heartbeat (`<generation>.heartbeat`, rewritten every few seconds) is older than the
time-to-live, or its process is provably gone (same host: neither its PID nor its start
time runs any more; a reused PID does not count). Taking over creates generation n+1
exclusively, so of two processes racing for a stale lease exactly one wins, on POSIX
filesystems and on object stores alike.

Fencing. A holder can stall past its TTL (SIGSTOP, a long GC, an NFS hang) while someone
else takes over; when it wakes it still believes it holds the lease. So every write that
commits a node's outcome (state, uploaded outputs, result, DONE, a checkpoint's
`.metadata` and its retention) first calls `Lease.check()`, which raises `LeaseLost` once
a newer generation exists; the heartbeat thread checks too and raises the `lost` flag at
once. The superseded process then stops without writing anything: the new holder's
attempt is the only one that counts.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from xstilts.core.errors import UserError, warn
from xstilts.core.process import ProcessIdentity
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
    ttl = _finite_float(raw)
    if ttl is None or ttl < MIN_TTL_S:
        raise UserError(f"XSTILTS_LEASE_TTL: '{raw}' is not a number of seconds >= {MIN_TTL_S:g} "
                        f"(default {DEFAULT_TTL_S:g})")
    return ttl


class LeaseLost(RuntimeError):
    """This process's lease generation was superseded: it must not commit anything."""


@dataclass
class LeaseInfo:
    """Who holds (or held) a node's newest lease."""

    generation: int
    owner: dict[str, Any]
    released: bool
    heartbeat: float

    @property
    def holder(self) -> ProcessIdentity | None:
        """The holding process, if its record names one (torn or old files do not)."""
        return ProcessIdentity.from_record(self.owner)

    def live(self, ttl: float | None = None) -> bool:
        """Whether the holder may still be running the node: not released, its process
        not provably gone, and its heartbeat fresh."""
        if self.released:
            return False
        holder = self.holder
        if holder is not None and holder.alive() is False:
            return False
        return time.time() - self.heartbeat <= (ttl if ttl is not None else lease_ttl())


def _lease_dir(node_dir: str) -> str:
    return f"{node_dir}/lease"


def _generations(store: Store, folder: str) -> list[int]:
    return sorted(gen for gen in map(lease_generation, store.list(folder)) if gen is not None)


def _finite_float(text: str) -> float | None:
    """`text` as a finite number, or None (garbage, nan, inf)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _parse_time(text: str | None, path: str) -> float | None:
    """A heartbeat's time, or None (absent; garbage, said in a warning)."""
    if text is None:
        return None
    value = _finite_float(text)
    if value is None:
        warn(f"{path} holds no time ({text[:40]!r}); the lease counts as stale")
    return value


def current_lease(store: Store, node_dir: str) -> LeaseInfo | None:
    """The newest lease of a node, or None if it was never leased.

    A torn owner file or heartbeat (a crash of an older version, a stray edit) reads as
    a lease without a holder or without a beat: stale, so it is taken over."""
    folder = _lease_dir(node_dir)
    generations = _generations(store, folder)
    if not generations:
        return None
    gen = generations[-1]
    beat_path = f"{folder}/{gen:06d}.heartbeat"
    return lease_info(gen, store.read_json(f"{folder}/{gen:06d}.json"), store.exists(f"{folder}/{gen:06d}.released"),
                      store.read_text(beat_path), store.url_of(beat_path))


def lease_paths(node_dir: str, generation: int) -> tuple[str, str, str]:
    """(owner, released marker, heartbeat) paths of one lease generation."""
    stem = f"{_lease_dir(node_dir)}/{generation:06d}"
    return f"{stem}.json", f"{stem}.released", f"{stem}.heartbeat"


def lease_generation(name: str) -> int | None:
    """The generation of an owner file `lease/<generation>.json`, else None."""
    return int(name[:-5]) if name.endswith(".json") and name[:-5].isdigit() else None


def lease_info(generation: int, owner: dict[str, Any] | None, released: bool, beat_text: str | None,
               beat_url: str) -> LeaseInfo:
    """A lease from what its files hold (owner record, whether released, heartbeat text),
    however they were read. A torn owner record or beat reads as a lease without a
    holder or without a beat: stale."""
    owner = owner or {}
    heartbeat = _parse_time(beat_text, beat_url)
    if heartbeat is None:
        created = owner.get("created")
        heartbeat = float(created) if isinstance(created, (int, float)) and math.isfinite(created) else 0.0
    return LeaseInfo(generation, owner, released, heartbeat)


class Lease:
    """A held lease with a background heartbeat; use as a context manager or explicitly."""

    def __init__(self, store: Store, node_dir: str, owner: dict[str, Any],
                 on_lost: Callable[[], None] | None = None) -> None:
        """`on_lost` runs in the heartbeat thread once the lease is found taken over
        (the entry sets the stage's stop event: a superseded run ends early)."""
        self.store = store
        self.on_lost = on_lost
        self.node_dir = node_dir
        self.folder = _lease_dir(node_dir)
        # the token makes the owner record unique, so its writer recognises it (a lost reply)
        self.owner = {**ProcessIdentity.current().as_record(), "token": uuid.uuid4().hex, **owner,
                      "created": time.time()}
        self.generation: int | None = None
        self.lost = threading.Event()
        """Set once a newer generation exists: the work of this process no longer counts."""
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

    def check(self) -> None:
        """Raise `LeaseLost` unless this process still holds the newest generation.

        Called before every write that commits the node's outcome: a holder that stalled
        past its TTL and was taken over finds out here, before it writes, and stops."""
        if self.generation is None:
            raise LeaseLost(f"{self.node_dir}: this process holds no lease")
        newest = _generations(self.store, self.folder)
        if self.lost.is_set() or not newest or newest[-1] != self.generation:
            self.lost.set()
            raise LeaseLost(f"{self.node_dir}: lease generation {self.generation} was taken over by generation "
                            f"{newest[-1] if newest else '?'} (this process stalled past the lease TTL); "
                            "it stops without committing")

    def _beat(self) -> None:
        self.store.write_text(f"{self.folder}/{self.generation:06d}.heartbeat", repr(time.time()))

    def _beat_forever(self) -> None:
        while not self._stop.wait(min(HEARTBEAT_S, lease_ttl() / 4)):
            try:
                self.check()
                self._beat()
            except LeaseLost:
                if self.on_lost is not None:
                    self.on_lost()
                return  # `lost` is set: the stage also sees it at its next commit
            except Exception:  # a storage hiccup must not kill the job; the next beat retries
                pass

    def release(self) -> None:
        """Give the lease up so the node can be run again without waiting for the TTL.
        A superseded lease is left alone: it is not this process's to give up."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self.generation is not None and not self.lost.is_set():
            self.store.write_text(f"{self.folder}/{self.generation:06d}.released", repr(time.time()))
        self.generation = None
