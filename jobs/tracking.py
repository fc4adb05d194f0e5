"""Live training curves: TensorBoard event files in the node's folder, and optional W&B.

The trainer already writes every log and evaluation line to `metrics.jsonl`, but that
file reaches the store only when the node finishes. A `Tracker` receives the same records
as they are written (`Trainer.tracker`) and turns them into scalars with the step:
`train/loss`, `train/lr`, ... for a train line, `dev/<metric>` for a dev evaluation. So the
curves a user watches are the numbers of `metrics.jsonl`, never a second computation.

Where the event files go: `<node folder>/tensorboard/` (a tune node: one subfolder per
trial). On a local store the writer writes there directly and TensorBoard sees every
flush. On an object store it writes to a local folder and copies the event files to the
node folder after an evaluation (at most every `upload_every_s` seconds) and at the end,
so `tensorboard --logdir s3://...` (or a synced folder) sees progress while the job runs.

Tracking is for people watching: any failure of it (an upload, a W&B server that does not
answer) is logged as a warning and training goes on. The policy reaches jobs through the
environment (`TrackingPolicy.from_env`), set by the launcher from the spec's `tracking`
section (`xstilts.core.spec.Tracking.env`); it is not part of node keys, because it never
changes a result.

Only rank 0 tracks: the trainer hands records to the tracker only on the main process.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from xstilts.core.nodes import NodeRecord, run_name
from xstilts.core.store import Store

TENSORBOARD_DIR = "tensorboard"
"""The node folder's subfolder of TensorBoard event files."""

WANDB_MODES = ("online", "offline")

ENV_TENSORBOARD = "XSTILTS_TENSORBOARD"
ENV_UPLOAD_EVERY = "XSTILTS_TENSORBOARD_UPLOAD_S"
ENV_WANDB_PROJECT = "XSTILTS_WANDB_PROJECT"
ENV_WANDB_ENTITY = "XSTILTS_WANDB_ENTITY"
ENV_WANDB_MODE = "XSTILTS_WANDB_MODE"

DEFAULT_UPLOAD_EVERY_S = 30.0


@dataclass(frozen=True)
class WandbPolicy:
    project: str
    entity: str | None = None
    mode: str = "online"


@dataclass(frozen=True)
class TrackingPolicy:
    """What a training job tracks; read from the variables the launcher exports."""

    tensorboard: bool = True
    upload_every_s: float = DEFAULT_UPLOAD_EVERY_S
    wandb: WandbPolicy | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TrackingPolicy:
        project = env.get(ENV_WANDB_PROJECT) or None
        wandb = None
        if project:
            wandb = WandbPolicy(project=project, entity=env.get(ENV_WANDB_ENTITY) or None,
                                mode=env.get(ENV_WANDB_MODE) or "online")
        return cls(
            tensorboard=env.get(ENV_TENSORBOARD, "1").lower() not in ("0", "false", "no"),
            upload_every_s=float(env.get(ENV_UPLOAD_EVERY, DEFAULT_UPLOAD_EVERY_S)),
            wandb=wandb,
        )


@dataclass(frozen=True)
class RunInfo:
    """Who is tracked: one node (or one trial of a tune node), for run names and tags."""

    name: str
    """Readable: stage/task/intermediate/seed (and the trial)."""
    key: str
    """The node key; with a trial suffix for a tune trial (W&B run ids are unique)."""
    tags: tuple[str, ...]
    config: Mapping[str, Any]
    """The node's resolved config (plus a trial's sampled values)."""
    group: str | None = None
    """W&B group: a tune node's key, so that its trials sit together."""


def scalars_of(record: Mapping[str, Any]) -> tuple[int, dict[str, float]] | None:
    """(step, {tag: value}) of one metrics.jsonl record; None for a record with no curve.

    Every numeric field but `step` becomes a curve under the record's group (`train/` for
    a train line, `<split>/` for an evaluation); flags (`best`) and text are not curves.
    """
    group = "train" if record.get("event") == "train" else record.get("split") if record.get("event") == "eval" else None
    if group is None or not isinstance(record.get("step"), int):
        return None
    values = {f"{group}/{name}": float(value) for name, value in record.items()
              if name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)
              and math.isfinite(float(value))}
    return (int(record["step"]), values) if values else None


class Sink(Protocol):
    def log(self, step: int, scalars: dict[str, float], evaluation: bool) -> None: ...

    def close(self) -> None: ...


