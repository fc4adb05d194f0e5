"""The experiment remembers its launch (`launcher.launch_record`), and a dry run reads no
storage it cannot reach.

The commands run as a researcher runs them: the CLI in a subprocess. Where a test needs
a launch made with a SLURM profile it writes the record through the module's own API
(`new_record`, `write_record`), as `xstilts launch` does; the real launch against a real
SLURM cluster is in tests/integration/slurm/test_slurm_launch_record.py. "No SLURM here"
is real too: a PATH without SLURM's client commands, as on a laptop.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from xstilts.core.errors import UserError
from xstilts.core.spec import dump_spec, load_spec
from xstilts.core.store import Store
from xstilts.launcher import launch_record
from xstilts.launcher.executors.base import LaunchRequest
from xstilts.launcher.experiment import open_experiment
from xstilts.launcher.profiles import load_profile
from tests.support.grid import cli_env, run_cli, write_small_grid

REPO = Path(__file__).resolve().parents[3]
PAPER_SPEC = REPO / "experiments" / "xtreme-r-multimodal.yaml"
NO_SLURM_PATH = os.path.dirname(sys.executable)
"""PATH without SLURM's client commands: only the interpreter's folder."""


def _cluster_profile(tmp_path: Path) -> Path:
    path = tmp_path / "mycluster.yaml"
    path.write_text(yaml.safe_dump({"executor": "slurm", "partition": "low", "log_dir": str(tmp_path / "slurm-logs")}))
    return path


def _record(spec: Path, profile: Path | str, overrides: list[str] | None = None) -> launch_record.LaunchRecord:
    """Record a launch of `spec` as `xstilts launch --profile profile -o ...` does."""
    loaded = load_spec(spec, overrides)
    store = Store(loaded.storage)
    record = launch_record.new_record(
        experiment=loaded.name, storage=store.url, profile=load_profile(str(profile)),
        profile_source=str(profile), overrides=overrides or [], spec_path=str(spec), spec_text=dump_spec(loaded),
        argv=["xstilts", "launch", str(spec), "--profile", str(profile)])
    launch_record.write_record(store, record)
    return record


def _no_slurm_env() -> dict[str, str]:
    return cli_env({"PATH": NO_SLURM_PATH})


# -- the record ---------------------------------------------------------------------------
def test_every_launch_is_kept_and_commands_follow_the_newest(tmp_path: Path) -> None:
    spec = write_small_grid(tmp_path)
    first = _record(spec, "local")
    second = _record(spec, _cluster_profile(tmp_path), ["seeds=[3]"])
    store = Store(str(tmp_path / "store"))
    folder = tmp_path / "store" / "small" / "launches"
    assert sorted(p.stem for p in folder.glob("*.json")) == sorted([first.id, second.id])
    assert [r.id for r in launch_record.newest_first(store, "small")] == [second.id, first.id]
    assert launch_record.follow(store, "small", None) == second
    assert launch_record.follow(store, "small", []) == first  # with -o: the launch with exactly those
    with pytest.raises(UserError) as caught:
        launch_record.follow(store, "small", ["seeds=[9]"])
    assert "-o seeds=[9]: no launch of 'small' used these overrides" in str(caught.value)
    assert "(no -o)" in str(caught.value) and "-o seeds=[3]" in str(caught.value)
    with pytest.raises(UserError, match="exists already"):  # a record is never overwritten
        launch_record.write_record(store, second)
    assert json.loads((folder / f"{second.id}.json").read_text())["overrides"] == ["seeds=[3]"]


def test_a_torn_record_is_skipped_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_small_grid(tmp_path)
    kept = _record(spec, "local")
    (tmp_path / "store" / "small" / "launches" / "99991231T000000.000000Z-torn.json").write_text('{"id": ')
    assert launch_record.follow(Store(str(tmp_path / "store")), "small", None) == kept
    assert "torn" in capsys.readouterr().err


def test_open_experiment_takes_the_recorded_profile_and_overrides(tmp_path: Path) -> None:
    spec = write_small_grid(tmp_path)
    profile = _cluster_profile(tmp_path)
    _record(spec, profile, ["seeds=[5]"])
    followed = open_experiment(str(spec), records="follow")
    assert followed.profile.executor == "slurm" and followed.profile.name == "mycluster"
    assert {n.seed for n in followed.plan.nodes if n.seed is not None} == {5}
    assert followed.overrides == ["seeds=[5]"] and followed.launch is not None
    plain = open_experiment(str(spec))  # library callers and `plan`: the spec as written
    assert plain.profile.executor == "local" and {n.seed for n in plain.plan.nodes if n.seed is not None} == {1}
    copy = tmp_path / "same-settings.yaml"  # the same settings under another name agree
    copy.write_text(profile.read_text())
    assert open_experiment(str(spec), profile=str(copy), records="follow").profile.executor == "slurm"
    with pytest.raises(UserError) as caught:
        open_experiment(str(spec), profile="local", records="follow")
    message = str(caught.value)
    assert message.startswith("--profile local: differs from the profile 'mycluster' that the launch of ")
    assert str(profile) in message and "-o seeds=[5]" in message


def test_a_relaunch_keeps_a_given_profile_and_may_choose_another(tmp_path: Path) -> None:
    """`launch` without --profile reuses the newest launch's --profile (never runs
    locally what SLURM holds); a profile the spec's `cluster:` named follows the spec;
    an explicit --profile is a new choice, not an error."""
    spec = write_small_grid(tmp_path)
    profile = _cluster_profile(tmp_path)
    _record(spec, profile)
    relaunch = open_experiment(str(spec), records="launch")
    assert relaunch.profile.executor == "slurm" and relaunch.profile_source == str(profile)
    assert any("--profile to change it" in note for note in relaunch.notes)
    assert open_experiment(str(spec), profile="local", records="launch").profile.executor == "local"
    loaded = load_spec(spec)
    store = Store(loaded.storage)
    launch_record.write_record(store, launch_record.new_record(
        experiment="small", storage=store.url, profile=load_profile("local"), profile_source="spec cluster: local",
        overrides=[], spec_path=str(spec), spec_text=dump_spec(loaded)))
    assert open_experiment(str(spec), records="launch").profile.executor == "local"


def test_the_detached_scheduler_runs_what_its_launch_record_says(tmp_path: Path) -> None:
    """It is given the record's id, and takes profile and spec from it (no spec.yaml is
    in the store here): a record of a SLURM launch is refused by name."""
    import subprocess

    spec = write_small_grid(tmp_path)
    record = _record(spec, _cluster_profile(tmp_path))
    runner = [sys.executable, "-P", "-m", "xstilts.launcher.local_runner", "--store", str(tmp_path / "store"),
              "--experiment", "small", "--launch"]
    refused = subprocess.run([*runner, record.id], capture_output=True, text=True, env=cli_env(), timeout=120)
    assert refused.returncode == 2 and "runs local profiles, not 'slurm'" in refused.stderr, refused.stderr
    missing = subprocess.run([*runner, "nope"], capture_output=True, text=True, env=cli_env(), timeout=120)
    assert missing.returncode == 2 and "no launch record 'nope'" in missing.stderr, missing.stderr


def test_the_hint_repeats_the_overrides(tmp_path: Path) -> None:
    request = LaunchRequest(spec_path="my grid.yaml", dry_run=False, wait=False, retry_failed=False,
                            overrides=("seeds=[1,2]", "storage=s3://b/p"))
    assert request.status_hint() == ("follow with: xstilts status 'my grid.yaml' -o 'seeds=[1,2]' "
                                     "-o storage=s3://b/p --watch")


# -- the commands that follow a launch -------------------------------------------------------
def test_status_cancel_and_logs_use_the_profile_given_only_at_launch(tmp_path: Path) -> None:
    """The spec says `cluster: local`; the launch used a SLURM profile. Here, without
    SLURM's commands, each command shows it asked SLURM: before, `status` read the store
    only, `cancel` looked for local processes and `logs` found nothing."""
    spec = write_small_grid(tmp_path)
    profile = _cluster_profile(tmp_path)
    _record(spec, profile)
    env = _no_slurm_env()

    status = run_cli("status", str(spec), "--json", env=env)
    assert status.returncode == 0, status.stderr
    assert "following the launch of" in status.stderr and "profile 'mycluster'" in status.stderr
    assert "warning: 'squeue' not found" in status.stderr and "showing the store's view" in status.stderr
    assert json.loads(status.stdout)["counts"] == {"pending": 8}

    cancel = run_cli("cancel", str(spec), env=env)
    assert cancel.returncode == 2 and "'scancel' not found" in cancel.stderr, cancel.stdout + cancel.stderr
    assert "Traceback" not in cancel.stderr

    experiment = open_experiment(str(spec))
    node = experiment.plan.nodes[0]
    experiment.store.write_json(f"{experiment.node_dir(node)}/state.json", {
        "status": "failed", "attempts": [], "submissions": [{"job_id": "4242_0", "executor": "slurm", "at": 0}]})
    log = tmp_path / "slurm-logs" / "small" / "4242_0_0_log.out"
    log.parent.mkdir(parents=True)
    log.write_text("hello from the SLURM log\n")
    logs = run_cli("logs", str(spec), node.key, env=env)
    assert logs.returncode == 0, logs.stderr
    assert "hello from the SLURM log" in logs.stdout


def test_an_explicit_profile_or_overrides_that_disagree_are_one_line_exit_2(tmp_path: Path) -> None:
    spec = write_small_grid(tmp_path)
    profile = _cluster_profile(tmp_path)
    _record(spec, profile, ["seeds=[5]"])
    env = _no_slurm_env()
    for args, expected in [
        (("status", str(spec), "--profile", "local"), "--profile local: differs from the profile 'mycluster'"),
        (("cancel", str(spec), "-p", "local"), "--profile local: differs from the profile 'mycluster'"),
        (("analysis", "table", str(spec), "--profile", "local"), "--profile local: differs"),
        (("status", str(spec), "-o", "seeds=[6]"), "-o seeds=[6]: no launch of 'small' used these overrides"),
    ]:
        result = run_cli(*args, env=env)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (args, result.stderr)
    agreeing = run_cli("status", str(spec), "--profile", str(profile), "-o", "seeds=[5]", "--json", env=env)
    assert agreeing.returncode == 0, agreeing.stderr
    assert {n["seed"] for n in json.loads(agreeing.stdout)["nodes"] if n["seed"] is not None} == {5}


# -- dry runs without storage ----------------------------------------------------------------
def _without_credentials(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in cli_env().items() if not k.startswith("AWS_")}
    return {**env, "AWS_EC2_METADATA_DISABLED": "true", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
            "AWS_CONFIG_FILE": "/nonexistent", "PATH": NO_SLURM_PATH, **extra}


def _readme_dry_run(*extra: str, env: dict[str, str]) -> Any:
    return run_cli("launch", str(PAPER_SPEC), "--profile", str(REPO / "cluster_profiles" / "slurm.yaml"),
                   "--dry-run", *extra, env=env)


def test_the_readme_dry_run_without_credentials_plans_from_the_spec() -> None:
    """The paper spec stores on s3:// and this machine has no credentials: before, the
    dry run ended in a storage error; now it prints the arrays and says storage was not read."""
    result = _readme_dry_run(env=_without_credentials())
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines() == [
        "storage not read (cannot reach s3://my-lab-bucket/xstilts: NoCredentialsError: Unable to locate "
        "credentials): planning from the spec alone, every node counted as not done; --check-storage makes this "
        "an error"]
    # the example profile queues at most max_jobs 500 tasks, in lineage arrays
    assert "[dry run] 1299 nodes: 500 to submit in 68 arrays, 799 waiting for free slots (max_jobs 500), 0 done" \
        in result.stdout
    assert result.stdout.count("#!/bin/bash") == 68 and "#SBATCH --partition=gpu" in result.stdout


def test_a_dry_run_asked_to_check_storage_is_one_line_exit_2() -> None:
    result = _readme_dry_run("--check-storage", env=_without_credentials())
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: storage: cannot reach s3://my-lab-bucket/xstilts: NoCredentialsError: Unable to locate credentials"]
    assert result.stdout == ""


def test_an_unreachable_endpoint_is_one_line_in_both_ways() -> None:
    """Credentials, but nothing listens at the endpoint (real botocore, a closed port)."""
    env = _without_credentials(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="y",
                               AWS_ENDPOINT_URL="http://127.0.0.1:9", XSTILTS_S3_MAX_ATTEMPTS="1")
    planned = _readme_dry_run(env=env)
    assert planned.returncode == 0, planned.stderr
    assert len(planned.stderr.strip().splitlines()) == 1 and "EndpointConnectionError" in planned.stderr
    checked = _readme_dry_run("--check-storage", env=env)
    assert checked.returncode == 2 and len(checked.stderr.strip().splitlines()) == 1, checked.stderr
    assert "Traceback" not in checked.stderr and "EndpointConnectionError" in checked.stderr
