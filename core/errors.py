"""User-facing errors: one readable message, exit code 2, nothing written.

Every problem a researcher can cause with their input (spec, overrides, profile,
storage URL, node name) is raised as a `UserError`; the CLI prints its message and exits
with `EXIT_USER_ERROR` instead of showing a traceback.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem with what the user asked for, explained in plain words."""


_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s'\"]*@")


def mask_credentials(text: str) -> str:
    """`text` with the credentials of every URL in it (`scheme://user:secret@`) replaced
    by `***@`. The CLI passes every user error through it: a message may quote what the
    user gave (a spec value, an override), and that may hold a URL with a secret."""
    return _URL_CREDENTIALS.sub(r"\1***@", text)


def problems_message(header: str, problems: list[str]) -> str:
    """One error message for the problems of one input: 'header: problem' on one line
    when there is one problem (the common case: one line, like every other user
    error), else the header and one indented line per problem, so that a researcher
    fixes them all in one go rather than one per run."""
    if len(problems) == 1:
        return f"{header}: {problems[0]}"
    return header + "\n  " + "\n  ".join(problems)


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for a near miss among `choices`, else ''."""
    close = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_choice(what: str, value: str, choices: Iterable[str]) -> str:
    """The standard sentence for a value that is not one of the valid choices."""
    options = sorted(choices)
    return f"unknown {what} '{value}'{did_you_mean(value, options)}; valid: {', '.join(options)}"


def validation_problems(
    errors: Iterable[Mapping[str, Any]],
    valid_keys: Callable[[list[str]], Iterable[str]],
    prefix: str = "",
    unknown_key: Callable[[str, str, list[str]], str] | None = None,
    hidden: Collection[str] = (),
) -> list[str]:
    """Pydantic's errors (`ValidationError.errors()`) as 'key.path: problem' lines a
    researcher can act on. The one formatter of the spec and the cluster profiles, so both
    say the same things the same way.

    `valid_keys(parent_path)` names the keys allowed beside an unknown one (empty: say
    nothing more). `unknown_key(path, key, valid)` words an unknown key where a caller
    names its kind of key (e.g. "unknown profile key ..."); by default the line is
    'path: unknown key 'k' (did you mean ...); valid keys: ...'.

    The values under a top-level key in `hidden` are never quoted ("got ..."): a
    profile's `env` holds tokens (HF_TOKEN, WANDB_API_KEY), and a message is printed
    and may be pasted into an issue. Their keys (variable names) are still named.
    """
    lines = []
    for err in errors:
        loc = [str(p) for p in err["loc"]]
        path = ".".join(([prefix] if prefix else []) + loc)
        kind = err["type"]
        if kind == "extra_forbidden":
            valid = sorted(valid_keys(loc[:-1]))
            key = loc[-1] if loc else ""
            if unknown_key is not None:
                lines.append(unknown_key(path, key, valid))
                continue
            msg = f"unknown key '{key}'{did_you_mean(key, valid)}"
            if valid:
                msg += f"; valid keys: {', '.join(valid)}"
            lines.append(f"{path}: {msg}")
        elif kind == "value_error":
            text = str(err.get("ctx", {}).get("error", err["msg"]))
            for line in text.splitlines():
                lines.append(line if not path or ":" in line.split(" ")[0] else f"{path}: {line}")
        elif kind == "missing":
            lines.append(f"{path}: required key is missing")
        elif loc and loc[0] in hidden and loc[-1] != "[key]":
            lines.append(f"{path}: {err['msg']} (value not shown)")
        else:
            lines.append(f"{path}: {err['msg']} (got {err.get('input')!r})")
    return lines


_WARNED: set[str] = set()


def warn(message: str) -> None:
    """One line `warning: ...` on stderr, once per process for the same message.

    For what the store or the environment got wrong that a command can live with (a torn
    file read as absent): the command goes on, and the line names the path so the user
    knows what was skipped. Not logging: the CLI configures no handlers, and a warning
    must reach the terminal as one line whoever calls."""
    if message in _WARNED:
        return
    _WARNED.add(message)
    print(f"warning: {message}", file=sys.stderr, flush=True)
