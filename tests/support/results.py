"""Stores shaped the way jobs leave them (DONE, result.json, state.json), without training."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import pytest
import yaml

from xstilts.analysis.collect import (
    CACHE_FILE, cache_path, collect_frame, infer_format, missing_cells, read_frame, train_chain, write_frame,
)
from xstilts.analysis.frame import COLUMNS
from xstilts.launcher.experiment import Experiment, open_experiment
from xstilts.core.commit_record import done_marker
from xstilts.core.plan import Node, build_plan
from xstilts.core.spec import validate
from xstilts.core.store import DONE, Store
from tests.support.specs import demo_raw


T0 = 1_800_000_000.0
SCORES = {
    "syn-sent": lambda v: {"accuracy": v},
    "syn-pos": lambda v: {"f1": v, "precision": v + 1, "recall": v - 1, "seqeval_f1": v},
}


def spec_raw(storage: str, gpus: bool = False) -> dict[str, Any]:
    raw = demo_raw()
    raw["storage"] = storage
    if gpus:
        raw["resources"] = {"train-target": {"gpus": 2, "cpus": 8}, "evaluate": {"gpus": 1, "cpus": 8}}
    return raw


def open_raw(tmp_path: Path, raw: dict[str, Any]) -> Experiment:
    path = tmp_path / f"spec-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    experiment = open_experiment(str(path))
    experiment.materialize()
    return experiment


def value_of(node: Node, language: str) -> float:
    """A distinct, reproducible score per (cell, language)."""
    return round(10 + 3 * node.seed + len(node.intermediate) + "en qaa qab qac".split().index(language) * 0.25, 4)


def evaluate_result(node: Node) -> dict[str, Any]:
    languages = {lang: SCORES[node.task](value_of(node, lang)) for lang in ("en", "qaa", "qab", "qac")}
    return {"task": node.task, "metric": "x", "languages": languages, "average": 0.0,
            "node": {"key": node.key, "stage": node.stage, "seconds": 1.0}}


def attempts(hours: list[float | None]) -> list[dict[str, Any]]:
    """Attempts of the given wall hours one after the other; None: killed, no `ended`."""
    out, start = [], T0
    for i, h in enumerate(hours):
        attempt = {"started": start, "host": "h", "job_id": str(i), "attempt": i + 1}
        if h is not None:
            attempt.update(ended=start + h * 3600, outcome="done" if i == len(hours) - 1 else "preempted")
            start += h * 3600
        out.append(attempt)
    return out


def train_hours(node: Node) -> list[float | None]:
    return [0.5, None, 1.25] if node.seed == 1 else [2.0]


def eval_hours(node: Node) -> list[float | None]:
    return [0.1]


def finish(store: Store, node: Node, hours: list[float | None], result: dict[str, Any] | None = None) -> None:
    """What a job leaves in a done node: state with its attempts, result.json, DONE last."""
    folder = store.node_path(node.stage, node.key)
    store.write_json(f"{folder}/state.json", {"status": "done", "attempts": attempts(hours)})
    store.write_json(f"{folder}/result.json", result or {"node": {"seconds": 1.0}})
    store.write_text(f"{folder}/{DONE}", f"{time.time()}\n")


def finish_node(store: Store, node: Node, when: float, result: dict[str, Any], state: dict[str, Any]) -> None:
    """What a job leaves in a finished node (jobs/entry.py's order: state, result, DONE),
    DONE carrying both as `jobs.entry` writes it, committed at `when`. Unlike `finish`,
    the DONE is the real commit record (`done_marker`), as readers that check it need.
    The benches write their own extra files (lease, logs, metrics) around it."""
    folder = store.node_path(node.stage, node.key)
    store.write_json(f"{folder}/state.json", state)
    store.write_json(f"{folder}/result.json", result)
    store.write_text(f"{folder}/{DONE}", done_marker(when, state, result))


def finish_cell(store: Store, node: Node) -> None:
    for train in train_chain(node):
        finish(store, train, train_hours(train))
    finish(store, node, eval_hours(node), evaluate_result(node))


def set_status(store: Store, node: Node, status: str) -> None:
    store.write_json(store.node_path(node.stage, node.key, "state.json"),
                     {"status": status, "attempts": attempts([0.2]) if status == "failed" else []})


def expected_rows(experiment: Experiment, nodes: list[Node], devices: tuple[int, int], unit: str) -> pd.DataFrame:
    """The frame the generated files must give, computed independently of the module."""
    rows = []
    for node in nodes:
        train = sum(h or 0 for t in train_chain(node) for h in train_hours(t))
        cost = train * devices[0] + sum(h or 0 for h in eval_hours(node)) * devices[1]
        for language in ("en", "qaa", "qab", "qac"):
            for metric, value in sorted(SCORES[node.task](value_of(node, language)).items()):
                control = "syn-shapes-mcm" if node.intermediate == "syn-shapes-mcm-text" else None
                modality = {"none": "-", "syn-shapes-mcm": "multimodal", "syn-shapes-mcm-text": "text control"}
                rows.append({"intermediate": node.intermediate, "target": node.task, "seed": node.seed,
                             "language": language, "metric": metric, "value": value, "key": node.key,
                             "modality": modality.get(node.intermediate, "text"), "control_of": control,
                             "cost_hours": cost, "cost_unit": unit, "gold_withheld": False})
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["control_of"] = frame["control_of"].astype(object).where(frame["control_of"].notna(), None)
    return frame


def assert_same_rows(frame: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(frame.columns) == list(COLUMNS)
    order = ["key", "language", "metric"]
    got = frame.sort_values(order).reset_index(drop=True)
    want = expected.sort_values(order).reset_index(drop=True)
    for name in COLUMNS:
        if name in ("value", "cost_hours"):
            assert got[name].tolist() == pytest.approx(want[name].tolist(), rel=1e-9), name
        else:
            assert got[name].tolist() == want[name].tolist(), name


class Reads:
    """Records the paths the store reads (cat_file), checks (exists) and lists
    recursively (find: object stores) while active."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.cat: list[str] = []
        self.exists: list[str] = []
        self.listed: list[str] = []
        self.lock = threading.Lock()
        fs = store.fs
        monkeypatch.setattr(fs, "cat_file", self._wrap(fs.cat_file, self.cat))
        monkeypatch.setattr(fs, "exists", self._wrap(fs.exists, self.exists))
        monkeypatch.setattr(fs, "find", self._wrap(fs.find, self.listed))

    def _wrap(self, real: Callable[..., Any], log: list[str]) -> Callable[..., Any]:
        def wrapper(path: str, *args: Any, **kwargs: Any) -> Any:
            with self.lock:
                log.append(str(path))
            return real(path, *args, **kwargs)
        return wrapper

    def node_reads(self) -> set[str]:
        """'stage/key' of every node a file was read from."""
        return {"/".join(p.split("/nodes/", 1)[1].split("/")[:2]) for p in self.cat if "/nodes/" in p}

    def clear(self) -> None:
        self.cat.clear()
        self.exists.clear()
        self.listed.clear()


# -- tests -----------------------------------------------------------------------------------
