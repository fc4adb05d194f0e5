"""`xstilts tasks`: the task registry."""

from __future__ import annotations

import json
from enum import Enum
from typing import Annotated, Optional

from xstilts.launcher.commands.common import JsonOpt, choice_option, out


class Role(str, Enum):
    """What a task can be in a grid (`Task.roles`)."""

    intermediate = "intermediate"
    target = "target"


def tasks(
    role: Annotated[Optional[Role], choice_option(Role, "--role", what="role", help="only tasks usable in this role")]
    = None,
    as_json: JsonOpt = False,
) -> None:
    """The task registry: name, kind, roles, English training data, languages, metric."""
    from xstilts.core.tasks import TASKS, task_names

    names = task_names(None if role is None else role.value)
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

