"""`xstilts tasks`: the task registry."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from xstilts.core.errors import UserError, unknown_choice
from xstilts.launcher.commands.common import JsonOpt, out


def tasks(
    role: Annotated[Optional[str], typer.Option(help="only tasks usable as 'intermediate' or 'target'")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The task registry: name, kind, roles, English training data, languages, metric."""
    from xstilts.core.tasks import TASKS, task_names

    if role not in (None, "intermediate", "target"):
        raise UserError(unknown_choice("role", str(role), ["intermediate", "target"]))
    names = task_names(role)
    if as_json:
        print(json.dumps([{
            "name": n, "kind": TASKS[n].kind, "roles": list(TASKS[n].roles), "modality": TASKS[n].modality,
            "english_training_data": TASKS[n].english_training_data, "languages": list(TASKS[n].languages),
            "metric": TASKS[n].metric,
        } for n in names], indent=1))
        return
    from rich.table import Table

    table = Table(title="registered tasks (intermediate row 'none' = no intermediate training)")
    for column in ("name", "kind", "roles", "English training data", "languages", "metric"):
        table.add_column(column)
    for name in names:
        task = TASKS[name]
        table.add_row(name, task.kind, "/".join(task.roles), task.english_training_data or "-",
                      f"{len(task.languages)}: {' '.join(task.languages)}", task.metric)
    out.print(table)

