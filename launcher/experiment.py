"""An opened experiment: spec, profile, store and plan, validated together.

Every CLI command starts here, so every command rejects bad input the same way and
before anything is written. Here too the commands that follow a launch (`status`,
`cancel`, `logs`, `analysis`) take the profile and overrides that launch recorded
(`launcher.launch_record`), and a dry run that cannot read its storage plans from the
spec alone.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from xstilts.core.errors import UserError, warn
from xstilts.core.plan import Node, Plan, build_plan
from xstilts.launcher.executors import Executor, executor_for
from xstilts.launcher.profiles import LocalProfile, SlurmProfile, load_profile
from xstilts.core.spec import Spec, dump_spec, load_spec
from xstilts.launcher import launch_record
from xstilts.launcher.launch_record import LaunchRecord
from xstilts.core.index import DoneRecord, Snapshot, snapshot
from xstilts.core.listing import NodeFiles
from xstilts.core.state import node_done
from xstilts.core.lease import lease_ttl
from xstilts.core.object_store import probe
from xstilts.core.store import Store, check_storage_url


@dataclass
class Experiment:
    spec: Spec
    profile: LocalProfile | SlurmProfile
    store: Store
    plan: Plan
    spec_path: str = ""
    overrides: list[str] = field(default_factory=list)
    """The overrides in force: as typed, or those of the launch followed."""
    profile_source: str = ""
    """Where the profile came from, for the launch record and messages."""
    launch: LaunchRecord | None = None
    """The launch this command follows (or, in `launch`, the one it made)."""
    storage_unread: str | None = None
    """Why the storage was not read (a dry run without access): every node then counts
    as not started."""
    cluster_optional: bool = False
    """`status`: an unreachable cluster shows the store's view, said in one line."""
    notes: list[str] = field(default_factory=list)
    """Lines for stderr about how the experiment was opened (the launch followed)."""
    _results: dict[str, dict[str, Any]] = field(default_factory=dict, init=False, repr=False)
    """Results of the nodes the last snapshot found done: a done node never changes."""
    _records: dict[str, DoneRecord] | None = field(default=None, init=False, repr=False)
    _listed: dict[str, NodeFiles] = field(default_factory=dict, init=False, repr=False)
    _last: Snapshot | None = field(default=None, init=False, repr=False)
    """The done index as the last snapshot left it: a refresh need not read it again."""

    def node_dir(self, node: Node) -> str:
        return self.store.node_path(node.stage, node.key)

    @property
    def executor(self) -> Executor:
        """How this experiment's nodes run, from its profile."""
        return executor_for(self.profile)

    def statuses(self, need_cluster: bool = True, fresh: bool = True) -> dict[str, tuple[str, dict[str, Any]]]:
        """key -> (status, state) for every node of the plan: the store's view, merged by
        the executor with what it knows (SLURM: one `squeue` and `sacct` for the grid;
        the state then carries the `reason` of a failure). With `need_cluster=False`
        (dry runs off the cluster) an unreachable cluster leaves the store's view as it is;
        with `cluster_optional` too, and a warning line says so. Without storage access
        (`storage_unread`) every node is pending: a dry run from the spec alone.
        With `fresh=False` the store's view of this process's last snapshot is used if
        there is one (`analysis collect` has just read the store: one listing, not two).
        """
        if self.storage_unread is not None:
            return {node.key: ("pending", {}) for node in self.plan.nodes}
        if not fresh and self._last is not None:
            stored = {key: (status, dict(state)) for key, (status, state) in self._last.statuses.items()}
        else:
            stored = self.snapshot().statuses
        if need_cluster and self.cluster_optional:
            try:
                return self.executor.live_statuses(self, stored, need_cluster=True)
            except UserError as exc:  # the executor's way of saying its cluster did not answer
                warn(f"{exc}; showing the store's view (queued and running jobs are not known)")
                return stored
        return self.executor.live_statuses(self, stored, need_cluster)

    def snapshot(self, use_index: bool = True) -> Snapshot:
        """The store's view of every node of the plan, in bulk (`core.index`): a listing
        per stage, the done index, parallel reads of the rest. Results of done nodes are
        kept, so `result` and `is_done` need no request for them afterwards, and so is
        the index, so that a refresh (`status --watch`) is the listings and the reads of
        unfinished nodes only."""
        snap = snapshot(self.store, self.spec.name, self.plan.nodes, use_index=use_index,
                        known=self._records if use_index else None)
        self._results.update(snap.results)
        self._listed = snap.listed
        self._last = snap
        if use_index:
            self._records = snap.records
        return snap

    def listed_files(self, node: Node) -> NodeFiles | None:
        """The node's files as the last snapshot listed them; None before any snapshot
        (or for a node it did not cover): then ask the store."""
        return self._listed.get(node.key)

    def is_done(self, node: Node) -> bool:
        """DONE written and result.json readable: the one meaning of done (`core.state`)."""
        return node.key in self._results or node_done(self.store, self.node_dir(node)) is None

    def result(self, node: Node) -> dict[str, Any] | None:
        if node.key in self._results:
            return self._results[node.key]
        return self.store.read_json(f"{self.node_dir(node)}/result.json")

    def materialize(self) -> None:
        """Write spec.yaml, plan.json and every node.json; the files are replaced atomically.

        spec.yaml and plan.json are the *latest* launch's: every launch's resolved spec is
        kept in its launch record (`launcher.launch_record`, `xstilts history`).

        node.json content is a pure function of the key, so one that holds what the plan
        says is left alone; one that does not (torn by a crash, edited, written by an
        older version) is written again: a node whose node.json cannot be read fails on
        every run, so a launch repairs it.
        """
        try:
            self.store.write_text(self.store.experiment_path(self.spec.name, "spec.yaml"), dump_spec(self.spec))
        except Exception as exc:  # first write: report an unreachable or read-only root plainly
            raise UserError(f"storage: cannot write to {self.store.url}: {type(exc).__name__}: {exc}") from None
        plan_json = {**self.plan.to_json(), "written": time.time()}
        self.store.write_json(self.store.experiment_path(self.spec.name, "plan.json"), plan_json)
        for node in self.plan.nodes:
            path = f"{self.node_dir(node)}/node.json"
            record = node.record()
            if self.store.read_json(path) != json.loads(json.dumps(record, default=str)):
                self.store.write_json(path, record)


