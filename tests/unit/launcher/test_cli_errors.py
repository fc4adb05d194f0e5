"""Bad input: one clear message, exit code 2, nothing written, from plan and launch alike."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from tests.support.specs import demo_raw

XSTILTS = [sys.executable, "-c", "from xstilts.cli import main; main()"]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([*XSTILTS, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=60)


def _spec_with(write_spec: Callable[..., Path], case: str, tmp_path: Path) -> tuple[Path, list[str]]:
    """(spec path, extra CLI args) for one kind of bad input."""
    if case == "missing spec file":
        return tmp_path / "nope.yaml", []
    if case == "malformed YAML":
        path = tmp_path / "bad.yaml"
        path.write_text("name: demo\nmodel: [\n  tiny: {\n")
        return path, []
    raw = demo_raw()
    extra: list[str] = []
    if case == "unknown task":
        raw["target"]["tasks"] = ["syn-sent", "xnlii"]
    elif case == "unknown key":
        raw["target"]["hparams"]["learning_rte"] = 0.1
    elif case == "wrong type":
        raw["seeds"] = ["one"]
    elif case == "unknown storage scheme":
        raw["storage"] = "nosuch://bucket/prefix"
    elif case == "unknown profile":
        extra = ["--profile", "slurmm"]
    elif case == "empty seeds":
        raw["seeds"] = []
    elif case == "duplicate tasks":
        raw["intermediate"]["tasks"] = ["none", "syn-rate", "syn-rate"]
    elif case == "bad override":
        extra = ["-o", "target.hparams.epochs=lots"]
    if raw.get("storage", "").startswith("nosuch"):
        return write_spec(raw={**raw}), extra
    return write_spec(raw={**raw, "storage": str(tmp_path / "store")}), extra


CASES = {
    "unknown task": "unknown target task 'xnlii' (did you mean 'xnli'?); valid:",
    "unknown key": "target.hparams.learning_rte: unknown key 'learning_rte' (did you mean 'learning_rate'?)",
    "wrong type": "seeds.0",
    "missing spec file": "spec file not found",
    "malformed YAML": "malformed YAML at line",
    "unknown storage scheme": "unknown storage scheme 'nosuch://'",
    "unknown profile": "unknown cluster profile 'slurmm'",
    "empty seeds": "seeds: needs at least one seed",
    "duplicate tasks": "duplicate task names: syn-rate",
    "bad override": "target.hparams.epochs",
}


@pytest.mark.parametrize("command", ["plan", "launch"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exits_2_with_one_message_and_writes_nothing(
    command: str, case: str, write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    spec, extra = _spec_with(write_spec, case, tmp_path)
    args = [command, str(spec), *extra]
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr + result.stdout
    assert CASES[case] in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.startswith("error:")
    assert not (tmp_path / "store").exists()
    assert not any(p.name.startswith("nosuch") for p in tmp_path.iterdir())


def test_logs_of_unknown_node_is_a_user_error(write_spec: Callable[..., Path]) -> None:
    result = run_cli("logs", str(write_spec()), "zzzz")
    assert result.returncode == 2
    assert "no node of experiment 'demo' has a key starting with 'zzzz'" in result.stderr


def test_launch_refuses_memory_storage(write_spec: Callable[..., Path]) -> None:
    raw = demo_raw()
    raw["storage"] = "memory://grid"
    result = run_cli("launch", str(write_spec(raw=raw)))
    assert result.returncode == 2
    assert "memory:// lives inside one process" in result.stderr


def test_dry_run_writes_nothing(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    result = run_cli("launch", str(write_spec()), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "56 to run" in result.stdout
    assert not (tmp_path / "store").exists()


def test_tasks_lists_the_registry_and_filters_by_role() -> None:
    import json

    from xstilts.core.tasks import TASKS

    listed = json.loads(run_cli("tasks", "--json").stdout)
    assert [t["name"] for t in listed] == sorted(TASKS)
    targets = json.loads(run_cli("tasks", "--role", "target", "--json").stdout)
    assert targets and all("target" in t["roles"] for t in targets)
    bad = run_cli("tasks", "--role", "targt")
    assert bad.returncode == 2 and "unknown role 'targt' (did you mean 'target'?)" in bad.stderr
