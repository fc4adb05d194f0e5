"""The `slurm` executor: nodes as tasks of SLURM job arrays (`xstilts.launcher.slurm`).

A launch submits what is neither done nor queued or running in SLURM as chained job
arrays and may exit; what is live is always asked from SLURM (`squeue`, `sacct`), never
assumed from the store.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text

from xstilts.core.plan import Node
from xstilts.launcher import slurm
from xstilts.launcher.executors.base import SAFE_PATH_ENV, LaunchOutcome, LaunchRequest
from xstilts.launcher.profiles import SlurmProfile
from xstilts.core.progress import ProgressReport
from xstilts.launcher.selection import NodeStatuses, select_nodes

if TYPE_CHECKING:
    from rich.console import Console

    from xstilts.launcher.experiment import Experiment

WAIT_INTERVAL_S = 5.0


@dataclass(frozen=True)
class SubmitRound:
    """What one round of submission left: the outcome where it ends the launch (a dry
    run), and how many wanted nodes could be submitted now but for the `max_jobs` cap.

    The second matters to `--wait`: a job that has committed its node can stay in
    SLURM's queue for a while (the batch script finishing, an epilog, COMPLETING), so a
    poll can see nothing live in the store while squeue still fills every slot. Such
    nodes are waited for, not given up on."""

    outcome: LaunchOutcome | None
    waiting_for_slots: int


class SlurmExecutor:
    """Submits a plan's nodes as dependency-chained job arrays through submitit."""

    live = slurm.LIVE

    def __init__(self, profile: SlurmProfile) -> None:
        self.profile = profile

    def live_statuses(self, experiment: Experiment, stored: dict[str, tuple[str, dict[str, Any]]],
                      need_cluster: bool) -> dict[str, tuple[str, dict[str, Any]]]:
        """The store's view merged with one `squeue` (and one `sacct`, where accounting
        exists) for the whole grid; the state then carries the `reason` of a failure
        SLURM knows about, and `retries`: how often SLURM restarted the node's job after
        the infrastructure lost it."""
        try:
            live = slurm.squeue(slurm.job_name(experiment.spec.name))
        except slurm.SlurmUnavailable:
            if need_cluster:
                raise
            return stored
        submitted = [job for _, state in stored.values() if (job := slurm.last_job_id(state))]
        retried: dict[str, int] = {}
        history = slurm.sacct(submitted, retried) if submitted else {}
        ended = {job for status, state in stored.values() if status not in ("done", "running")
                 and (job := slurm.last_job_id(state)) and job not in live}
        finished = None if history is None else {job: state for job, state in history.items() if job in ended}
        merged = {}
        for key, (status, state) in stored.items():
            new_status, reason = slurm.merge_status(status, state, live, finished)
            extra: dict[str, Any] = {"reason": reason} if reason else {}
            retries = slurm.infrastructure_retries(state, retried)
            if retries:
                extra["retries"] = retries
            merged[key] = (new_status, {**state, **extra} if extra else state)
        return merged

    def submit(self, experiment: Experiment, statuses: NodeStatuses, request: LaunchRequest,
               out: Console) -> LaunchOutcome:
        """Submit what `select_nodes` chooses as chained job arrays (after the jobs of
        inputs still live from earlier launches), at most `max_jobs` tasks queued at once;
        a dry run prints their sbatch scripts. With `--wait`, the rest goes out as slots
        free up."""
        selection = select_nodes(experiment.plan, statuses, request.retry_failed, self.live)
        wanted = {node.key for node in selection.submit}
        sent: set[str] = set()
        outcome = self._submit_some(experiment, statuses, request, out, wanted, sent, first=True).outcome
        if outcome is not None:
            return outcome
        if not request.wait:
            if len(sent) < len(wanted):
                out.print(f"{len(wanted) - len(sent)} nodes wait for free slots (max_jobs {self.profile.max_jobs}): "
                          f"`{request.command('launch')}` again, or with --wait, submits them")
            out.print(request.status_hint())
            return LaunchOutcome(ok=True, show_table=False)
        return self._wait(experiment, out, request, wanted, sent)

    def _submit_some(self, experiment: Experiment, statuses: NodeStatuses, request: LaunchRequest, out: Console,
                     wanted: set[str], sent: set[str], first: bool = False) -> SubmitRound:
        """Submit what is wanted, not yet sent by this launch and selectable now, within
        the free `max_jobs` slots; adds what it submitted to `sent`. A dry run prints and
        returns the outcome."""
        from xstilts.core.state import record_submission

        profile, name = self.profile, experiment.spec.name
        selection = select_nodes(experiment.plan, statuses, request.retry_failed, self.live)
        candidates = [node for node in selection.submit if node.key in wanted and node.key not in sent]
        live_jobs = {node.key: slurm.last_job_id(statuses[node.key][1]) or "" for node in selection.live}
        live_jobs = {key: job for key, job in live_jobs.items() if job}
        slots = self._free_slots(experiment, len(selection.live), need_cluster=not request.dry_run)
        chosen = slurm.cap_selection(candidates, slots)
        size, size_source = slurm.max_array_size(profile)
        arrays = slurm.plan_arrays(chosen, live_jobs, size, profile.array_grouping)
        waiting = len(candidates) - len(chosen)
        capped = f", {waiting} waiting for free slots (max_jobs {profile.max_jobs})" if waiting else ""
        summary = (f"{len(experiment.plan.nodes)} nodes: {len(chosen)} to submit in {len(arrays)} arrays{capped}, "
                   f"{len(selection.done)} done, {len(selection.live)} queued or running in SLURM, "
                   f"{len(selection.failed)} failed or cancelled (skipped; --retry-failed runs them), "
                   f"{len(selection.blocked)} waiting for failed inputs")
        env = self.job_env(experiment)
        if request.dry_run:
            out.print(f"[dry run] {summary}; at most {size} tasks per array ({size_source})", soft_wrap=True)
            folder = slurm.log_folder(profile, name)
            for array in arrays:
                res = slurm.stage_resources(profile, array.stage, experiment.spec.resources_for(array.stage))
                params = slurm.executor_parameters(res, profile, slurm.job_name(name), env,
                                                   slurm.dependency_string(array, arrays))
                out.print(Text.assemble("\n", (f"array {array.index}", "bold"),
                                        f": {array.stage}, wave {array.wave}, {len(array.nodes)} tasks, after "
                                        f"{[f'array {i}' for i in array.after] + array.after_jobs or 'nothing'}"),
                          soft_wrap=True)
                sys.stdout.flush()
                sys.stdout.write(slurm.render_sbatch(array, params, folder) + "\n")
            return SubmitRound(LaunchOutcome(ok=True, show_table=False), waiting)
        if not arrays:
            if first:
                out.print(f"submitted 0 nodes; {summary}")
            return SubmitRound(None, waiting)
        if not sent:  # once per launch: node.json files are read (and repaired) one by one
            experiment.materialize()

        def recorded(node: Node, job_id: str) -> None:
            record_submission(experiment.store, experiment.node_dir(node), job_id, "slurm")

        slurm.submit_arrays(arrays, experiment.store.url, name, profile, env, experiment.spec.resources_for, recorded)
        sent.update(node.key for node in chosen)
        jobs = ", ".join(f"{a.stage}:{a.job_id}" for a in arrays[:8]) + (", ..." if len(arrays) > 8 else "")
        out.print(f"submitted {len(chosen)} nodes in {len(arrays)} arrays ({jobs}); {summary}")
        return SubmitRound(None, waiting)

    def _free_slots(self, experiment: Experiment, live_nodes: int, need_cluster: bool) -> int | None:
        """Tasks that may still be queued under `max_jobs` (None: no cap): the cap less
        the experiment's tasks in SLURM's queue (asked, not counted from the store: a
        node's earlier job may still be there)."""
        if self.profile.max_jobs is None:
            return None
        try:
            queued = len(slurm.squeue(slurm.job_name(experiment.spec.name)))
        except slurm.SlurmUnavailable:
            if need_cluster:
                raise
            queued = live_nodes
        return max(0, self.profile.max_jobs - max(queued, live_nodes))

    def job_env(self, experiment: Experiment) -> dict[str, str]:
        """What every job exports: the profile's env, checkpointing, and Python's safe path."""
        return {**self.profile.env, **experiment.spec.job_env(), **SAFE_PATH_ENV}

    def _wait(self, experiment: Experiment, out: Console, request: LaunchRequest, wanted: set[str], sent: set[str],
              interval: float = WAIT_INTERVAL_S) -> LaunchOutcome:
        """Poll SLURM and the store until nothing of the experiment is queued or running
        and nothing wanted is left to submit (or can ever be: its inputs failed); each
        round submits what fits in the slots that freed up (`max_jobs`). A bar of ended nodes with an ETA on a terminal (a line
        when the counts change), a time-stamped line per poll otherwise."""
        total, last = len(experiment.plan.nodes), ""
        with ProgressReport(out, f"{experiment.spec.name}: nodes ended", total) as bar:
            while True:
                statuses = experiment.statuses()
                before, waiting = len(sent), 0
                if len(sent) < len(wanted):
                    waiting = self._submit_some(experiment, statuses, request, out, wanted, sent).waiting_for_slots
                    if len(sent) > before:
                        statuses = experiment.statuses()
                counts = Counter(status for status, _ in statuses.values())
                retried = sum(1 for _, state in statuses.values() if state.get("retries"))
                line = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + \
                    (f" ({retried} retried)" if retried else "") + \
                    (f" ({waiting} waiting for free slots)" if waiting else "")
                if not any(status in self.live for status, _ in statuses.values()) and len(sent) == before \
                        and not waiting:
                    break
                bar.update(sum(counts[s] for s in ("done", "failed", "cancelled")))
                if line != last or not bar.is_bar:
                    bar.line(f"{time.strftime('%H:%M:%S')} {line}")
                last = line
                time.sleep(interval)
        out.print(line)
        return LaunchOutcome(ok=counts.get("done", 0) == len(statuses), show_table=True)

    def cancel(self, experiment: Experiment) -> list[str]:
        from xstilts.core.errors import UserError

        result = slurm.cancel(experiment.spec.name)
        if result.returncode != 0:
            raise UserError(f"scancel failed: {result.stderr.strip()}")
        return [f"cancelled the SLURM jobs named {slurm.job_name(experiment.spec.name)}"]

    def log_sources(self, experiment: Experiment, node: Node, state: dict[str, Any]) -> list[Path]:
        folder = slurm.log_folder(self.profile, experiment.spec.name)
        return [folder / f"{submission['job_id']}_0_log.out"
                for submission in state.get("submissions") or [] if submission.get("executor") == "slurm"]
