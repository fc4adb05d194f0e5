"""How an experiment was launched: one record per `xstilts launch`, kept in the store.

Why: the profile and the overrides a researcher types at launch decide which executor
knows the nodes (SLURM's queue or local processes), where the logs are and which grid
was meant. The commands that follow (`status`, `cancel`, `logs`, `analysis`, the
detached local scheduler) are typed without them; before this record they fell back
to the spec's `cluster:` and asked the wrong places (no squeue, no scancel, the wrong
log folder).

Layout: `<root>/<experiment>/launches/<UTC time>-<id>.json`, one file per launch,
created exclusively (never overwritten) and whole (atomic). Names sort by time, so the
newest launch is the last name. Every launch is kept: a relaunch with other overrides
does not erase how the earlier grid was launched. Each record holds the resolved spec
it planned from, so the records are the experiment's spec history (`xstilts history`);
`spec.yaml` beside them is only the latest launch's copy.

The rules for the commands that follow (applied by `launcher.experiment.open_experiment`):
- without `-o` they reapply the overrides of the newest launch (they may change node
  keys, so `status` shows the grid that was launched); with `-o` they follow the newest
  launch made with exactly those overrides, and overrides no launch used are an error
  listing the recorded sets (a new grid is launched first, then followed);
- without `--profile` they use the profile that launch resolved; a `--profile` that
  resolves to another profile is an error naming the one that launch used.
`launch` itself records what it was given; only its profile defaults to the newest
launch's when that one was given with `--profile`, so a relaunch never runs locally
what SLURM holds (a profile the spec's `cluster:` named follows the spec as edited).

The record holds the resolved profile, `env` included, as the job scripts in the
profile's `log_dir` do: it lives in the experiment's own storage.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from xstilts.core.errors import UserError, mask_credentials, warn
from xstilts.core.store import FileExists, Store
from xstilts.launcher.profiles import LocalProfile, SlurmProfile, profile_from_json

LAUNCHES_DIR = "launches"
"""Under the experiment folder: one record per launch."""
SPEC_CLUSTER = "spec cluster: "
"""`profile_source` of a profile the spec's `cluster:` named."""


class LaunchRecord(BaseModel):
    """One `xstilts launch` as it was resolved."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str
    """The file's name without `.json`: `<UTC time>-<random>`, sorts by time."""
    time: float
    experiment: str
    storage: str
    profile: dict[str, Any]
    """The resolved profile (`model_dump(mode="json")`): later commands rebuild it from
    here, so a profile file edited or moved after the launch changes nothing."""
    profile_source: str
    """Where it came from, for messages: `--profile <as given>` or `spec cluster: <name>`
    or `launch of <id>` when a relaunch reused it."""
    overrides: list[str]
    spec_path: str
    spec_sha256: str
    spec: str
    """The resolved spec (`dump_spec`) this launch planned from."""
    command: list[str]
    """The command line, URL credentials masked."""
    version: str
    user: str
    host: str
    code: str | None = None
    """The launcher's code version (`core.provenance.code_version`); None in records of
    older versions. Stages the spec keys by code (`rerun_on_code_change`) were planned
    with it, so the commands that follow this launch plan with it too."""

    def resolved_profile(self) -> LocalProfile | SlurmProfile:
        return profile_from_json(json.dumps(self.profile))

    @property
    def when(self) -> str:
        """The launch time for messages: `2026-12-03 21:40:05 UTC`."""
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.time))

    @property
    def profile_given(self) -> bool:
        """The profile was chosen with `--profile` (at this launch or one it followed),
        not taken from the spec's `cluster:`."""
        return not self.profile_source.startswith(SPEC_CLUSTER)

    @property
    def profile_name(self) -> str:
        return str(self.profile.get("name", "?"))

    def describe(self) -> str:
        """'the launch of <when> (profile 'x' from <source>, -o a=b)' for messages."""
        extra = "".join(f", -o {o}" for o in self.overrides)
        return f"the launch of {self.when} (profile '{self.profile_name}' from {self.profile_source}{extra})"


def spec_digest(spec_text: str) -> str:
    return hashlib.sha256(spec_text.encode()).hexdigest()


