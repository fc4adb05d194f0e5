"""Storage URLs are parsed strictly, spec files read strictly, the lease TTL validated:
each bad value is one line on stderr, exit code 2, no traceback, no secret, nothing
written (issue 16, items 1, 7 and 8: each of these printed a traceback or was taken
silently before)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.specs import demo_raw

XSTILTS = [sys.executable, "-c", "from xstilts.cli import main; main()"]
SECRET = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY"


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*XSTILTS, *args], capture_output=True, text=True, cwd=cwd, timeout=60,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


def assert_user_error(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output, output
    assert SECRET not in output, output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    for text in expected:
        assert text in lines[0], lines[0]


def written(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name != "spec.yaml")


@pytest.mark.parametrize("storage, expected", [
    ("", "empty"),
    ("   ", "empty"),
    ("s3:/bucket/prefix", "did you mean 's3://bucket/prefix'"),
    ("ftp://host/folder", "unknown storage scheme 'ftp://'"),
    ("http://host/folder", "unknown storage scheme 'http://'"),
    (f"s3://AKIAEXAMPLE:{SECRET}@bucket/prefix", "credentials"),
    ("s3://bucket/prefix?token=abc", "query"),
    ("s3:///prefix", "names no bucket"),
    ("/dev/null", "is a file, not a folder"),
    ("a-file", "is a file, not a folder"),
])
@pytest.mark.parametrize("command", ["plan", "launch"])
def test_a_bad_storage_url_is_one_line_and_exit_2(storage: str, expected: str, command: str, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder\n")
    raw = demo_raw()
    raw["storage"] = storage
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(raw))
    args = [command, str(spec)] + (["--dry-run"] if command == "launch" else [])
    assert_user_error(run_cli(*args, cwd=tmp_path), "storage:", expected)
    assert written(tmp_path) == ["a-file"]


def test_a_key_given_twice_in_the_spec_is_an_error(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    text = yaml.safe_dump(demo_raw(), sort_keys=False).replace("seeds:", "seeds: [7]\nseeds:", 1)
    spec.write_text(text)
    assert_user_error(run_cli("plan", str(spec), cwd=tmp_path), "key 'seeds' given twice")


def test_a_spec_that_is_not_utf8_is_an_error(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(yaml.safe_dump(demo_raw()).encode() + b"# caf\xe9\n")
    assert_user_error(run_cli("plan", str(spec), cwd=tmp_path), "not UTF-8")


@pytest.mark.parametrize("ttl", ["abc", "0", "-5", "nan", "inf", "1"])
def test_a_lease_ttl_that_is_not_a_safe_number_is_an_error(ttl: str, tmp_path: Path) -> None:
    raw = demo_raw()
    raw["storage"] = str(tmp_path / "store")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(raw))
    run_cli("launch", str(spec), "--dry-run", cwd=tmp_path)  # fine without the variable
    result = run_cli("status", str(spec), cwd=tmp_path, env={"XSTILTS_LEASE_TTL": ttl})
    assert_user_error(result, "XSTILTS_LEASE_TTL", ttl)


@pytest.mark.parametrize("change, expected", [
    ({"target.hparams.learning_rate": float("inf")}, "target.hparams.learning_rate"),
    ({"intermediate.hparams.epochs": float("inf")}, "intermediate.hparams.epochs"),
    ({"target.hparams.warmup_ratio": float("nan")}, "target.hparams.warmup_ratio"),
    ({"seeds": [1, 1e30]}, "seeds"),
    ({"seeds": [-1]}, "seeds must be integers from 0"),
    ({"target.hparams.max_seq_length": 256}, "do not fit the tiny model's 128 positions"),
    ({"model.tiny.hiden_size": 64}, "unknown XLMRobertaConfig argument 'hiden_size' (did you mean 'hidden_size'?)"),
    ({"vision.tiny.patch_sise": 8}, "unknown CLIPVisionConfig argument 'patch_sise' (did you mean 'patch_size'?)"),
])
def test_values_that_would_fail_or_mislead_at_run_time_are_refused(change: dict[str, object], expected: str,
                                                                    tmp_path: Path) -> None:
    from tests.support.specs import set_path

    raw = demo_raw()
    raw["storage"] = str(tmp_path / "store")
    for dotted, value in change.items():
        set_path(raw, dotted, value)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(raw))
    result = run_cli("plan", str(spec), cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in output, output
    assert expected in result.stderr, result.stderr
    assert not (tmp_path / "store").exists()


def test_an_unknown_key_in_per_task_lists_the_hyperparameter_keys(tmp_path: Path) -> None:
    raw = demo_raw()
    raw["storage"] = str(tmp_path / "store")
    raw["target"]["per_task"] = {"syn-pos": {"learning_rte": 1e-3}}
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(raw))
    result = run_cli("plan", str(spec), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    line = next(line for line in result.stderr.splitlines() if "learning_rte" in line)
    assert "target.per_task.syn-pos.learning_rte" in line and "did you mean 'learning_rate'" in line, line
    assert "batch_size" in line and "intermediate" not in line.split("valid", 1)[-1], line


@pytest.mark.parametrize("profile, expected", [
    ({"executor": "local", "env": {"A=B": "1"}}, "env.A=B"),
    ({"executor": "slurm", "env": {"X; touch pwned; Y": "v"}}, "env.X; touch pwned; Y"),
    ({"executor": "slurm", "partition": "gpu\n#SBATCH --qos=free"}, "partition"),
    ({"executor": "slurm", "log_dir": "logs\nrm -rf x"}, "log_dir"),
])
def test_profile_values_that_would_break_the_job_script_are_refused(profile: dict[str, object], expected: str,
                                                                    tmp_path: Path) -> None:
    raw = demo_raw()
    raw["storage"] = str(tmp_path / "store")
    spec, path = tmp_path / "spec.yaml", tmp_path / "mine.yaml"
    spec.write_text(yaml.safe_dump(raw))
    path.write_text(yaml.safe_dump(profile))
    result = run_cli("launch", str(spec), "--profile", str(path), "--dry-run", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in output, output
    assert expected in result.stderr, result.stderr
    assert not (tmp_path / "store").exists() and not (tmp_path / "pwned").exists()
