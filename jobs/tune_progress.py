"""A search's progress, kept in the tune node's folder for `xstilts status`.

A Ray Tune callback on the driver rewrites `progress.json` (atomically, through the
store) as trials start, report and end: trials planned, pending, running, finished (and
how many of those ASHA stopped early), errored, and the best configuration so far. It
writes at most every few seconds, and always when a trial ends, so a long search on
object storage costs a handful of small writes a minute.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ray.tune import Callback

from xstilts.core.store import Store

PROGRESS_FILE = "progress.json"
PROGRESS_EVERY_S = 2.0

log = logging.getLogger("xstilts.tune")


class SearchProgress(Callback):
    """Keeps `progress.json` current while Ray Tune runs the trials."""

    def __init__(self, node_url: str, planned: int, evaluations: int) -> None:
        self.node_url = node_url  # the URL, not a Store: Ray pickles callbacks with the experiment
        self.planned = planned
        self.evaluations = evaluations
        self.last_write = 0.0

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._write(trials, force=False)

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict, **info: Any) -> None:
        self._write(trials, force=False)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._write(trials, force=True)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._write(trials, force=True)

    def write_final(self, rows: list[dict[str, Any]]) -> None:
        """The last word, from the finished search's trial table."""
        finished = [r for r in rows if r["best_dev"] is not None]
        best = max(finished, key=lambda r: r["best_dev"]) if finished else None
        self._store_write({
            "planned": self.planned, "pending": 0, "running": 0,
            "finished": sum(r["state"] == "TERMINATED" for r in rows),
            "stopped_early": sum(bool(r["stopped_early"]) for r in rows),
            "errored": sum(r["state"] == "ERROR" for r in rows),
            "best": best["config"] if best else None, "best_metric": best["best_dev"] if best else None,
            "trials": [{"config": r["config"], "state": r["state"], "best_dev": r["best_dev"],
                        "started": r["started"]} for r in rows],
            "updated": time.time(), "complete": True,
        })

    def _store_write(self, progress: dict[str, Any]) -> None:
        """Replace `progress.json` in the node's folder (atomically, through the store)."""
        folder = Store(self.node_url)
        folder.write_json(folder.path(PROGRESS_FILE), progress)

    def _write(self, trials: list[Any], force: bool) -> None:
        now = time.time()
        if not force and now - self.last_write < PROGRESS_EVERY_S:
            return
        self.last_write = now
        try:
            self._store_write(progress_summary(trials, self.planned, self.evaluations))
        except Exception as exc:  # progress is for people; it must never stop a search
            log.warning("could not write search progress: %s", exc)


def progress_summary(trials: list[Any], planned: int, evaluations: int) -> dict[str, Any]:
    """Counts by state and the best so far, from Ray's Trial objects."""
    states = [str(t.status) for t in trials]
    best_trial, best_value = None, None
    for t in trials:
        value = (t.metric_analysis.get("dev") or {}).get("max")
        if value is not None and (best_value is None or value > best_value):
            best_trial, best_value = t, value
    finished = [t for t in trials if t.status == "TERMINATED"]
    total = max(planned, len(trials))
    return {
        "planned": total,
        "pending": total - len(trials) + states.count("PENDING") + states.count("PAUSED"),
        "running": states.count("RUNNING"),
        "finished": len(finished),
        "stopped_early": sum(int((t.last_result or {}).get("training_iteration", 0)) < evaluations for t in finished),
        "errored": states.count("ERROR"),
        "best": dict(best_trial.config) if best_trial is not None else None,
        "best_metric": best_value,
        "trials": [{"config": dict(t.config), "state": str(t.status),
                    "best_dev": (t.metric_analysis.get("dev") or {}).get("max"),
                    "started": (t.last_result or {}).get("trial_started")} for t in trials],
        "updated": time.time(),
        "complete": False,
    }
