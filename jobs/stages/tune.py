"""Stage `tune`: search a task's hyperparameters with Ray Tune, inside this allocation.

Inputs: `data` (the task's prepare-data node), and the encoder every trial starts from:
`init` when the search is per cell (an intermediate node's output, or XCOPA's first
fine-tuning with `continue_head`), else `model` (the pretrained encoder; scope
per_task: one search per task, shared by every cell). Each trial is our own training
loop (`xstilts.jobs.trainer.Trainer`, the code path of the training nodes) for at most
`budget_steps` steps, reporting the English dev metric at every evaluation, so ASHA can
stop bad trials early.

Where things run and live:
- Ray is private to this node's allocation (`xstilts.jobs.ray_cluster`): one process, or a head
  and workers over the SLURM tasks of a multi-node tune job.
- Trials fetch their inputs from the store themselves, so a trial on another host needs
  nothing from the driver's disk.
- Ray's experiment state lives in the store, under the node's `ray/` folder
  (`ctx.node_url("ray")`: a local path, or the cloud store through a pyarrow filesystem
  over fsspec). A killed or
  preempted search is resumed from there with `Tuner.restore`: finished trials are kept
  (not rerun), unfinished ones start again, errored ones are retried. On SLURM's
  preemption signal the search stops gracefully, saves that state and raises
  `Preempted`, so the job is requeued like a training job.
- Live curves (`xstilts.jobs.tracking`): each trial writes its TensorBoard run to the node's
  `tensorboard/<trial id>/` (and a W&B run per trial, grouped by the node, if asked).
- `progress.json` in the node folder (`xstilts.jobs.tune_progress`) is rewritten as trials start, report and end;
  `xstilts status` shows it while the search runs.

Output `result.json`: `best` (the chosen values), `best_metric`, and `trials` (config,
best dev metric, evaluations and steps used, state, host, start time). Training nodes
downstream read `best` and train with it (`xstilts.jobs.stages.train`).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xstilts.core.nodes import NodeRecord, TuneConfig
from xstilts.core.spec import INTEGER_SEARCHABLE, Dimension, Hyperparameters, Search
from xstilts.core.store import Store
from xstilts.core.tasks import Task, get_task
from xstilts.jobs import data
from xstilts.jobs.modeling import MODEL_SUBDIR, quiet_progress_bars
from xstilts.jobs.ray_cluster import allocation_gpus, ray_in_allocation
from xstilts.jobs.stages.base import Preempted, StageContext
from xstilts.jobs.tracking import TENSORBOARD_DIR, Tracker, TrackingPolicy, node_run, open_tracker
from xstilts.jobs.tune_progress import SearchProgress

RAY_DIR = "ray"
SEARCH_NAME = "search"
STATE_SAVE_EVERY_S = "1"
"""Ray's experiment-state save period (TUNE_GLOBAL_CHECKPOINT_S): a trial that finished
longer ago than this before a kill is never rerun on resume."""


def search_space(space: dict[str, Dimension]) -> dict[str, Any]:
    """The spec's dimensions as Ray Tune sampling objects."""
    from ray import tune

    built: dict[str, Any] = {}
    for name, dim in space.items():
        if dim.loguniform:
            low, high = dim.loguniform
            built[name] = tune.loguniform(low, high)
        elif dim.grid:
            built[name] = tune.grid_search(list(dim.grid))
        else:
            built[name] = tune.choice(list(dim.choice or []))
    return built


def planned_trials(search: Search) -> int:
    """How many trials the search runs: `trials` samples of the grid's cross product."""
    grid = math.prod(len(dim.grid) for dim in search.space.values() if dim.grid)
    return search.trials * grid


def trial_budget(search: Search, hparams: Hyperparameters, data_dir: Path) -> int:
    """A trial's optimizer steps: `budget_steps`, or `budget_epochs` of the English
    training set at the stage's batch size (a searched batch size changes the steps a
    trial gets, never its epochs: the budget is fixed once, here)."""
    if not search.budget_epochs:
        return search.budget_steps
    n_train = data.english_train_size(data_dir)
    return max(1, data.total_steps(n_train, hparams.batch_size, hparams.grad_accum_steps, search.budget_epochs,
                                   None))


