"""A tune node as a two-node SLURM job: Ray's head on the first node, a worker on the
second (`xstilts.jobs.ray_cluster`), trials running on both at once."""

from __future__ import annotations

import json
from itertools import product
from pathlib import Path
from typing import Any

from tests.support.grid import run_cli
from tests.integration.slurm.test_slurm_grid import sbatch_counter, slurm_profile, wait_for_grid, write_spec
from tests.support.tune import LEARNING_RATES, WINNER, search_spec


def test_one_tune_node_runs_trials_on_both_slurm_nodes(slurm: Any, tmp_path: Path) -> None:
    env, _ = sbatch_counter(tmp_path, slurm.env)
    profile = slurm_profile(tmp_path, stages={"tune": {"nodes": 2, "tasks_per_node": 1}})
    raw = search_spec(tmp_path / "store")
    search = raw["target"]["search"]
    search.pop("max_concurrent")  # one trial per CPU slot: one per SLURM node here
    search["budget_steps"] = 60
    spec = write_spec(tmp_path, raw, profile)
    launched = run_cli("launch", str(spec), env=env)
    assert launched.returncode == 0, launched.stdout + launched.stderr
    status = wait_for_grid(spec, env)
    assert status["counts"] == {"done": len(status["nodes"])}, status["counts"]

    tune_row = next(row for row in status["nodes"] if row["stage"] == "tune")
    node = tmp_path / "store" / "nodes" / "tune" / tune_row["key"]
    result = json.loads((node / "result.json").read_text())
    trials = result["trials"]
    assert len(trials) == len(LEARNING_RATES) and result["best"] == {"learning_rate": WINNER}, trials
    assert result["hosts"] == ["n1", "n2"], trials
    overlapping = [
        (a, b) for a, b in product(trials, trials)
        if a["host"] == "n1" and b["host"] == "n2"
        and a["started"] < b["last_report"] and b["started"] < a["last_report"]
    ]
    assert overlapping, f"no two trials ran at the same time on n1 and n2: {trials}"
    attempt = json.loads((node / "state.json").read_text())["attempts"][-1]
    assert attempt["outcome"] == "done" and attempt["job_id"]
    train = next(row for row in status["nodes"] if row["stage"] == "train-target")
    trained = json.loads((tmp_path / "store" / "nodes" / "train-target" / train["key"] / "result.json").read_text())
    assert trained["tuned"] == {"learning_rate": WINNER}
