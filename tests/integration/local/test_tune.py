"""Ray Tune learning-rate search: a `tune` node per task, ASHA, and training nodes that
use what it chose (and whose keys depend on it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
# tests.support.tune sets the environment (offline hub, threads) before these imports
from tests.support.tune import (
    LEARNING_RATES, STOPPED_SEARCH_RATES, WINNER, search_spec,
)

import yaml

from xstilts.jobs.entry import run_node
from xstilts.launcher.experiment import open_experiment
from xstilts.core.plan import build_plan
from xstilts.core.spec import validate
from tests.support.specs import demo_raw


def test_tune_nodes_feed_their_choice_into_training_keys() -> None:
    tuned = build_plan(validate(search_spec(Path("/tmp/unused"))))
    fixed = build_plan(validate(search_spec(Path("/tmp/unused"), search=False)))
    tune_nodes = [n for n in tuned.nodes if n.stage == "tune"]
    assert [n.task for n in tune_nodes] == ["syn-pos"]
    train = next(n for n in tuned.nodes if n.stage == "train-target")
    assert train.inputs["tune"] is tune_nodes[0]
    plain = next(n for n in fixed.nodes if n.stage == "train-target")
    assert train.key != plain.key and train.config == plain.config  # the search is part of the key
    # The chosen value is a function of the tune node, whose key is a function of its
    # search: another space (so possibly another choice) means other training keys.
    other_raw = search_spec(Path("/tmp/unused"))
    other_raw["target"]["search"]["space"] = {"learning_rate": {"grid": [1e-4, 1e-5]}}
    other = build_plan(validate(other_raw))
    other_train = next(n for n in other.nodes if n.stage == "train-target")
    assert other_train.inputs["tune"].key != tune_nodes[0].key and other_train.key != train.key
    evaluations = {n.key for n in tuned.nodes if n.stage == "evaluate"}
    assert evaluations.isdisjoint(n.key for n in other.nodes if n.stage == "evaluate")


def test_asha_picks_the_clear_winner_and_training_uses_it(tmp_path: Path) -> None:
    spec = tmp_path / "tune.yaml"
    spec.write_text(yaml.safe_dump(search_spec(tmp_path / "store"), sort_keys=False))
    experiment = open_experiment(str(spec))
    experiment.materialize()
    for node in experiment.plan.nodes:
        assert run_node(experiment.store.url, f"{node.stage}/{node.key}", job_id="test") == 0, node.label
    tune_node = next(n for n in experiment.plan.nodes if n.stage == "tune")
    result = experiment.result(tune_node)
    assert result["best"] == {"learning_rate": WINNER}, json.dumps(result, indent=1)
    assert len(result["trials"]) == len(LEARNING_RATES)
    stopped = [t for t in result["trials"] if t["stopped_early"]]
    assert len(stopped) >= len(LEARNING_RATES) // 2, result["trials"]
    train = next(n for n in experiment.plan.nodes if n.stage == "train-target")
    assert experiment.result(train)["tuned"] == {"learning_rate": WINNER}


def test_two_tune_nodes_at_once_on_one_host(tmp_path: Path) -> None:
    """Two targets -> two tune nodes, started together by the local scheduler: each has
    its own Ray instance (temp dir, ports), and both finish."""
    from tests.support.grid import node_states, run_cli

    raw = search_spec(tmp_path / "store")
    raw["target"]["tasks"] = ["syn-sent", "syn-pos"]
    raw["target"]["search"].update(space={"learning_rate": {"grid": [WINNER, 1e-7]}}, budget_steps=40)
    spec = tmp_path / "two.yaml"
    spec.write_text(yaml.safe_dump(raw, sort_keys=False))
    result = run_cli("launch", str(spec), "--wait", timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    plan = json.loads(run_cli("plan", str(spec), "--json").stdout)
    tune_keys = [n["key"] for n in plan["nodes"] if n["stage"] == "tune"]
    assert len(tune_keys) == 2
    states = node_states(tmp_path / "store")
    (a,), (b,) = (states[key]["attempts"] for key in tune_keys)
    assert a["outcome"] == b["outcome"] == "done"
    assert a["started"] < b["ended"] and b["started"] < a["ended"], "the two searches overlapped in time"


def _wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _kill_session(sid: int) -> None:
    """SIGKILL every process of a session (Ray's workers run in process groups of their own)."""
    for _ in range(3):
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.getsid(int(entry)) == sid:
                        os.kill(int(entry), signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        time.sleep(0.2)


class SearchJob:
    """A tune node's job (`python -m xstilts.jobs.entry`, its own session, as on a cluster) for
    a six-rate search, after its prepare nodes ran; it is stopped mid-search."""

    def __init__(self, tmp_path: Path, storage: str, env: dict[str, str]) -> None:
        raw = search_spec(tmp_path / "unused")
        raw["storage"] = storage
        # Trials long enough (120 steps, ~3 s each here) that the search cannot end
        # between "two trials finished" and the stop, even with the status call and the
        # wait for Ray's state save in between: 40-step trials (~1 s) once all finished first.
        raw["target"]["search"].update(scheduler="fifo", budget_steps=120,
                                       space={"learning_rate": {"grid": STOPPED_SEARCH_RATES}})
        raw["target"]["hparams"]["eval_interval"] = 30  # still 4 evaluations per trial
        self.spec = tmp_path / "resume.yaml"
        self.spec.write_text(yaml.safe_dump(raw, sort_keys=False))
        self.env = env
        self.experiment = open_experiment(str(self.spec))
        self.experiment.materialize()
        for node in self.experiment.plan.nodes:
            if node.stage == "prepare":
                assert run_node(self.experiment.store.url, node.ref, job_id="test") == 0, node.label
        self.node = next(n for n in self.experiment.plan.nodes if n.stage == "tune")
        self.progress_path = self.experiment.store.node_path("tune", self.node.key, "progress.json")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "xstilts.jobs.entry", "--store", self.experiment.store.url, "--ref", self.node.ref],
            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def progress(self) -> dict[str, Any]:
        return self.experiment.store.read_json(self.progress_path) or {}

    def wait_for_finished_trials(self, count: int) -> None:
        _wait_for(lambda: self.progress().get("finished", 0) >= count, 300, f"{count} finished trials")
        time.sleep(2)  # past Ray's experiment-state save period (1 s)

    def finished_trials(self) -> dict[float, float]:
        """learning rate -> start time of each trial finished so far."""
        before = self.progress()
        assert before["finished"] < len(STOPPED_SEARCH_RATES), "the search must be stopped before it ends"
        finished = {t["config"]["learning_rate"]: t["started"] for t in before["trials"] if t["state"] == "TERMINATED"}
        assert len(finished) >= 2 and all(finished.values()), before
        return finished

    def check_resumed(self, finished_before: dict[float, float], stopped_at: float) -> None:
        """The search ended, resumed, without running a trial that had finished again."""
        result = self.experiment.result(self.node)
        assert result is not None and result["resumed"] is True
        assert len(result["trials"]) == len(STOPPED_SEARCH_RATES)
        rows = {t["config"]["learning_rate"]: t for t in result["trials"]}
        for lr, started in finished_before.items():
            assert rows[lr]["started"] == started, f"trial lr={lr} finished before the stop and ran again"
        # The search went on after the stop. (A trial still running in the snapshot may
        # have reported its last result just before it: Ray then counts it as done.)
        assert any(t["started"] > stopped_at for t in result["trials"]), json.dumps([stopped_at, result["trials"]])
        assert all(t["state"] == "TERMINATED" and t["evaluations"] == 4 for t in result["trials"]), result["trials"]
        assert result["best"] == {"learning_rate": WINNER}

    def kill(self) -> None:
        if self.process.poll() is None:
            _kill_session(self.process.pid)
        self.process.wait()


def test_killed_search_resumes_from_the_store_without_rerunning_finished_trials(
    tmp_path: Path, s3_env: dict[str, str], monkeypatch: Any
) -> None:
    """A tune node on s3:// (Ray's state through a pyarrow filesystem) is SIGKILLed with
    its Ray after two of six trials finished; launching again resumes the search:
    the finished trials keep their start times (not rerun), the rest run, and the
    chosen value reaches training. While it runs, status shows the search's progress."""
    from tests.support.grid import cli_env, run_cli, status_json

    for name, value in s3_env.items():
        monkeypatch.setenv(name, value)
    job = SearchJob(tmp_path, "s3://xstilts-test/resume", cli_env(s3_env))
    try:
        job.wait_for_finished_trials(2)
        rows = {row["key"]: row for row in status_json(job.spec, env=job.env)["nodes"]}
        live = rows[job.node.key]
        assert live["status"] == "running" and live["search"]["finished"] >= 2, live
        planned = len(STOPPED_SEARCH_RATES)
        assert live["headline"].startswith(f"search {live['search']['finished']}/{planned} finished"), live["headline"]
        assert "best learning_rate=0.003" in live["headline"], live["headline"]
        finished_before = job.finished_trials()
        _kill_session(job.process.pid)  # the job and every Ray process it started, as SLURM kills a job's cgroup
        killed_at = time.time()
    finally:
        job.kill()

    relaunch = run_cli("launch", str(job.spec), "--wait", env=job.env, timeout=900)
    assert relaunch.returncode == 0, relaunch.stdout + relaunch.stderr
    job.check_resumed(finished_before, killed_at)
    train = next(n for n in job.experiment.plan.nodes if n.stage == "train-target")
    assert job.experiment.result(train)["tuned"] == {"learning_rate": WINNER}


def test_preempted_search_saves_its_state_asks_for_requeue_and_resumes(tmp_path: Path) -> None:
    """SLURM's preemption signal (SIGUSR2) stops the search gracefully: the job exits
    with the requeue code and the node is `preempted`; the next run resumes it."""
    from xstilts.jobs.entry import EXIT_REQUEUE
    from tests.support.grid import cli_env

    job = SearchJob(tmp_path, str(tmp_path / "store"), cli_env())
    try:
        job.wait_for_finished_trials(2)
        finished_before = job.finished_trials()
        job.process.send_signal(signal.SIGUSR2)
        stopped_at = time.time()
        assert job.process.wait(timeout=120) == EXIT_REQUEUE
    finally:
        job.kill()
    state = job.experiment.store.read_json(job.experiment.store.node_path("tune", job.node.key, "state.json"))
    assert state["status"] == "preempted" and state["requeues"] == 1, state
    assert run_node(job.experiment.store.url, job.node.ref, job_id="requeued") == 0
    job.check_resumed(finished_before, stopped_at)


def test_batch_size_search_with_an_epoch_fraction_budget(tmp_path: Path) -> None:
    """Batch size is searched like the learning rate (integers end to end), and a trial's
    budget can be given in epochs (or a fraction of one) of the English training set."""
    from xstilts.jobs import data

    raw = search_spec(tmp_path / "store")
    raw["target"]["search"] = {"space": {"batch_size": {"grid": [4, 16]}}, "scheduler": "fifo",
                               "budget_epochs": 2.0, "max_concurrent": 1}
    spec = tmp_path / "batch.yaml"
    spec.write_text(yaml.safe_dump(raw, sort_keys=False))
    experiment = open_experiment(str(spec))
    experiment.materialize()
    for node in experiment.plan.nodes:
        if node.stage != "evaluate":
            assert run_node(experiment.store.url, node.ref, job_id="test") == 0, node.label
    tune_node = next(n for n in experiment.plan.nodes if n.stage == "tune")
    data_dir = Path(experiment.store.node_path("prepare", tune_node.inputs["data"].key)) / data.DATA_SUBDIR
    n_train = data.english_train_size(data_dir)
    expected = data.total_steps(n_train, 16, 1, 2.0, None)
    result = experiment.result(tune_node)
    assert result["budget_steps"] == expected and expected > 10, (n_train, result["budget_steps"])
    assert sorted(t["config"]["batch_size"] for t in result["trials"]) == [4, 16]
    assert all(expected - 10 < t["steps"] <= expected for t in result["trials"]), result["trials"]
    best = result["best"]["batch_size"]
    assert isinstance(best, int)
    train = next(n for n in experiment.plan.nodes if n.stage == "train-target")
    assert experiment.result(train)["tuned"] == {"batch_size": best}
