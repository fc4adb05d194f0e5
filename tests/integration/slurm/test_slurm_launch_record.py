"""A profile given only at launch is used by every command after it, on a real SLURM cluster.

The spec says `cluster: local`; the researcher launches with `--profile mycluster.yaml`
and an override, then types `status`, `logs` and `cancel` without either. Before the
launch record, those fell back to the spec's local profile: `status` never asked squeue
(and, without the override, showed another grid), `logs` looked in the wrong place and
`cancel` looked for local processes instead of running scancel.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import yaml

from tests.integration.slurm.test_slurm_grid import sbatch_counter, slurm_profile
from tests.support.grid import run_cli, small_grid_raw, status_json, wait_until


def test_a_profile_given_only_at_launch_is_used_by_status_logs_and_cancel(slurm: Any, tmp_path: Path) -> None:
    env, calls = sbatch_counter(tmp_path, slurm.env)
    profile = slurm_profile(tmp_path)
    raw = small_grid_raw(str(tmp_path / "store"))
    raw["intermediate"]["hparams"].update(max_steps=20000, eval_interval=10000)  # runs until cancelled
    assert raw.get("cluster", "local") == "local"
    spec = tmp_path / "small.yaml"
    spec.write_text(yaml.safe_dump(raw, sort_keys=False))

    launched = run_cli("launch", str(spec), "--profile", str(profile), "-o", "seeds=[2]", env=env)
    assert launched.returncode == 0, launched.stdout + launched.stderr
    assert "submitted 8 nodes in" in launched.stdout and calls.exists()
    hint = "follow with: xstilts status " + shlex.join([str(spec), "-o", "seeds=[2]", "--watch"])
    assert hint in launched.stdout, launched.stdout  # the full command, the override included
    records = list((tmp_path / "store" / "small" / "launches").glob("*.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["profile"]["executor"] == "slurm" and record["overrides"] == ["seeds=[2]"]

    status = status_json(spec, env=env)  # no --profile, no -o
    assert {row["seed"] for row in status["nodes"] if row["seed"] is not None} == {2}
    assert sum(status["counts"].values()) == 8 and set(status["counts"]) <= {"queued", "running", "done"}, status

    def running_training() -> str | None:
        rows = status_json(spec, env=env)["nodes"]
        return next((r["key"] for r in rows if r["stage"] == "train-intermediate" and r["status"] == "running"), None)

    wait_until(lambda: running_training() is not None, timeout=300, every=2)
    training = running_training()
    assert training is not None
    logs = run_cli("logs", str(spec), training, env=env)  # live: only SLURM's log folder has it yet
    assert logs.returncode == 0, logs.stdout + logs.stderr
    assert logs.stdout.splitlines()[0].endswith("_0_log.out"), logs.stdout  # from the profile's log_dir
    assert "submitit INFO" in logs.stdout

    def jobs() -> set[str]:
        return set(slurm.run("squeue", "-h", "-o", "%j").stdout.split())

    assert "xstilts-small" in jobs()
    cancelled = run_cli("cancel", str(spec), env=env)
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    assert "cancelled the SLURM jobs named xstilts-small" in cancelled.stdout
    wait_until(lambda: "xstilts-small" not in jobs(), timeout=60)

    def settled() -> dict[str, int]:
        return status_json(spec, env=env)["counts"]

    wait_until(lambda: not set(settled()) & {"queued", "running"}, timeout=120, every=2)
    counts = settled()  # squeue says the jobs are gone: the store alone still said queued
    assert counts.get("done", 0) < 8 and set(counts) <= {"done", "failed", "cancelled", "interrupted"}, counts
