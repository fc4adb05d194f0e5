"""`xstilts launch`: submit every node that is not done yet, through the profile's executor.

Which nodes run is `select_nodes`'s rule (inside the executor); how they run is the
executor's. A spec whose local data files are missing is refused first (the stat-only
part of `xstilts data check`). After `--wait` the results table is printed by the same code as
`xstilts analysis table`; analysis sits above the launcher, so that printer is handed
in by the wiring (`xstilts.cli`) rather than imported here.

Every launch but a dry run is recorded in the experiment's folder
(`launcher.launch_record`): the commands that follow use its profile and overrides. A
relaunch without `--profile` uses the newest launch's profile. A dry run reads no more
than it needs: when the storage does not answer (no credentials on a laptop) it plans
from the spec alone and says so in one line; `--check-storage` makes that an error.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from xstilts.core.errors import UserError
from xstilts.core.spec import Tracking, dump_spec
from xstilts.launcher import launch_record
from xstilts.launcher.commands.common import OverrideOpt, ProfileOpt, SpecArg, err, open_spec, out
from xstilts.launcher.commands.data import TaskData, check_before_launch
from xstilts.launcher.executors import LaunchRequest
from xstilts.launcher.experiment import Experiment

ResultsPrinter = Callable[[Experiment], None]


def check_tracking_installed(tracking: Tracking) -> None:
    """Refuse a spec whose `tracking.wandb` needs a package that is not installed: one
    message here, rather than every training node logging the same warning later."""
    if tracking.wandb is not None and importlib.util.find_spec("wandb") is None:
        raise UserError("tracking.wandb: the wandb package is not installed; `pip install 'xstilts[wandb]'` "
                        "(or remove tracking.wandb from the spec)")


def command(print_results: ResultsPrinter, task_data: Callable[[], TaskData] | None = None) -> Callable[..., None]:
    """The `launch` command, printing the results table with `print_results`; with
    `task_data` (the loaders, from the wiring) it refuses a spec whose local data files
    are missing before it submits or writes anything."""

    def launch(
        spec: SpecArg,
        override: OverrideOpt = None,
        profile: ProfileOpt = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="show what would run; submit and write nothing")] = False,
        wait: Annotated[bool, typer.Option("--wait", help="stay until the grid finishes, then print the table")] = False,
        retry_failed: Annotated[bool, typer.Option("--retry-failed", help="run failed nodes again")] = False,
        check_storage: Annotated[bool, typer.Option(
            "--check-storage", help="with --dry-run: fail when the storage cannot be read, rather than "
                                    "planning from the spec alone")] = False,
    ) -> None:
        """Submit every node that is not done yet; skip the rest."""
        experiment = open_spec(spec, override, profile, records="launch",
                               storage_optional=dry_run and not check_storage)
        check_tracking_installed(experiment.spec.tracking)
        if task_data is not None:
            check_before_launch(experiment.plan, experiment.spec.data_dir, task_data())
        if experiment.store.url.startswith("memory://"):
            raise UserError("storage: memory:// lives inside one process, so node processes cannot see it; "
                            "use a path, file://, s3:// or gs://")
        if experiment.storage_unread is not None:
            err.print(f"storage not read ({experiment.storage_unread}): planning from the spec alone, every node "
                      "counted as not done; --check-storage makes this an error", markup=False, highlight=False)
        statuses = experiment.statuses(need_cluster=not dry_run)
        if not dry_run:
            record = launch_record.new_record(
                experiment=experiment.spec.name, storage=experiment.store.url, profile=experiment.profile,
                profile_source=experiment.profile_source, overrides=experiment.overrides,
                spec_path=str(Path(spec).resolve()), spec_text=dump_spec(experiment.spec))
            launch_record.write_record(experiment.store, record)
            experiment.launch = record
        request = LaunchRequest(spec_path=spec, dry_run=dry_run, wait=wait, retry_failed=retry_failed,
                                overrides=tuple(override or ()))
        outcome = experiment.executor.submit(experiment, statuses, request, out)
        if outcome.show_table:
            print_results(experiment)
        if not outcome.ok:
            raise typer.Exit(1)

    return launch
