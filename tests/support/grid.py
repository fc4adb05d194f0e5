"""Helpers for tests that run real grids through the CLI in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from tests.support.specs import demo_raw

XSTILTS = [sys.executable, "-c", "from xstilts.cli import main; main()"]


def small_grid_raw(storage: str) -> dict[str, Any]:
    """The demo spec shrunk to 8 nodes that each take a few seconds."""
    raw = demo_raw()
    raw["name"] = "small"
    raw["storage"] = storage
    raw["model"]["pretrain_steps"] = 10
    raw["intermediate"]["tasks"] = ["none", "syn-rate"]
    raw["target"]["tasks"] = ["syn-sent"]
    raw["seeds"] = [1]
    raw["intermediate"]["hparams"].update(max_steps=8, eval_interval=4)
    raw["target"]["hparams"].update(max_steps=8, eval_interval=4)
    return raw


def write_small_grid(tmp_path: Path, storage: str | None = None, **top: Any) -> Path:
    raw = small_grid_raw(storage or str(tmp_path / "store"))
    raw.update(top)
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "COLUMNS": "200", "XSTILTS_LEASE_TTL": "20", **(extra or {})}


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*XSTILTS, *args], capture_output=True, text=True, env=env or cli_env(), timeout=timeout)


def start_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([*XSTILTS, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env or cli_env())


def status_json(spec: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = run_cli("status", str(spec), "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_until(predicate: Any, timeout: float = 300, every: float = 0.5) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s")


def node_states(store_root: Path) -> dict[str, dict[str, Any]]:
    """key -> state.json for every node folder under a local store."""
    states = {}
    for path in store_root.glob("nodes/*/*/state.json"):
        states[path.parent.name] = json.loads(path.read_text())
    return states


def completed_attempts(state: dict[str, Any]) -> int:
    return sum(1 for attempt in state.get("attempts", []) if attempt.get("outcome") == "done")


def run_upstream_in_process(spec: Path, stage: str) -> Any:
    """Run every node of `stage`, and what they need, in this process, one after another,
    as a compute node runs each (`xstilts.jobs.entry.run_node`); returns the experiment.

    For reference runs: the finished weights of one stage, without the rest of the grid
    and without a fresh interpreter (and its imports) per node. One thread, as the local
    launcher and the test cluster's profile run nodes, so that float sums match theirs.
    """
    from xstilts.jobs.entry import run_node
    from xstilts.launcher.experiment import open_experiment

    experiment = open_experiment(str(spec))
    experiment.materialize()
    needed: set[str] = set()

    def need(node: Any) -> None:
        if node.key not in needed:
            needed.add(node.key)
            for upstream in node.inputs.values():
                need(upstream)

    for node in experiment.plan.nodes:
        if node.stage == stage:
            need(node)
    threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        for node in experiment.plan.nodes:  # dependency order
            if node.key in needed:
                assert run_node(experiment.store.url, node.ref, job_id="reference") == 0, node.label
    finally:
        if threads is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = threads
    return experiment
