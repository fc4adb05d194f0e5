"""Live tracking through a real launch (issue 19): the spec's `tracking` section reaches
the jobs of the local executor; a tune node writes one TensorBoard run per trial, a
training node its own run and (offline) W&B run; `xstilts tensorboard --print` names them."""

from __future__ import annotations

import json
import os
from pathlib import Path

# tests.support.tune sets the environment (offline hub, threads) before these imports
from tests.support.tune import WINNER, search_spec

import yaml

from tests.support.grid import cli_env, run_cli
from tests.support.wandb_records import history_of, read_records, run_of


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
        assert [step for step, _ in read_events(trial)["dev/accuracy"]] == [10, 20], trial

    train = next(n for n in plan if n["stage"] == "train-target")
    folder = nodes / "train-target" / train["key"]
    metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    dev = [(m["step"], m["accuracy"]) for m in metrics if m["event"] == "eval"]
    curves = read_events(folder / "tensorboard")
    assert [s for s, _ in curves["dev/accuracy"]] == [s for s, _ in dev]

    (wandb_run,) = (folder / "wandb").glob("offline-run-*")  # kept with the node for `wandb sync`
    records = read_records(next(wandb_run.glob("*.wandb")))
    run = run_of(records)
    assert run.run_id == train["key"] and f"key:{train['key']}" in run.tags
    assert [row["dev/accuracy"] for row in history_of(records) if "dev/accuracy" in row] == \
        [value for _, value in dev]

    printed = run_cli("tensorboard", str(spec), "--print", env=env)
    assert printed.returncode == 0, printed.stderr
    assert f"{folder}/tensorboard" in printed.stdout and f"tune/syn-pos" in printed.stdout
    assert os.path.isdir(nodes / "tune" / tune_key / "tensorboard")
