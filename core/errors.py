"""User-facing errors: one readable message, exit code 2, nothing written.

Every problem a researcher can cause with their input (spec, overrides, profile,
storage URL, node name) is raised as a `UserError`; the CLI prints its message and exits
with `EXIT_USER_ERROR` instead of showing a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem with what the user asked for, explained in plain words."""


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for a near miss among `choices`, else ''."""
    close = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_choice(what: str, value: str, choices: Iterable[str]) -> str:
    """The standard sentence for a value that is not one of the valid choices."""
    options = sorted(choices)
    return f"unknown {what} '{value}'{did_you_mean(value, options)}; valid: {', '.join(options)}"
