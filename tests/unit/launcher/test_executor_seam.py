"""The executor seam and what rides on it: the one selection rule, profiles per executor,
`--version`, one results table for `launch --wait` and `analysis table`."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

import xstilts
from tests.support.specs import demo_raw
from tests.support.grid import run_cli, small_grid_raw
from xstilts.core.errors import UserError
from xstilts.core.plan import Node, Plan, build_plan
from xstilts.core.spec import validate
from xstilts.core.store import DONE, Store
from xstilts.core.tasks import TASKS
from xstilts.launcher.executors import executor_for
from xstilts.launcher.executors.local import LocalExecutor
from xstilts.launcher.executors.slurm import SlurmExecutor
from xstilts.launcher.experiment import open_experiment
from xstilts.launcher.local_runner import LocalRunner
from xstilts.launcher.profiles import LocalProfile, SlurmProfile, load_profile, profile_from_json
from xstilts.launcher.selection import select_nodes


def test_version_prints_the_package_version_and_exits_0() -> None:
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"xstilts {xstilts.__version__}"


# -- profiles ------------------------------------------------------------------------------
def _write(tmp_path: Path, raw: dict[str, Any]) -> str:
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_a_local_profile_takes_no_slurm_key(tmp_path: Path) -> None:
    with pytest.raises(UserError) as caught:
        load_profile(_write(tmp_path, {"executor": "local", "partition": "gpu", "max_parallel": 1}))
    message = str(caught.value)
    assert "unknown profile key 'partition'" in message
    assert "valid: env, executor, max_parallel, max_requeues, name, procs_per_node" in message


def test_a_slurm_profile_takes_no_local_key(tmp_path: Path) -> None:
    with pytest.raises(UserError) as caught:
        load_profile(_write(tmp_path, {"executor": "slurm", "max_parallel": 2, "procs_per_node": 2}))
    message = str(caught.value)
    assert "unknown profile key 'max_parallel'" in message and "unknown profile key 'procs_per_node'" in message
    assert "partition" in message  # the valid keys are the slurm ones


def test_an_unknown_executor_names_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(UserError) as caught:
        load_profile(_write(tmp_path, {"executor": "slrum"}))
    assert "unknown executor 'slrum' (did you mean 'slurm'?); valid: local, slurm" in str(caught.value)


def test_shipped_profiles_pick_their_executor_and_survive_json() -> None:
    local, slurm = load_profile("local"), load_profile("slurm")
    assert isinstance(local, LocalProfile) and isinstance(executor_for(local), LocalExecutor)
    assert isinstance(slurm, SlurmProfile) and isinstance(executor_for(slurm), SlurmExecutor)
    for profile in (local, slurm):
        assert profile_from_json(profile.model_dump_json()) == profile


# -- the selection rule -------------------------------------------------------------------
def _demo_plan() -> Plan:
    return build_plan(validate(demo_raw()))


def _dependants(plan: Plan, root: Node) -> list[Node]:
    """Every node that needs `root`, directly or not, in plan order."""
    downstream = {root.key}
    for node in plan.nodes:
        if any(dep.key in downstream for dep in node.inputs.values()):
            downstream.add(node.key)
    return [node for node in plan.nodes if node.key in downstream and node.key != root.key]


def test_select_nodes_groups_every_node_once() -> None:
    plan = _demo_plan()
    train = next(node for node in plan.nodes if node.stage == "train-intermediate")
    queued = next(node for node in plan.nodes if node.stage == "train-target" and train not in node.inputs.values())
    statuses: dict[str, tuple[str, dict[str, Any]]] = {}
    for node in plan.nodes:
        statuses[node.key] = ("done", {}) if node.stage == "prepare" else ("pending", {})
    statuses[train.key] = ("failed", {})
    statuses[queued.key] = ("queued", {})
    below = {node.key for node in _dependants(plan, train)}

    local = select_nodes(plan, statuses, retry_failed=False, live={"running"})
    assert [n.key for n in local.failed] == [train.key]
    assert {n.key for n in local.blocked} == below and below
    assert queued in local.submit  # a local `queued` without a lease: its scheduler is gone
    everything = [*local.submit, *local.done, *local.live, *local.failed, *local.blocked]
    assert sorted(n.key for n in everything) == sorted(n.key for n in plan.nodes)

    on_slurm = select_nodes(plan, statuses, retry_failed=False, live={"queued", "running", "preempted"})
    assert [n.key for n in on_slurm.live] == [queued.key] and queued not in on_slurm.submit
    assert all(n in on_slurm.submit for n in _dependants(plan, queued) if n.key not in below)

    retried = select_nodes(plan, statuses, retry_failed=True, live={"running"})
    assert train in retried.submit and not retried.blocked and not retried.failed
    assert all(n in retried.submit for n in _dependants(plan, train))


# -- one results table --------------------------------------------------------------------
def _finish(store: Store, node: Node, result: dict[str, Any]) -> None:
    folder = store.node_path(node.stage, node.key)
    store.write_json(f"{folder}/state.json", {"status": "done", "attempts": [
        {"started": 1.8e9, "ended": 1.8e9 + 60, "host": "h", "job_id": "1", "outcome": "done"}]})
    store.write_json(f"{folder}/result.json", result)
    store.write_text(f"{folder}/{DONE}", f"{time.time()}\n")


def _set_status(store: Store, node: Node, status: str) -> None:
    store.write_json(store.node_path(node.stage, node.key, "state.json"), {"status": status, "attempts": []})


def test_launch_wait_and_analysis_table_print_the_same_table(tmp_path: Path) -> None:
    raw = demo_raw()
    raw["storage"] = str(tmp_path / "store")
    spec = tmp_path / "half.yaml"
    spec.write_text(yaml.safe_dump(raw, sort_keys=False))
    experiment = open_experiment(str(spec))
    experiment.materialize()
    plan, store = experiment.plan, experiment.store
    evaluations = plan.evaluations()
    failed_eval = evaluations[0]
    failed_train = next(n for n in plan.nodes if n.stage == "train-target"
                        and n.key not in {d.key for d in failed_eval.inputs.values()})
    left = {failed_eval.key, failed_train.key, *(n.key for n in _dependants(plan, failed_train))}
    for node in plan.nodes:
        if node.key not in left:
            metric = TASKS[node.task].metric if node.task in TASKS else "accuracy"
            languages = {"en": {metric: 50.0 + int(node.key[:2], 16) % 7}, "qaa": {metric: 40.0}}
            _finish(store, node, {"task": node.task, "languages": languages} if node.stage == "evaluate" else {})
    _set_status(store, failed_eval, "failed")
    _set_status(store, failed_train, "failed")
    for node in _dependants(plan, failed_train):
        _set_status(store, node, "interrupted")  # stopped before, now blocked by the failed input

    launched = run_cli("launch", str(spec), "--wait")
    assert launched.returncode == 0, launched.stdout + launched.stderr
    first, _, launch_table = launched.stdout.partition("\n")
    assert first.startswith("submitted 0 nodes") and "blocked by failed inputs" in first, first
    tabled = run_cli("analysis", "table", str(spec))
    assert tabled.returncode == 0, tabled.stderr
    assert launch_table == tabled.stdout
    assert "failed 2/2" in launch_table and "± " in launch_table and "zero-shot cross-lingual transfer" in launch_table
    cells = json.loads(run_cli("analysis", "table", str(spec), "--json").stdout)["cells"]
    assert any(cell["status"] and cell["status"].startswith("failed") for cell in cells)


# -- the local scheduler's loop -----------------------------------------------------------
class _ScriptedRunner(LocalRunner):
    """Node processes that only commit (write DONE) or fail (record it and exit 1, as a
    node process does): the loop, without training."""

    failing: set[str] = set()

    def _command(self, node: Node, submission: str) -> list[str]:
        if node.key in self.failing:
            state = Path(self.store.node_path(node.stage, node.key, "state.json"))
            record = json.dumps({"status": "failed", "attempts": []})
            return [sys.executable, "-c", f"open({str(state)!r}, 'w').write({record!r}); raise SystemExit(1)"]
        done = Path(self.store.node_path(node.stage, node.key, DONE))
        result = done.with_name("result.json")
        return [sys.executable, "-c", f"open({str(result)!r}, 'w').write('{{}}'); open({str(done)!r}, 'w').write('done')"]


def _run(tmp_path: Path, plan: Plan, failing: set[str], retry_failed: bool) -> tuple[Any, list[str]]:
    started: list[str] = []
    runner = _ScriptedRunner(Store(str(tmp_path / "store")), plan, LocalProfile(max_parallel=3), retry_failed,
                             lambda kind, node, _detail: started.append(node.key) if kind == "start" else None)
    runner.failing = failing
    return runner.run(), started


def test_the_local_loop_runs_what_select_nodes_chooses_and_retries_a_failure_once(tmp_path: Path) -> None:
    plan = build_plan(validate(small_grid_raw(str(tmp_path / "store"))))
    train = next(node for node in plan.nodes if node.stage == "train-intermediate")
    below = sorted(node.key for node in _dependants(plan, train))

    first, started = _run(tmp_path, plan, {train.key}, retry_failed=False)
    assert first.failed == [train.key] and first.blocked == below
    assert len(started) == len(plan.nodes) - len(below)

    again, started = _run(tmp_path, plan, set(), retry_failed=False)
    assert started == [] and again.blocked == below  # a failure is not retried unasked

    retried, started = _run(tmp_path, plan, {train.key}, retry_failed=True)
    assert started == [train.key] and retried.failed == [train.key]  # retried once, not again and again

    fixed, started = _run(tmp_path, plan, set(), retry_failed=True)
    assert fixed.ok and sorted(started) == sorted([train.key, *below])
