"""The `slurm` executor: nodes as tasks of SLURM job arrays (`xstilts.launcher.slurm`).

A launch submits what is neither done nor queued or running in SLURM as chained job
arrays and may exit; what is live is always asked from SLURM (`squeue`, `sacct`), never
assumed from the store.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text

from xstilts.core.plan import Node
from xstilts.launcher import slurm
from xstilts.launcher.executors.base import SAFE_PATH_ENV, LaunchOutcome, LaunchRequest
from xstilts.launcher.profiles import SlurmProfile
from xstilts.launcher.progress import ProgressReport
from xstilts.launcher.selection import NodeStatuses, select_nodes

if TYPE_CHECKING:
    from rich.console import Console

    from xstilts.launcher.experiment import Experiment

WAIT_INTERVAL_S = 5.0


class SlurmExecutor:
    """Submits a plan's nodes as dependency-chained job arrays through submitit."""

    live = slurm.LIVE

    def __init__(self, profile: SlurmProfile) -> None:
        self.profile = profile

    def live_statuses(self, experiment: Experiment, stored: dict[str, tuple[str, dict[str, Any]]],
                      need_cluster: bool) -> dict[str, tuple[str, dict[str, Any]]]:
        """The store's view merged with one `squeue` (and one `sacct`, where accounting
        exists) for the whole grid; the state then carries the `reason` of a failure
        SLURM knows about."""
        try:
            live = slurm.squeue(slurm.job_name(experiment.spec.name))
        except slurm.SlurmUnavailable:
            if need_cluster:
                raise
            return stored
        ended = [job for status, state in stored.values() if status not in ("done", "running")
                 and (job := slurm.last_job_id(state)) and job not in live]
        finished = slurm.sacct(ended) if ended else {}
        merged = {}
        for key, (status, state) in stored.items():
            new_status, reason = slurm.merge_status(status, state, live, finished)
            merged[key] = (new_status, {**state, "reason": reason} if reason else state)
        return merged

    def submit(self, experiment: Experiment, statuses: NodeStatuses, request: LaunchRequest,
               out: Console) -> LaunchOutcome:
        """Submit what `select_nodes` chooses as chained job arrays (after the jobs of
        inputs still live from earlier launches); a dry run prints their sbatch scripts."""
        from xstilts.core.state import record_submission

        profile, name = self.profile, experiment.spec.name
        selection = select_nodes(experiment.plan, statuses, request.retry_failed, self.live)
        live_jobs = {node.key: slurm.last_job_id(statuses[node.key][1]) or "" for node in selection.live}
        live_jobs = {key: job for key, job in live_jobs.items() if job}
        size, size_source = slurm.max_array_size(profile)
        arrays = slurm.plan_arrays(list(selection.submit), live_jobs, size)
        summary = (f"{len(experiment.plan.nodes)} nodes: {len(selection.submit)} to submit in {len(arrays)} arrays, "
                   f"{len(selection.done)} done, {len(selection.live)} queued or running in SLURM, "
                   f"{len(selection.failed)} failed or cancelled (skipped; --retry-failed runs them), "
                   f"{len(selection.blocked)} waiting for failed inputs")
        env = self.job_env(experiment)
        if request.dry_run:
            out.print(f"[dry run] {summary}; at most {size} tasks per array ({size_source})", soft_wrap=True,
                      markup=False)
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
            return LaunchOutcome(ok=True, show_table=False)
        if not arrays:
            out.print(f"submitted 0 nodes; {summary}")
            return self._wait(experiment, out) if request.wait else LaunchOutcome(ok=True, show_table=False)
        experiment.materialize()

        def recorded(node: Node, job_id: str) -> None:
            record_submission(experiment.store, experiment.node_dir(node), job_id, "slurm")

        slurm.submit_arrays(arrays, experiment.store.url, name, profile, env, experiment.spec.resources_for, recorded)
        out.print(f"submitted {len(selection.submit)} nodes in {len(arrays)} arrays "
                  f"({', '.join(f'{a.stage}:{a.job_id}' for a in arrays)}); {summary}")
        if not request.wait:
            out.print(request.status_hint(), markup=False)
            return LaunchOutcome(ok=True, show_table=False)
        return self._wait(experiment, out)

    def job_env(self, experiment: Experiment) -> dict[str, str]:
        """What every job exports: the profile's env, checkpointing, and Python's safe path."""
        return {**self.profile.env, **experiment.spec.checkpointing.env(), **SAFE_PATH_ENV}

    def _wait(self, experiment: Experiment, out: Console, interval: float = WAIT_INTERVAL_S) -> LaunchOutcome:
        """Poll SLURM and the store until nothing of the experiment is queued or running:
        a bar of ended nodes with an ETA on a terminal (a line when the counts change),
        a time-stamped line per poll otherwise."""
        total, last = len(experiment.plan.nodes), ""
        with ProgressReport(out, f"{experiment.spec.name}: nodes ended", total) as bar:
            while True:
                statuses = experiment.statuses()
                counts = Counter(status for status, _ in statuses.values())
                if not any(status in self.live for status, _ in statuses.values()):
                    break
                text = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
                bar.update(sum(counts[s] for s in ("done", "failed", "cancelled")))
                if text != last or not bar.is_bar:
                    bar.line(f"{time.strftime('%H:%M:%S')} {text}")
                last = text
                time.sleep(interval)
        out.print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
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