def chosen_values(config: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The searched values of a trial, integers where the hyperparameter is one."""
    return {k: int(config[k]) if k in INTEGER_SEARCHABLE else config[k] for k in names}


@contextmanager
def graceful_stop_on(stop: threading.Event) -> Iterator[None]:
    """While the body runs `tuner.fit()`, turn `stop` (set by jobs.entry on SIGUSR2 or
    SIGTERM) into Ray Tune's own graceful stop, SIGUSR1: it ends the trials, saves the
    experiment state one last time and returns, so the next run restores from it.

    The signal is sent only once Ray's handler is installed (during `fit()`); before
    that SIGUSR1 would kill the process.
    """
    finished = threading.Event()

    def watch() -> None:
        while not finished.wait(0.5):
            if stop.is_set() and signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, signal.SIG_IGN, None):
                os.kill(os.getpid(), signal.SIGUSR1)
                return

    watcher = threading.Thread(target=watch, name="xstilts-tune-stop", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        finished.set()
        watcher.join()


def ray_storage(url: str) -> tuple[str, Any]:
    """(storage_path, storage_filesystem) for Ray's results at `url`: a plain path on a
    local store, else the store's filesystem through pyarrow's fsspec handler."""
    store = Store(url)
    if store.is_local:
        return store.root, None
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    return store.root, PyFileSystem(FSSpecHandler(store.fs))


def run(ctx: StageContext[TuneConfig]) -> dict[str, Any]:
    """Every rank of the allocation calls this; rank 0 drives the search."""
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", STATE_SAVE_EVERY_S)
    with ray_in_allocation(ctx.job_id or f"pid-{os.getpid()}", ctx.rank, ctx.world_size) as driver:
        if not driver:
            return {}
        return _search(ctx)


def _search(ctx: StageContext[TuneConfig]) -> dict[str, Any]:
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    quiet_progress_bars()
    cfg = ctx.config
    search = cfg.search
    node_url, ray_url = ctx.node_url(), ctx.node_url(RAY_DIR)
    if ctx.store_url is None or node_url is None or ray_url is None:
        raise ValueError("the tune stage needs the node's store (jobs.entry passes it): trials fetch their "
                         "inputs from it and the search keeps its state there")
    task = data.with_prepared_labels(get_task(cfg.task), data.read_meta(ctx.inputs["data"] / data.DATA_SUBDIR))
    budget = trial_budget(search, cfg.hparams, ctx.inputs["data"] / data.DATA_SUBDIR)
    evaluations = max(1, budget // cfg.hparams.eval_interval)
    inputs = ctx.node.inputs
    encoder_input = "init" if "init" in inputs else "model"
    spec = TrialSpec(ctx.store_url, inputs[encoder_input], inputs["data"], task, budget, cfg,
                     tracking=TrialTracking(TrackingPolicy.from_env(os.environ), ctx.node,
                                            ctx.node_url(TENSORBOARD_DIR)))

    def trial(config: dict[str, Any]) -> None:
        spec.run(config)

    gpus = allocation_gpus()
    trainable = tune.with_resources(trial, {"cpu": 1, "gpu": 1 if gpus else 0})
    storage_path, storage_fs = ray_storage(ray_url)
    experiment = f"{storage_path}/{SEARCH_NAME}"
    progress = SearchProgress(node_url, planned_trials(search), evaluations)
    started = time.perf_counter()
    restored = tune.Tuner.can_restore(experiment, storage_filesystem=storage_fs)
    if restored:
        ctx.log.info("resuming the search in %s: finished trials are kept", experiment)
        tuner = tune.Tuner.restore(experiment, trainable, resume_unfinished=True, restart_errored=True,
                                   storage_filesystem=storage_fs)
    else:
        scheduler: Any
        if search.scheduler == "asha":
            scheduler = ASHAScheduler(max_t=evaluations, grace_period=search.grace_period,
                                      reduction_factor=search.reduction_factor)
        else:
            scheduler = FIFOScheduler()
        slots = int(ray.cluster_resources().get("GPU" if gpus else "CPU", 1))
        # reuse_actors: a new trial runs in the worker process of a finished or stopped
        # one, which has torch and transformers imported already (on CPU the import is a
        # large part of a short trial). Each trial still builds its own model, data order
        # and RNG state.
        tuner = tune.Tuner(
            trainable,
            param_space=search_space(search.space),
            tune_config=tune.TuneConfig(metric="dev", mode="max", num_samples=search.trials,
                                        scheduler=scheduler, reuse_actors=True,
                                        max_concurrent_trials=search.max_concurrent or slots),
            run_config=tune.RunConfig(storage_path=storage_path, storage_filesystem=storage_fs, name=SEARCH_NAME,
                                      verbose=0, callbacks=[progress]),
        )
    if ctx.stop.is_set():
        raise Preempted("stop requested before the search started")
    with graceful_stop_on(ctx.stop):
        grid = tuner.fit()
    if ctx.stop.is_set():
        raise Preempted(f"search stopped; Ray's state is saved in {experiment} and resumes on the next run")
    trials = [_trial_row(grid[index], list(search.space), evaluations) for index in range(len(grid))]
    progress.write_final(trials)
    finished = [t for t in trials if t["best_dev"] is not None]
    if not finished:
        raise RuntimeError(f"every trial of the search failed: {[t['error'] for t in trials]}")
    best = max(finished, key=lambda t: t["best_dev"])
    ctx.log.info("tune %s: best %s dev %.2f over %d trials", task.name, best["config"], best["best_dev"], len(trials))
    return {
        "task": task.name,
        "best": best["config"],
        "best_metric": best["best_dev"],
        "metric": task.metric,
        "max_evaluations": evaluations,
        "budget_steps": budget,
        "mode": "max",
        "resumed": restored,
        "hosts": sorted({t["host"] for t in trials if t["host"]}),
        "trials": trials,
        "tune_seconds": round(time.perf_counter() - started, 3),
    }


def _trial_row(result: Any, names: list[str], evaluations: int) -> dict[str, Any]:
    """One line of the trials table from a Ray result."""
    history = result.metrics_dataframe
    reported = history is not None and len(history) > 0 and "dev" in history
    used = int(history["training_iteration"].max()) if reported else 0
    return {
        "config": chosen_values(result.config, names),
        "best_dev": float(history["dev"].max()) if reported else None,
        "evaluations": used,
        "steps": int(history["step"].max()) if reported else 0,
        "state": "ERROR" if result.error else "TERMINATED",
        "stopped_early": reported and used < evaluations,
        # the last report: a trial restarted by a resume has its old run's rows in the history too
        "host": result.metrics.get("host") if reported else None,
        "started": result.metrics.get("trial_started") if reported else None,
        "last_report": result.metrics.get("reported") if reported else None,
        "error": str(result.error) if result.error else None,
    }


@dataclass(frozen=True)
class TrialTracking:
    """The live curves of a search's trials: one TensorBoard run per trial under the
    tune node's `tensorboard/<trial id>/`, and a W&B run per trial grouped by the node."""

    policy: TrackingPolicy
    node: NodeRecord[TuneConfig]
    events_url: str | None
    """The node's `tensorboard/` folder in the store."""

    def open(self, trial_id: str, values: dict[str, Any], scratch: Path) -> Tracker:
        run = node_run(self.node, trial=trial_id, extra_config={"trial": values})
        url = f"{self.events_url}/{trial_id}" if self.events_url else None
        # a restarted trial trains from step 0 again: purge its earlier attempt's points
        return open_tracker(self.policy, run, url, scratch, logging.getLogger("xstilts.tune"), purge_step=0)


class TrialSpec:
    """What a trial needs, picklable for Ray: store URL and input refs, not local paths,
    since the trial may run on another host of the allocation."""

    def __init__(self, store_url: str, encoder_ref: str, data_ref: str, task: Task, budget: int,
                 node_config: TuneConfig, tracking: TrialTracking | None = None) -> None:
        self.tracking = tracking
        self.store_url = store_url
        self.encoder_ref = encoder_ref
        self.data_ref = data_ref
        self.task = task
        self.budget = budget
        self.node_config = node_config

    def run(self, config: dict[str, Any]) -> None:
        """One trial: our trainer for `budget` steps, reporting the dev metric to Ray Tune."""
        import torch
        from ray import tune
        from transformers import AutoTokenizer

        from xstilts.jobs.acceleration import AccelerationPolicy, speedups_for
        from xstilts.jobs.device import select_device
        from xstilts.jobs.entry import fetch_input
        from xstilts.jobs.heads import head_for
        from xstilts.jobs.trainer import Trainer, TrainConfig

        started = time.time()
        host = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
        torch.set_num_threads(1)
        quiet_progress_bars()
        store = Store(self.store_url)
        encoder_dir = fetch_input(store, self.encoder_ref) / MODEL_SUBDIR
        data_dir = fetch_input(store, self.data_ref) / data.DATA_SUBDIR
        pad_id = AutoTokenizer.from_pretrained(encoder_dir).pad_token_id
        train_data, dev_data, dev_examples = data.english_train_dev(data_dir, pad_id)
        head = head_for(self.task)
        head.configure(data_dir, self.node_config.prefix_length)
        seed = self.node_config.seed
        hparams = Hyperparameters.model_validate({
            **self.node_config.hparams.model_dump(), **chosen_values(config, list(config)),
            "max_steps": self.budget, "patience": None,
        })
        acceleration = AccelerationPolicy.from_env(os.environ)  # trial workers inherit the job's environment
        train_config = TrainConfig.from_hparams(hparams, len(train_data), seed, acceleration.eval_batch_size)
        device = select_device()
        metrics_path = Path(tempfile.mkdtemp(prefix="trial-")) / "metrics.jsonl"
        model = head.load_model(encoder_dir) if self.node_config.continue_head else head.build_model(encoder_dir, seed)

        def report(step: int, value: float, scores: dict[str, float]) -> None:
            tune.report({"dev": value, "step": step, "host": host, "trial_started": started, "reported": time.time()})

        trainer = Trainer(
            model, self.task, train_data, dev_data, train_config, device, metrics_path,
            logging.getLogger("xstilts.tune"), dev_examples=dev_examples, head=head, on_eval=report,
            speedups=speedups_for(device, 1, acceleration),
        )
        if self.tracking is None:
            trainer.fit()
            return
        trial_id = tune.get_context().get_trial_id() or f"trial-{os.getpid()}"
        with self.tracking.open(trial_id, chosen_values(config, list(config)), metrics_path.parent) as tracker:
            trainer.tracker = tracker
            trainer.fit()
