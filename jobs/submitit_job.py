"""The callable submitit runs on a cluster node: one node of the plan, checkpointable.

submitit pickles this object at submission and, on SLURM's preemption/timeout signal
(SIGUSR2), asks it for a resubmission and requeues the job. Two rules shape it:

- It carries only the store URL and the node's address. Everything needed to resume
  (checkpoints, attempts) is read from storage when the job starts, never from the
  pickle: an external `scontrol requeue` restarts from the original pickle, and a
  resubmission must find the same state either way.
- The checkpoint itself is written by the training loop at a step boundary, not inside
  a signal handler (which would interrupt a half-done optimizer step). So while the
  node runs, `jobs.entry` owns SIGUSR2 and turns it into a stop request; when the stage
  has checkpointed and returned `EXIT_REQUEUE`, this callable hands the signal back to
  submitit's handler, which calls `checkpoint()` and requeues.
"""

from __future__ import annotations

import signal
from typing import Any

import submitit

from jobs.entry import EXIT_BUSY, EXIT_DONE, EXIT_REQUEUE, run_node


class NodeFailed(RuntimeError):
    """The node did not finish; submitit records this as the job's failure."""


class NodeJob(submitit.helpers.Checkpointable):
    """Run one node of an experiment; on preemption, checkpoint and requeue."""

    def __init__(self, store_url: str, ref: str) -> None:
        self.store_url = store_url
        self.ref = ref

    def __call__(self) -> int:
        submitit_handler = signal.getsignal(signal.SIGUSR2)
        code = run_node(self.store_url, self.ref)
        if code == EXIT_REQUEUE and callable(submitit_handler):
            # The training state is in storage; let submitit pickle checkpoint()'s
            # resubmission and requeue the job (it exits this process).
            submitit_handler(signal.SIGUSR2, None)
        if code not in (EXIT_DONE, EXIT_BUSY):
            raise NodeFailed(f"node {self.ref} ended with exit code {code}; see its state.json and log")
        return code

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """A resubmission of the same node: it resumes from the newest checkpoint in storage."""
        return submitit.helpers.DelayedSubmission(NodeJob(self.store_url, self.ref))
