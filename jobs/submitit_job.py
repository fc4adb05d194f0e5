"""The callable submitit runs on a cluster node: one node of the plan, checkpointable.

submitit pickles this object at submission and, on SLURM's preemption/timeout signal
(SIGUSR2), asks it for a resubmission and requeues the job. Three rules shape it:

- It carries only the store URL, the node's address and the requeue budget. Everything
  needed to resume (checkpoints, attempts) is read from storage when the job starts,
  never from the pickle: an external `scontrol requeue` restarts from the original
  pickle, and a resubmission must find the same state either way.
- The checkpoint itself is written by the training loop at a step boundary, not inside
  a signal handler (which would interrupt a half-done optimizer step). So while the
  node runs, `xstilts.jobs.entry` owns SIGUSR2 and turns it into a stop request; when the stage
  has checkpointed and returned `EXIT_REQUEUE`, this callable hands the signal back to
  submitit's handler, which calls `checkpoint()` and requeues.
- A job the infrastructure lost (NODE_FAIL, BOOT_FAIL, its node gone mid-job) is
  requeued by SLURM itself (`--requeue`): the same job id, so dependants keep waiting
  instead of being cancelled, and no launcher needs to be running. SLURM puts no bound on
  that, so the job does: restarts SLURM made that the node did not ask for (its
  `SLURM_RESTART_COUNT` less the checkpointed requeues in state.json) beyond
  `max_retries` fail the node.
- A node whose lease is held waits rather than giving up: after a requeue the previous
  attempt's lease may still look alive for a heartbeat period, and a duplicate job must
  end only when the node is done (its dependents start on this job's success). A job
  that stalled past its lease and was superseded waits the same way for its successor.

Torch is not imported here: the launcher pickles this class on a login node.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import submitit

from xstilts.jobs.entry import EXIT_BUSY, EXIT_DONE, EXIT_REQUEUE, EXIT_SUPERSEDED, run_node

BUSY_POLL_S = 5.0


class NodeFailed(RuntimeError):
    """The node did not finish; submitit records this as the job's failure."""


class NodeJob(submitit.helpers.Checkpointable):
    """Run one node of an experiment; on preemption, checkpoint and requeue."""

    def __init__(self, store_url: str, ref: str, max_requeues: int = 3, max_retries: int = 3) -> None:
        self.store_url = store_url
        self.ref = ref
        self.max_requeues = max_requeues
        self.max_retries = max_retries

    def __call__(self) -> int:
        env = submitit.JobEnvironment()
        lost = self._lost_restarts()
        if lost > self.max_retries:
            reason = (f"its job was lost {lost} times (node failure or requeue before a checkpoint); "
                      f"max_retries is {self.max_retries}")
            self._give_up(reason)
            raise NodeFailed(f"node {self.ref}: {reason}")
        if env.num_tasks > 1:
            # RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT for torch.distributed (FSDP2)
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        submitit_handler = signal.getsignal(signal.SIGUSR2)
        try:
            code = run_node(self.store_url, self.ref, env.job_id)
            while code in (EXIT_BUSY, EXIT_SUPERSEDED):
                time.sleep(BUSY_POLL_S)
                code = run_node(self.store_url, self.ref, env.job_id)
        finally:
            if env.global_rank == 0:
                self._upload_log(env)
        if code == EXIT_REQUEUE:
            if self._requeues() > self.max_requeues:
                self._give_up(f"preempted {self._requeues()} times; max_requeues is {self.max_requeues}")
                raise NodeFailed(f"node {self.ref} was preempted more than max_requeues={self.max_requeues} times")
            if callable(submitit_handler):
                # The training state is in storage; let submitit pickle checkpoint()'s
                # resubmission and requeue the job (it exits this process).
                submitit_handler(signal.SIGUSR2, None)
        if code != EXIT_DONE:
            raise NodeFailed(f"node {self.ref} ended with exit code {code}; see its state.json and log")
        return code

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """A resubmission of the same node: it resumes from the newest checkpoint in storage."""
        return submitit.helpers.DelayedSubmission(NodeJob(self.store_url, self.ref, self.max_requeues,
                                                          getattr(self, "max_retries", 3)))

    # ------------------------------------------------------------------ bookkeeping

    def _node_dir(self) -> tuple[Any, str]:
        from xstilts.core.store import Store

        store = Store(self.store_url)
        stage, key = self.ref.split("/")
        return store, store.node_path(stage, key)

    def _requeues(self) -> int:
        store, node_dir = self._node_dir()
        state = store.read_json(f"{node_dir}/state.json") or {}
        return int(state.get("requeues", 0))

    def _lost_restarts(self) -> int:
        """Restarts of this job that the node did not ask for: SLURM's restart count less
        the requeues the node asked for after a checkpoint (each one is a restart too)."""
        restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
        return max(0, restarts - self._requeues()) if restarts else 0

    def _give_up(self, reason: str) -> None:
        from xstilts.core.state import update_state

        store, node_dir = self._node_dir()

        def change(state: dict[str, Any]) -> None:
            state["status"] = "failed"
            state["last_error"] = reason

        update_state(store, node_dir, change)

    def _upload_log(self, env: Any) -> None:
        """Copy this job's SLURM log into the node's `logs/` so `xstilts logs` and status
        show it wherever the store is (the log folder may not be visible from there)."""
        try:
            path = env.paths.stdout
            if not os.path.exists(path):
                return
            store, node_dir = self._node_dir()
            with open(path, errors="replace") as handle:
                store.write_text(f"{node_dir}/logs/slurm-{env.job_id}.log", handle.read())
        except Exception:  # a log copy must never change the job's outcome
            pass