class Tracker:
    """Fans the trainer's records out to the sinks; a sink's failure is a warning."""

    def __init__(self, sinks: list[Sink], log: logging.Logger) -> None:
        self.sinks = sinks
        self.log = log

    def record(self, record: Mapping[str, Any]) -> None:
        parsed = scalars_of(record)
        if parsed is None:
            return
        step, scalars = parsed
        for sink in list(self.sinks):
            self._guard(sink, lambda: sink.log(step, scalars, record.get("event") == "eval"))

    def close(self) -> None:
        for sink in self.sinks:
            self._guard(sink, sink.close)

    def _guard(self, sink: Sink, call: Callable[[], None]) -> None:
        try:
            call()
        except Exception as exc:  # tracking is for people; it never stops training
            self.log.warning("tracking (%s) failed, training goes on: %s", type(sink).__name__, exc)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TensorBoardSink:
    """A `SummaryWriter` into `local_dir`, whose files are copied to `upload_url` (an
    object store's folder) after evaluations, at most every `upload_every_s`, and at
    the end. `purge_step`: the step a resumed run continues from; TensorBoard drops the
    earlier attempt's points from there on, so a resumed curve has no doubled tail."""

    def __init__(self, local_dir: Path, upload_url: str | None, log: logging.Logger, *,
                 purge_step: int | None = None, upload_every_s: float = DEFAULT_UPLOAD_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        from torch.utils.tensorboard import SummaryWriter

        local_dir.mkdir(parents=True, exist_ok=True)
        self.local_dir = local_dir
        self.upload_url = upload_url
        self.logger = log
        self.upload_every_s = upload_every_s
        self.clock = clock
        self.last_upload: float | None = None
        self.writer = SummaryWriter(log_dir=str(local_dir), purge_step=purge_step, flush_secs=10)

    def log(self, step: int, scalars: dict[str, float], evaluation: bool) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)
        if evaluation:
            self.writer.flush()
            now = self.clock()
            if self.last_upload is None or now - self.last_upload >= self.upload_every_s:
                self.upload()

    def upload(self) -> None:
        """Copy the event files to the store's node folder (whole files, each one PUT:
        readers see the previous copy or this one). Never raises."""
        if self.upload_url is None:
            return
        self.last_upload = self.clock()
        try:
            store = Store(self.upload_url)
            for file in sorted(p for p in self.local_dir.rglob("*") if p.is_file()):
                store.write_bytes(store.path(file.relative_to(self.local_dir).as_posix()), file.read_bytes())
        except Exception as exc:
            self.logger.warning("could not copy TensorBoard events to %s (training goes on): %s", self.upload_url, exc)

    def close(self) -> None:
        self.writer.close()
        self.upload()
        if self.upload_url is not None:
            shutil.rmtree(self.local_dir, ignore_errors=True)


class WandbSink:
    """One W&B run per node (or tune trial). Its id is the node key, so a resumed node
    continues its run instead of starting a second one."""

    def __init__(self, policy: WandbPolicy, run: RunInfo, directory: Path) -> None:
        import wandb

        directory.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=policy.project, entity=policy.entity, mode=policy.mode,  # type: ignore[arg-type]
            id=run.key, name=run.name, group=run.group, tags=list(run.tags), config=dict(run.config),
            dir=str(directory), resume="allow", reinit="create_new",
        )

    def log(self, step: int, scalars: dict[str, float], evaluation: bool) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()


def open_tracker(policy: TrackingPolicy, run: RunInfo, events_url: str | None, fallback_dir: Path,
                 log: logging.Logger, *, purge_step: int | None = None) -> Tracker:
    """The tracker of one run.

    `events_url`: the store folder of this run's event files (`<node>/tensorboard[/trial]`),
    None for a stage run by hand: then the files go to `fallback_dir/tensorboard` (in
    `out_dir`, uploaded with the node). W&B keeps its local files in `fallback_dir`
    (for an offline run, `wandb sync` reads them from the node folder later).
    """
    sinks: list[Sink] = []
    if policy.tensorboard:
        try:
            local_dir, upload_url = _event_dirs(events_url, fallback_dir)
            sinks.append(TensorBoardSink(local_dir, upload_url, log, purge_step=purge_step,
                                         upload_every_s=policy.upload_every_s))
        except Exception as exc:
            log.warning("no TensorBoard events for this run (training goes on): %s", exc)
    if policy.wandb is not None:
        try:
            sinks.append(WandbSink(policy.wandb, run, fallback_dir))
        except Exception as exc:
            log.warning("no W&B run for this run (training goes on): %s", exc)
    return Tracker(sinks, log)


def _event_dirs(events_url: str | None, fallback_dir: Path) -> tuple[Path, str | None]:
    """(where the writer writes, where its files are copied to or None)."""
    if events_url is None:
        return fallback_dir / TENSORBOARD_DIR, None
    store = Store(events_url)
    if store.is_local:
        return Path(store.root), None
    return Path(tempfile.mkdtemp(prefix="xstilts-tensorboard-")), events_url


def node_run(node: NodeRecord[Any], *, trial: str | None = None, extra_config: Mapping[str, Any] | None = None) -> RunInfo:
    """The `RunInfo` of a node, or of one trial of a tune node."""
    name = run_name(node.stage, node.task, node.intermediate, node.seed)
    tags = [node.stage, *(t for t in (node.task, node.intermediate) if t), f"seed{node.seed}" if node.seed is not None
            else "", f"key:{node.key}"]
    config = {**node.config.as_json(), **(extra_config or {})}
    if trial is None:
        return RunInfo(name=name, key=node.key, tags=tuple(t for t in tags if t), config=config)
    return RunInfo(name=f"{name}/{trial}", key=f"{node.key}-{trial}", tags=tuple(t for t in tags if t),
                   config=config, group=node.key)