RecordUse = Literal["none", "follow", "launch"]
"""How `open_experiment` uses the launch records: not at all (`plan`, library callers),
to follow the newest launch (`status`, `cancel`, `logs`, `analysis`), or, in `launch`,
only for the profile when none is given."""


def open_experiment(spec_path: str, overrides: list[str] | None = None, profile: str | None = None,
                    reads_store: bool = True, *, records: RecordUse = "none",
                    storage_optional: bool = False) -> Experiment:
    """Validate spec, storage URL, profile and the environment (the variables the CLI and
    every node process will read); build the plan. Writes nothing.

    With `reads_store` (every command but `plan`) the storage must also answer: an
    unreachable endpoint or missing credentials is one message here, not a traceback
    from the first read deep inside a command. With `storage_optional` (a dry run) it
    need not: the experiment then says why in `storage_unread` and reads nothing.

    `records` (see `RecordUse` and `launcher.launch_record` for the rules): a command
    that follows a launch takes that launch's profile and overrides; an explicit
    `--profile` that disagrees is an error naming the one that launch used.
    """
    typed = list(overrides) if overrides else None
    spec = load_spec(spec_path, typed)
    url = check_storage_url(spec.storage)
    chosen = load_profile(profile or spec.cluster)
    source = _profile_source(profile) if profile else f"{launch_record.SPEC_CLUSTER}{spec.cluster}"
    store = Store(url)
    unread = check_storage(store, reachable=reads_store, optional=storage_optional)
    launch, notes = None, []
    if records == "follow" or (records == "launch" and not profile):  # a launch's --profile is a new choice
        if reads_store and unread is None:
            launch = launch_record.follow(store, spec.name, typed if records == "follow" else None)
    if launch is not None and records == "launch" and not launch.profile_given:
        launch = None  # the spec's `cluster:` chose it then and chooses it now
    reapplied = launch is not None and records == "follow" and typed is None and bool(launch.overrides)
    if launch is not None and records == "follow":
        if reapplied:
            spec = load_spec(spec_path, launch.overrides)
            if check_storage_url(spec.storage) != url or spec.name != launch.experiment:
                raise UserError(f"{launch.describe()} is recorded under {store.url}/{launch.experiment}, "
                                "but its overrides move the experiment elsewhere; give -o explicitly")
        if launch_record.spec_digest(dump_spec(spec)) != launch.spec_sha256:
            notes.append(f"{spec_path} changed since {launch.describe()}: showing the spec as it is now")
    if launch is not None:
        if profile:
            launch_record.check_profile(launch, profile, chosen)
        else:
            if records == "launch" and not launch_record.same_profile(launch, chosen):
                notes.append(f"profile '{launch.profile_name}' of {launch.describe()}; --profile to change it")
            elif records == "follow" and (reapplied or not launch_record.same_profile(launch, chosen)):
                notes.append(f"following {launch.describe()}")
            chosen, source = launch.resolved_profile(), launch.profile_source
    check_environment(chosen)
    # A command following a launch plans with that launch's code version: stages keyed by
    # code (`rerun_on_code_change`) then show the nodes that launch submitted.
    code = launch.code if launch is not None and records == "follow" else None
    return Experiment(spec=spec, profile=chosen, store=store, plan=build_plan(spec, code), spec_path=spec_path,
                      overrides=launch.overrides if launch is not None and records == "follow" else typed or [],
                      profile_source=source, launch=launch if records == "follow" else None,
                      storage_unread=unread, notes=notes)


