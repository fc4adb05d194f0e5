"""Live tracking through a real launch (issue 19): the spec's `tracking` section reaches
the jobs of the local executor; a tune node writes one TensorBoard run per trial, a
training node its own run and (offline) W&B run; `xstilts tensorboard --print` names them."""

from __future__ import annotations

import json
import os
from pathlib import Path

# tests.support.tune sets the environment (offline hub, threads) before these imports
from tests.support.tune import WINNER, search_spec

import pytest
import yaml

from tests.support.grid import cli_env, run_cli
from tests.support.wandb_records import history_of, read_records, run_of
from xstilts.jobs import tracking


def read_events(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reader = EventAccumulator(str(folder))
    reader.Reload()
    return {tag: [(e.step, e.value) for e in reader.Scalars(tag)] for tag in reader.Tags()["scalars"]}


def test_launch_tracks_tune_trials_and_training_nodes(tmp_path: Path) -> None:
    raw = search_spec(tmp_path / "store")
    raw["target"]["search"].update(space={"learning_rate": {"grid": [WINNER, 1e-7]}}, scheduler="fifo",
                                   budget_steps=20)
    raw["tracking"] = {"wandb": {"project": "xstilts-test", "mode": "offline"}}
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(raw, sort_keys=False))
    env = cli_env({"WANDB_SILENT": "true", "XSTILTS_CACHE": str(tmp_path / "cache")})
    result = run_cli("launch", str(spec), "--wait", env=env, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr

    plan = json.loads(run_cli("plan", str(spec), "--json", env=env).stdout)["nodes"]
    nodes = tmp_path / "store" / "nodes"
    tune_key = next(n["key"] for n in plan if n["stage"] == "tune")
    trials = sorted(p for p in (nodes / "tune" / tune_key / "tensorboard").iterdir() if p.is_dir())
    assert len(trials) == 2, trials  # one run per trial
    for trial in trials:
        dev_curves = {tag: points for tag, points in read_events(trial).items() if tag.startswith("dev/")}
        assert dev_curves, trial
        assert all([step for step, _ in points] == [10, 20] for points in dev_curves.values()), dev_curves

    train = next(n for n in plan if n["stage"] == "train-target")
    folder = nodes / "train-target" / train["key"]
    expected: dict[str, list[tuple[int, float]]] = {}
    for line in (folder / "metrics.jsonl").read_text().splitlines():
        parsed = tracking.scalars_of(json.loads(line))
        assert parsed is not None
        for tag, value in parsed[1].items():
            expected.setdefault(tag, []).append((parsed[0], value))
    curves = read_events(folder / "tensorboard")
    assert set(curves) == set(expected) and any(tag.startswith("dev/") for tag in curves)
    for tag, points in expected.items():
        assert curves[tag] == [(step, pytest.approx(value, rel=1e-6)) for step, value in points], tag

    (wandb_run,) = (folder / "wandb").glob("offline-run-*")  # kept with the node for `wandb sync`
    records = read_records(next(wandb_run.glob("*.wandb")))
    run = run_of(records)
    assert run.run_id == train["key"] and f"key:{train['key']}" in run.tags
    rows = {row["_step"]: row for row in history_of(records)}
    for tag, points in expected.items():
        assert [rows[step][tag] for step, _ in points] == pytest.approx([value for _, value in points]), tag

    printed = run_cli("tensorboard", str(spec), "--print", env=env)
    assert printed.returncode == 0, printed.stderr
    assert f"{folder}/tensorboard" in printed.stdout and f"tune/syn-pos" in printed.stdout
    assert os.path.isdir(nodes / "tune" / tune_key / "tensorboard")


def test_tensorboard_command_serves_the_nodes_runs(tmp_path: Path) -> None:
    """Without --print the command starts TensorBoard, which lists a node's run by its name."""
    import logging
    import socket
    import subprocess
    import time
    import urllib.request

    from tests.support.grid import XSTILTS
    from xstilts.core.plan import build_plan
    from xstilts.core.spec import validate

    raw = search_spec(tmp_path / "store", search=False)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(raw, sort_keys=False))
    node = next(n for n in build_plan(validate(raw)).nodes if n.stage == "train-target")
    sink = tracking.TensorBoardSink(tmp_path / "store" / "nodes" / node.stage / node.key / "tensorboard", None,
                                    logging.getLogger("test"))
    sink.log(10, {"dev/accuracy": 50.0}, evaluation=True)
    sink.close()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([*XSTILTS, "tensorboard", str(spec), "--port", str(port)], env=cli_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # TensorBoard names the events at the top of a logdir_spec folder `<name>/.`
        name = f"train-target/{node.task}/{node.intermediate}/seed{node.seed}/."
        runs: list[str] = []
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"http://localhost:{port}/data/runs", timeout=5) as reply:
                    runs = json.loads(reply.read())
            except OSError:
                pass
            if name in runs:
                break
            assert server.poll() is None, server.communicate()[0]
            time.sleep(0.5)
        assert name in runs, runs
    finally:
        server.terminate()
        server.wait(timeout=30)
