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

from tests.conftest import demo_raw

XSTILTS = [sys.executable, "-c", "from launcher.cli import main; main()"]


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
