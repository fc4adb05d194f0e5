"""The `local` executor: nodes as processes on this machine (`xstilts.launcher.local_runner`).

`launch --wait` runs the scheduler in the CLI's own process and reports each node;
without `--wait` a detached scheduler (given the resolved profile) runs the grid and the
CLI returns at once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text

from xstilts.core.plan import Node
from xstilts.launcher.executors.base import LaunchOutcome, LaunchRequest
from xstilts.launcher.profiles import LocalProfile
from xstilts.core.progress import ProgressReport
from xstilts.launcher.selection import NodeStatuses, select_nodes

if TYPE_CHECKING:
    from rich.console import Console

    from xstilts.launcher.experiment import Experiment


class LocalExecutor:
    """Runs a plan's nodes on this machine, at most `profile.max_parallel` at once."""

    def __init__(self, profile: LocalProfile) -> None:
        from xstilts.launcher.local_runner import LIVE

        self.profile = profile
        self.live = LIVE

    def live_statuses(self, experiment: Experiment, stored: dict[str, tuple[str, dict[str, Any]]],
                      need_cluster: bool) -> dict[str, tuple[str, dict[str, Any]]]:
        """The store knows everything: a running node holds a live lease."""
        return stored

    def submit(self, experiment: Experiment, statuses: NodeStatuses, request: LaunchRequest,
               out: Console) -> LaunchOutcome:
        """Run what `select_nodes` chooses: detached, or here with `request.wait`."""
        from xstilts.launcher import local_runner

        selection = select_nodes(experiment.plan, statuses, request.retry_failed, self.live)
        total = len(experiment.plan.nodes)
        summary = (f"{total} nodes: {len(selection.submit)} to run, {len(selection.done)} done (skipped), "
                   f"{len(selection.live)} running elsewhere, {len(selection.failed)} failed (skipped)"
                   + (f", {len(selection.blocked)} blocked by failed inputs" if selection.blocked else ""))
        if request.dry_run:
            out.print(f"[dry run] {summary}", markup=False)
            _print_lines(out, [f"  would run {node.label} [{node.key}]" for node in selection.submit])
            return LaunchOutcome(ok=True, show_table=False)
        if not selection.submit and not selection.live:
            out.print(f"submitted 0 nodes; {summary}")
            return LaunchOutcome(ok=True, show_table=request.wait)
        experiment.materialize()
        if not request.wait:
            pid = local_runner.spawn_detached(experiment.store, experiment.spec.name, self.profile,
                                              request.retry_failed,
                                              experiment.launch.id if experiment.launch else None)
            out.print(f"submitted {len(selection.submit)} nodes to a local scheduler (pid {pid}); {summary}")
            out.print(request.status_hint(), markup=False)
            return LaunchOutcome(ok=True, show_table=False)
        out.print(f"submitted {len(selection.submit)} nodes; {summary}")
        started = time.time()
        finished = [len(selection.done)]
        bar = ProgressReport(out, f"{experiment.spec.name}: nodes done", total, completed=finished[0])

        def report(kind: str, node: Node, detail: str) -> None:
            if kind == "done":
                finished[0] += 1
                bar.update(finished[0])
            style = {"done": "green", "failed": "red", "interrupted": "yellow"}.get(kind, "dim")
            bar.line(Text.assemble((f"{time.strftime('%H:%M:%S')} [{finished[0]:>3}/{total}] {kind:<11}", style),
                                   f" {node.label} [{node.key[:8]}] {detail}"))

        runner = local_runner.LocalRunner(experiment.store, experiment.plan, self.profile, request.retry_failed,
                                          report, extra_env=experiment.spec.job_env())
        with bar:
            result = runner.run()
        out.print(f"finished in {time.time() - started:.0f}s: {len(result.done)} done, {len(result.failed)} failed, "
                  f"{len(result.blocked)} blocked by failed inputs" + (" (interrupted)" if result.interrupted else ""))
        return LaunchOutcome(ok=result.ok, show_table=True)

    def cancel(self, experiment: Experiment) -> list[str]:
        from xstilts.launcher.local_runner import stop_local_nodes

        schedulers, stopped = stop_local_nodes(experiment.store, experiment.plan)
        return [f"cancelled {len(stopped)} running nodes of '{experiment.spec.name}'"
                + (f" and stopped {schedulers} local schedulers" if schedulers else ""),
                *(f"  {node.label} [{node.key[:8]}]" for node in stopped)]

    def log_sources(self, experiment: Experiment, node: Node, state: dict[str, Any]) -> list[Path]:
        from xstilts.launcher.local_runner import local_log_path

        return [local_log_path(experiment.store, node, submission["job_id"])
                for submission in state.get("submissions") or [] if submission.get("executor") == "local"]


def _print_lines(console: Console, lines: list[str]) -> None:
    """Plain lines (no markup, no wrapping: one per node) written in one go to the
    console's file. Rich measures and wraps each `print`, ~0.2 ms a line: a dry run that
    lists 100k nodes spent most of its 11 CPU-s there."""
    if lines:
        console.file.write("\n".join(lines) + "\n")
        console.file.flush()
