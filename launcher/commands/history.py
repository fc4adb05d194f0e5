"""`xstilts history`: every launch of an experiment, oldest first, and what each changed.

Why: `spec.yaml` in the store is only the latest launch's, but a grid is often launched
many times (more seeds, a fixed hyperparameter, another cluster), and a result is read
against the spec and code that made it. The launch records (`launcher.launch_record`)
keep each launch's resolved spec, profile, overrides, user, host and code version;
this command numbers them and shows what changed in the resolved spec from one launch
to the next, key by key.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import yaml

from xstilts.launcher import launch_record
from xstilts.launcher.commands.common import JsonOpt, OverrideOpt, SpecArg, err, open_spec, out, styled
from xstilts.launcher.launch_record import LaunchRecord

MAX_CHANGES_SHOWN = 8
"""Changed keys printed per launch; `--json` has them all."""


@dataclass(frozen=True)
class SpecChange:
    """One key of the resolved spec that differs from the previous launch's."""

    key: str
    """Dotted path: `target.hparams.learning_rate`."""
    before: Any
    """None when the key is new (or was null)."""
    after: Any
    """None when the key is gone (or is null)."""

    def describe(self) -> str:
        return f"{self.key}: {_short(self.before)} -> {_short(self.after)}"


@dataclass(frozen=True)
class HistoryEntry:
    number: int
    id: str
    time: float
    when: str
    profile: str
    profile_source: str
    overrides: list[str]
    user: str
    host: str
    code: str | None
    """The launcher's code version (None: recorded by a version before provenance)."""
    version: str
    changes: list[SpecChange] | None
    """Changes of the resolved spec against the previous launch; None for the first."""


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as `{dotted.key: leaf}`; lists are leaves (a seed list is one value)."""
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def spec_changes(before: str, after: str) -> list[SpecChange]:
    """The keys whose values differ between two resolved specs (`dump_spec` YAML), in
    the order of the newer spec (keys only the older one has last)."""
    old, new = _flatten(yaml.safe_load(before) or {}), _flatten(yaml.safe_load(after) or {})
    changes = [SpecChange(key, old.get(key), value) for key, value in new.items()
               if key not in old or old[key] != value]
    changes.extend(SpecChange(key, value, None) for key, value in old.items() if key not in new)
    return changes


def history_entries(records: list[LaunchRecord]) -> list[HistoryEntry]:
    """Numbered entries for `records` given oldest first."""
    entries = []
    for number, record in enumerate(records, start=1):
        previous = records[number - 2] if number > 1 else None
        entries.append(HistoryEntry(
            number=number, id=record.id, time=record.time, when=record.when, profile=record.profile_name,
            profile_source=record.profile_source, overrides=list(record.overrides), user=record.user,
            host=record.host, code=record.code, version=record.version,
            changes=None if previous is None else spec_changes(previous.spec, record.spec),
        ))
    return entries


def _short(value: Any, width: int = 60) -> str:
    text = "(unset)" if value is None else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def history(spec: SpecArg, override: OverrideOpt = None, as_json: JsonOpt = False) -> None:
    """Every launch of the experiment, numbered oldest first: when, profile, overrides,
    user@host, xstilts code version, and what changed in the resolved spec since the
    launch before."""
    experiment = open_spec(spec, override, records="none")
    name = experiment.spec.name
    records = list(reversed(list(launch_record.newest_first(experiment.store, name))))
    entries = history_entries(records)
    if as_json:
        print(json.dumps({"experiment": name, "storage": experiment.store.url,
                          "launches": [asdict(entry) for entry in entries]}, indent=1))
        return
    if not entries:
        err.print(f"'{name}' was never launched at {experiment.store.url}")
        return
    out.print(styled((f"{name} ({experiment.store.url}): {len(entries)} launches", "bold")))
    for entry in entries:
        overrides = "".join(f" -o {o}" for o in entry.overrides)
        out.print(styled((f"#{entry.number}", "bold"), f"  {entry.when}  profile '{entry.profile}'{overrides}  "
                         f"{entry.user}@{entry.host}  code {entry.code or f'unrecorded (xstilts {entry.version})'}"))
        if entry.changes is None:
            out.print("    first launch")
        elif not entry.changes:
            out.print("    spec unchanged")
        else:
            for change in entry.changes[:MAX_CHANGES_SHOWN]:
                out.print(f"    {change.describe()}")
            if len(entry.changes) > MAX_CHANGES_SHOWN:
                out.print(f"    … and {len(entry.changes) - MAX_CHANGES_SHOWN} more (--json lists them)")
