"""The `xstilts` command line: thin wiring of the command modules into one Typer app.

Each command lives in its own module (`xstilts.launcher.commands.*`; the analysis
commands beside the analysis package, `xstilts.analysis.cli`). Importing this module
imports no torch, so every command starts instantly on a login node.
"""

from __future__ import annotations

import gc
import sys
from typing import Annotated

import typer

import xstilts
from xstilts.analysis import cli as analysis_cli
from xstilts.core.errors import EXIT_USER_ERROR, UserError, mask_credentials
from xstilts.launcher.commands import cancel, data, history, init, launch, logs, plan, status, tasks, tensorboard
from xstilts.launcher.commands.common import err

app = typer.Typer(
    name="xstilts",
    help="Intermediate-task training grids for zero-shot cross-lingual transfer.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
"""Shell completion is on (`xstilts --install-completion`; choices and options complete).
`rich_markup_mode=None`: the plain help of click, where a flag shows no `<bool>` and a
help text is not read as markup."""


def _print_version(value: bool) -> None:
    if value:
        print(f"xstilts {xstilts.__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                    help="print the version and exit")] = False,
) -> None:
    """Intermediate-task training grids for zero-shot cross-lingual transfer."""


app.command()(plan.plan)
def task_data() -> data.TaskData:
    """The task loaders of the jobs layer (torch-free; `datasets` only when the hub is
    asked), for `data check` and `launch`: the launcher may not import jobs itself."""
    from xstilts.jobs.tasks import sources

    return data.TaskData(load_split=sources.load_split, alternatives=sources._alternatives)


app.command()(launch.command(print_results=analysis_cli.print_results_table, task_data=task_data))
app.command()(status.status)
app.command()(tasks.tasks)
app.command()(cancel.cancel)
app.command()(logs.logs)
app.command()(history.history)
app.command()(init.init)
app.command()(tensorboard.tensorboard)
app.command()(analysis_cli.score)
app.add_typer(analysis_cli.app, name="analysis")
app.add_typer(data.make_app(task_data), name="data")


GC_THRESHOLDS = (50_000, 20, 100)
"""The cyclic collector's generation thresholds for a command (Python's are 700, 10, 10).
A plan of 100k nodes keeps millions of objects alive, and at the default a collection runs
every 700 allocations and rescans the young survivors: a fifth to a third of `plan` and
`status --json` at 100k nodes (`BENCHMARKS.md`, control plane). Collections still run, 70x
less often; the garbage they would find is a few cycles of a short command."""


def main() -> None:
    """Console-script entry: user errors become one message and exit code 2.

    Only `UserError` is caught: every problem with the user's input, files or
    environment is turned into one where it enters; anything else is a bug and keeps
    its traceback. The message goes out with URL credentials masked, whatever quoted them.
    """
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        app()
    except UserError as exc:
        from rich.text import Text

        err.print(Text.assemble(("error: ", "bold red"), mask_credentials(str(exc))))
        sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":
    main()