def new_record(*, experiment: str, storage: str, profile: LocalProfile | SlurmProfile, profile_source: str,
               overrides: list[str], spec_path: str, spec_text: str, argv: list[str] | None = None) -> LaunchRecord:
    """A record of a launch happening now (not written yet: `write_record`)."""
    import xstilts
    from xstilts.core.provenance import code_version

    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{now % 1:.6f}"[1:] + "Z"
    return LaunchRecord(
        id=f"{stamp}-{uuid.uuid4().hex[:8]}", time=now, experiment=experiment, storage=storage,
        profile=profile.model_dump(mode="json"), profile_source=profile_source, overrides=list(overrides),
        spec_path=spec_path, spec_sha256=spec_digest(spec_text), spec=spec_text,
        command=[mask_credentials(a) for a in (sys.argv if argv is None else argv)],
        version=xstilts.__version__, user=_user(), host=socket.gethostname(), code=code_version(),
    )


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return "?"


def record_path(store: Store, experiment: str, record_id: str) -> str:
    return store.experiment_path(experiment, LAUNCHES_DIR, f"{record_id}.json")


def write_record(store: Store, record: LaunchRecord) -> str:
    """Create the record's file, whole and only once; returns its path. A storage that
    refuses the write is one user error (this is a launch's first write)."""
    path = record_path(store, record.experiment, record.id)
    try:
        store.create_exclusive(path, record.model_dump_json(indent=1) + "\n")
    except FileExists:  # a random id met another: a new id, never an overwrite
        raise UserError(f"storage: launch record {path} exists already; launch again") from None
    except Exception as exc:  # noqa: BLE001 (the backends raise their own kinds)
        detail = (str(exc).strip().splitlines() or [""])[0]
        raise UserError(f"storage: cannot write to {store.url}: {type(exc).__name__}: {detail}") from None
    return path


def read_record(store: Store, experiment: str, record_id: str) -> LaunchRecord | None:
    """One record by id; None (with a warning line) when it is torn or not ours."""
    path = record_path(store, experiment, record_id)
    raw = store.read_json(path)
    if raw is None:
        return None
    try:
        return LaunchRecord.model_validate(raw)
    except ValidationError:
        warn(f"{store.url_of(path)} is not a launch record this version reads; skipped")
        return None


def newest_first(store: Store, experiment: str) -> Iterator[LaunchRecord]:
    """The experiment's launch records, newest first, read one at a time (a command
    usually needs only the first)."""
    names = [n[: -len(".json")] for n in store.list(store.experiment_path(experiment, LAUNCHES_DIR))
             if n.endswith(".json") and not n.startswith(".")]
    for record_id in sorted(names, reverse=True):
        record = read_record(store, experiment, record_id)
        if record is not None:
            yield record


def follow(store: Store, experiment: str, overrides: list[str] | None) -> LaunchRecord | None:
    """The launch a command follows: the newest one, or with `overrides` (given with -o)
    the newest made with exactly those. None when the experiment was never launched
    here. Overrides that no launch used are an error listing those that were."""
    seen: list[LaunchRecord] = []
    for record in newest_first(store, experiment):
        if overrides is None or record.overrides == overrides:
            return record
        seen.append(record)
    if not seen:
        return None
    used = sorted({" ".join(f"-o {o}" for o in r.overrides) or "(no -o)" for r in seen})
    given = " ".join(f"-o {o}" for o in overrides or [])
    raise UserError(f"{given}: no launch of '{experiment}' used these overrides; its launches used: "
                    + "; ".join(used) + ". Drop -o to follow the newest launch, or launch these first")


def same_profile(record: LaunchRecord, profile: LocalProfile | SlurmProfile) -> bool:
    return _settings(profile.model_dump(mode="json")) == _settings(record.profile)


def check_profile(record: LaunchRecord, given: str, resolved: LocalProfile | SlurmProfile) -> None:
    """An explicit `--profile` must resolve to the profile the followed launch used."""
    if not same_profile(record, resolved):
        raise UserError(f"--profile {given}: differs from the profile '{record.profile_name}' that "
                        f"{record.describe()} used; drop --profile to use it, or launch again with --profile {given}")


def _settings(profile: dict[str, Any]) -> dict[str, Any]:
    """A profile's settings without its name (a file's stem): the same settings under
    another file name are the same profile."""
    return {k: v for k, v in profile.items() if k != "name"}
