"""Provenance of real runs: a grid launched from a throw-away git checkout of xstilts,
launched again (one more seed) after a tracked file was edited. Every attempt records
its code version and machine; `status` and `analysis table` warn that the done nodes come
from two code versions, with the counts; `xstilts history` numbers both launches with
their code versions and what changed in the spec."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.grid import XSTILTS, cli_env, node_states, write_small_grid
from tests.support.paths import REPO

FOLDERS = {"xstilts": "xstilts", "core": "xstilts/core", "launcher": "xstilts/launcher",
           "analysis": "xstilts/analysis", "jobs": "xstilts/jobs", "cluster_profiles": "xstilts/cluster_profiles",
           "experiments": "xstilts/experiments"}
"""Repository folder -> where the copy holds it: the import package laid out as installed,
so that `PYTHONPATH=<copy>` imports every module of xstilts from the copy."""


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@x", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def source_checkout(root: Path) -> Path:
    """A git checkout of this xstilts, committed once."""
    for folder, inside in FOLDERS.items():
        shutil.copytree(REPO / folder, root / inside, ignore=shutil.ignore_patterns("__pycache__"),
                        dirs_exist_ok=True)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "copy")
    return root


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The CLI from outside the repository (`-c` puts the working folder first on
    sys.path): every process then imports xstilts from the checkout on PYTHONPATH."""
    return subprocess.run([*XSTILTS, *args], capture_output=True, text=True, env=env, timeout=600,
                          cwd=Path(args[1]).parent)


@dataclass
class Runs:
    spec: Path
    store: Path
    env: dict[str, str]
    first_code: str
    second_code: str


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    tmp = tmp_path_factory.mktemp("provenance")
    source = source_checkout(tmp / "src")
    env = cli_env({"PYTHONPATH": str(source)})
    spec = write_small_grid(tmp, intermediate={"tasks": ["none"], "hparams": {"max_steps": 8, "eval_interval": 4}})
    first = run_cli("launch", str(spec), "--wait", env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    commit = git(source, "rev-parse", "HEAD")
    evaluate = source / "xstilts" / "jobs" / "stages" / "evaluate.py"
    evaluate.write_text(evaluate.read_text() + "\n# a bug fix\n")  # a tracked file edited: a dirty tree
    second = run_cli("launch", str(spec), "-o", "seeds=[1,2]", "--wait", env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    return Runs(spec=spec, store=tmp / "store", env=env, first_code=commit[:12],
                second_code=_code_of_newest_launch(tmp / "store"))


def _code_of_newest_launch(store: Path) -> str:
    newest = sorted((store / "small" / "launches").glob("*.json"))[-1]
    return str(json.loads(newest.read_text())["code"])


def test_every_attempt_records_code_packages_machine_and_data(runs: Runs) -> None:
    assert runs.second_code.startswith(f"{runs.first_code}+dirty.")
    states = node_states(runs.store)
    assert len(states) == 6  # model, data, train-target and evaluate for seed 1, both again for seed 2
    codes = []
    for key, state in states.items():
        done = [a for a in state["attempts"] if a.get("outcome") == "done"]
        assert len(done) == 1, key
        provenance = done[0]["provenance"]
        assert provenance["world_size"] == 1
        assert provenance["gpu"] == {"model": None, "count": 0}
        assert provenance["packages"]["torch"] and provenance["packages"]["python"]
        assert provenance["git"]["commit"].startswith(runs.first_code)
        codes.append(provenance["code"])
    assert sorted(codes) == sorted([runs.first_code] * 4 + [runs.second_code] * 2)
    node_jsons = {p.parent.name: json.loads(p.read_text()) for p in runs.store.glob("nodes/*/*/node.json")}
    data_key = next(key for key, node in node_jsons.items() if node["kind"] == "data")
    data_attempt = states[data_key]["attempts"][-1]["provenance"]["data"]
    assert data_attempt["result"] == "result.json"
    evaluate_key = next(key for key, node in node_jsons.items() if node["stage"] == "evaluate")
    assert states[evaluate_key]["attempts"][-1]["provenance"]["data"] == {"inputs": {"data": f"prepare/{data_key}"}}


def test_status_and_the_table_warn_about_two_code_versions(runs: Runs) -> None:
    expected = f"done nodes come from 2 code versions: {runs.first_code} (4), {runs.second_code} (2)"
    status = run_cli("status", str(runs.spec), env=runs.env)
    assert status.returncode == 0, status.stderr
    assert f"warning: {expected}" in status.stderr
    as_json = json.loads(run_cli("status", str(runs.spec), "--json", env=runs.env).stdout)
    assert as_json["code_versions"] == {runs.first_code: 4, runs.second_code: 2}
    table = run_cli("analysis", "table", str(runs.spec), env=runs.env)
    assert table.returncode == 0, table.stderr
    assert f"warning: {expected}" in table.stderr


def test_history_numbers_the_launches_with_code_and_spec_changes(runs: Runs) -> None:
    shown = run_cli("history", str(runs.spec), env=runs.env)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    first = next(line for line in lines if line.startswith("#1"))
    second = next(line for line in lines if line.startswith("#2"))
    assert "profile 'local'" in first and f"code {runs.first_code}" in first and "-o" not in first
    assert "-o seeds=[1,2]" in second and f"code {runs.second_code}" in second
    assert "seeds: [1] -> [1, 2]" in shown.stdout
    records = json.loads(run_cli("history", str(runs.spec), "--json", env=runs.env).stdout)["launches"]
    assert [r["number"] for r in records] == [1, 2]
    assert records[0]["changes"] is None
    assert records[1]["changes"] == [{"key": "seeds", "before": [1], "after": [1, 2]}]
    assert records[1]["overrides"] == ["seeds=[1,2]"] and "@" not in records[1]["user"]
