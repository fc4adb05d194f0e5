"""A job payload that records the signals it receives, for the preemption tests.

Why not bash traps: bash runs traps between commands and forks `date` inside them, so a signal
that arrives while a trap runs (SIGCONT and the user signal come together) can be lost or
logged without its time. Here each signal is one os.write of a line, from the handler.

Usage: sigrec.py LOG LABEL  (loops until killed; SIGTERM is recorded, not obeyed, like
submitit, so the log shows when the final kill came).
"""

from __future__ import annotations

import os
import signal
import sys
import time

RECORDED = ("SIGUSR1", "SIGUSR2", "SIGTERM", "SIGCONT", "SIGINT", "SIGHUP")


def main(argv: list[str]) -> int:
    log, label = argv[1], argv[2]
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    who = f"{label} {os.environ.get('SLURM_JOB_ID')}.{os.environ.get('SLURM_STEP_ID', 'batch')} " \
          f"restart={os.environ.get('SLURM_RESTART_COUNT', '0')}"

    def record(event: str) -> None:
        os.write(fd, f"{time.time():.3f} {who} {event}\n".encode())

    for name in RECORDED:
        signal.signal(getattr(signal, name), lambda signum, _frame: record(signal.Signals(signum).name))
    record("start")
    while True:
        time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