def _profile_source(given: str) -> str:
    """A `--profile` as the record keeps it: a shipped name as is, a file by its full path."""
    from xstilts.launcher.profiles import shipped_profiles

    return given if given in shipped_profiles() else str(Path(given).resolve())


FOLDER_VARIABLES = ("XSTILTS_CACHE", "XSTILTS_SCRATCH")
"""Folders the CLI (the local runner's logs: `XSTILTS_CACHE`) and the node processes
(`XSTILTS_CACHE`, `XSTILTS_SCRATCH`) make things in."""


def check_environment(profile: LocalProfile | SlurmProfile) -> None:
    """The variables the CLI and its node processes read, as the nodes will see them
    (this environment, then the profile's `env`), checked before anything is written:
    a bad value failed every node at its start, or silently wrote into the working
    folder. `XSTILTS_CHECKPOINT_*` are not read from here: the spec sets them."""
    lease_ttl()
    for where, env in (("", os.environ), (f"profile '{profile.name}' env.", profile.env)):
        for name in FOLDER_VARIABLES:
            if name in env:
                # Scratch folders are made by `tempfile.mkdtemp`, which does not create
                # the folder above them; a SLURM node's may exist only on that node.
                must_exist = name == "XSTILTS_SCRATCH" and isinstance(profile, LocalProfile)
                _check_folder_variable(where + name, env[name], must_exist)


def _check_folder_variable(what: str, value: str, must_exist: bool) -> None:
    """One folder variable: not empty, nothing left to expand, no file on its way (its
    folders are made on demand), and with `must_exist` an existing folder."""
    if not value.strip():
        raise UserError(f"{what}: empty; give a folder or unset it")
    if value.startswith("~") or "$" in value:
        # A profile's env reaches the job script quoted: '~' and '$VAR' stay as they are.
        raise UserError(f"{what}: '{value}' holds '~' or '$', which nothing expands here; give the full path")
    path = Path(value)
    above = _nearest_existing(path, what)
    if not above.is_dir():
        raise UserError(f"{what}: {above} is a file, not a folder")
    if must_exist and above != path:
        raise UserError(f"{what}: folder {path} does not exist; create it or unset the variable")


def _nearest_existing(path: Path, what: str) -> Path:
    """`path` or its nearest ancestor that exists."""
    try:
        return next(p for p in (path, *path.parents) if p.exists())
    except OSError as exc:  # a folder on the way that may not be looked into
        raise UserError(f"{what}: cannot look into {exc.filename or path}: {exc.strerror or exc}") from None


def check_storage(store: Store, reachable: bool = True, optional: bool = False) -> str | None:
    """A local storage folder must be creatable (no file on its way); a remote one, with
    `reachable`, must answer one request. The request is the only place that catches
    every exception: fsspec's backends raise their own kinds (botocore's
    `EndpointConnectionError`, `NoCredentialsError`, gcsfs's), and whatever one lookup
    of the root raises is the storage's or the environment's problem, not a bug.

    With `optional` (a dry run) a remote storage that does not answer is no error: the
    reason is returned (None when it answered) and the caller reads nothing from it."""
    if store.is_local:
        above = _nearest_existing(Path(store.root), "storage")
        if not above.is_dir():
            raise UserError(f"storage: {above} is a file, not a folder, so {store.root} cannot be made")
        return None
    if not reachable:
        return None
    try:
        probe(store.fs, store.root)
    except Exception as exc:  # noqa: BLE001 (see the docstring)
        detail = (str(exc).strip().splitlines() or [""])[0]
        reason = f"cannot reach {store.url}: {type(exc).__name__}: {detail}"
        if optional:
            return reason
        raise UserError(f"storage: {reason}") from None
    return None
