"""Keeper of a test cluster's private mount namespace: starts its daemons, reaps, kills it all.

Why a process of our own:
- the hosts file bound over /etc/hosts in this namespace makes n1, n2 resolve for the daemons
  and every job they start, without touching the machine's /etc/hosts;
- it is a child subreaper and the daemons are its children, so the processes slurmd
  double-forks (slurmstepd) are re-parented here and reaped: this machine's PID 1 does not reap;
- every process of the cluster is in this mount namespace, so killing all of it is exact:
  on EOF of stdin (Cluster.stop(), or the test session dying) or SIGTERM, it SIGKILLs every
  process of the namespace but itself, reaps them and exits.
A PID namespace would do the last point by itself, but jobs would then see PIDs that mean
nothing on the host, and the product checks a lease's owner with os.kill(pid, 0).

Usage: nsinit.py HOSTS_FILE EXITS_FILE, under `unshare --mount --propagation private`.
Protocol on stdin, one JSON object a line: {"argv": [...], "env": {...}, "cwd": "...",
"output": "file"}; answer on stdout: {"pid": N} or {"error": "..."}. Each daemon's exit is
appended to EXITS_FILE as "PID CODE".
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import time
from typing import Any

PR_SET_CHILD_SUBREAPER = 36


class _Shutdown(Exception):
    """Raised from a signal handler to leave the main loop."""


def _reap(daemons: set[int], exits_file: str) -> None:
    """Collect every exited child without blocking; record the exits of daemons."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid in daemons:
            with open(exits_file, "a") as exits:
                exits.write(f"{pid} {os.waitstatus_to_exitcode(status)}\n")


def _namespace_pids(namespace: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            try:
                if os.readlink(f"/proc/{name}/ns/mnt") == namespace:
                    found.append(int(name))
            except OSError:
                continue
    return found


def _kill_namespace(daemons: set[int], exits_file: str) -> None:
    """SIGKILL everything in this mount namespace but this process, until nothing is left."""
    namespace = os.readlink("/proc/self/ns/mnt")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pids = _namespace_pids(namespace)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
        _reap(daemons, exits_file)
    _reap(daemons, exits_file)


def _spawn(request: dict[str, Any]) -> dict[str, Any]:
    try:
        with open(request["output"], "ab") as output:
            process = subprocess.Popen(request["argv"], env=request["env"], cwd=request["cwd"],
                                       stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                       start_new_session=True)
    except OSError as exc:
        return {"error": f"{request['argv'][0]}: {exc}"}
    process.returncode = 0  # reaped by _reap, not by Popen: keep Popen's destructor quiet
    return {"pid": process.pid}


def main(argv: list[str]) -> int:
    hosts, exits_file = argv[1], argv[2]
    subprocess.run(["mount", "--bind", hosts, "/etc/hosts"], check=True)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")

    def shutdown(*_: Any) -> None:
        raise _Shutdown

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, shutdown)
    daemons: set[int] = set()
    pending = b""
    os.write(1, b"ready\n")
    try:
        while True:
            readable, _, _ = select.select([0], [], [], 0.2)
            if readable:
                data = os.read(0, 65536)
                if not data:
                    break
                pending += data
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    answer = _spawn(json.loads(line))
                    if "pid" in answer:
                        daemons.add(answer["pid"])
                    os.write(1, json.dumps(answer).encode() + b"\n")
            _reap(daemons, exits_file)
    except _Shutdown:
        pass
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    _kill_namespace(daemons, exits_file)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
