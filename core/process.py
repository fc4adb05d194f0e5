"""Which process is which: a PID together with its start time.

A PID alone names a process only while it lives: once it exits the kernel hands the
number to the next process that asks. A lease holder or a scheduler marker that records
only a PID would then make a stranger look like the holder (so a dead holder's node is
never taken over early) or, worse, make `xstilts cancel` signal a stranger. The start
time (`/proc/<pid>/stat`, field 22, in clock ticks since boot) together with the boot id
tells the two apart: a reused PID has a later start time, and a reboot changes the boot
id. Where `/proc` does not exist (macOS) the start time is unknown and identity falls
back to the PID, the best that platform allows.
"""

from __future__ import annotations

import os
import signal
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of `/proc/<pid>/stat` after the command name (which may hold spaces and
    parentheses), or None when the process does not exist or /proc is absent."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def start_ticks(pid: int) -> str | None:
    """`<boot id>:<start time in ticks>` of a live process, or None if unknown."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    return f"{_boot_id()}:{fields[19]}"  # field 22 of stat; fields[0] is field 3 (state)


def _exists(pid: int) -> bool:
    """Whether a process with this PID exists and is not a zombie (exited, not reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _stat_fields(pid)
    return fields is None or fields[0] != "Z"


@dataclass(frozen=True)
class ProcessIdentity:
    """One process, recorded where other processes can check on it later."""

    host: str
    pid: int
    started: str | None
    """`<boot id>:<ticks>` (see `start_ticks`); None where the platform has no /proc."""

    @classmethod
    def current(cls) -> ProcessIdentity:
        return cls(host=socket.gethostname(), pid=os.getpid(), started=start_ticks(os.getpid()))

    @classmethod
    def of(cls, pid: int) -> ProcessIdentity:
        """A child this process just started (its start time is read now, while the PID
        cannot yet have been reused: the child is not reaped)."""
        return cls(host=socket.gethostname(), pid=pid, started=start_ticks(pid))

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ProcessIdentity | None:
        """The identity stored in a lease or marker file, or None when the record does
        not hold a usable one (older files, torn or edited ones)."""
        host, pid, started = record.get("host"), record.get("pid"), record.get("pid_started")
        if not isinstance(host, str) or not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            return None
        return cls(host=host, pid=pid, started=started if isinstance(started, str) else None)

    def as_record(self) -> dict[str, Any]:
        """Fields to merge into a lease or marker file (`from_record` reads them back)."""
        record = asdict(self)
        record["pid_started"] = record.pop("started")
        return record

    @property
    def on_this_host(self) -> bool:
        return self.host == socket.gethostname()

    def alive(self) -> bool | None:
        """True if this very process still runs, False if it is provably gone, None when
        it runs on another host (only its heartbeat can tell)."""
        if not self.on_this_host:
            return None
        if not _exists(self.pid):
            return False
        if self.started is None:
            return True  # no start time recorded: a live PID is all we can check
        now = start_ticks(self.pid)
        return now is None or now == self.started

    def signal(self, signum: int) -> bool:
        """Send `signum` to this process only if it is still the one recorded (never to a
        process that reused its PID). True if sent.

        A record without a start time, on a platform that has them, was written by an
        older version: its PID alone proves nothing, so nothing is sent."""
        if self.started is None and start_ticks(os.getpid()) is not None:
            return False
        if self.alive() is not True:
            return False
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            return False
        return True


def terminate(identity: ProcessIdentity) -> bool:
    """SIGTERM to `identity` if it is still that process."""
    return identity.signal(signal.SIGTERM)
