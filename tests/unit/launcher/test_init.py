"""`xstilts init`: a starter spec and profile that plan as written (once storage is
set), and never an overwrite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

XSTILTS = [sys.executable, "-c", "from xstilts.cli import main; main()"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*XSTILTS, *args], capture_output=True, text=True, timeout=120)


def test_init_writes_a_spec_and_profile_that_plan(tmp_path: Path) -> None:
    folder = tmp_path / "my grid #1"  # the profile's path is quoted in the spec
    written = run_cli("init", str(folder))
    assert written.returncode == 0, written.stderr
    spec, profile = folder / "experiment.yaml", folder / "cluster.yaml"
    assert spec.read_text().startswith("# Written by `xstilts init`")
    assert "storage" in spec.read_text().split("\n\n")[0]  # the header says what to edit
    assert yaml.safe_load(spec.read_text())["cluster"] == str(profile)
    assert yaml.safe_load(profile.read_text())["executor"] == "slurm"
    planned = run_cli("plan", str(spec), "-o", f"storage={tmp_path / 'store'}", "--json")
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    assert plan["experiment"] == "xtreme-r-multimodal" and plan["counts"]["evaluate"] > 0


def test_init_never_overwrites(tmp_path: Path) -> None:
    folder = tmp_path / "mygrid"
    folder.mkdir()
    (folder / "cluster.yaml").write_text("mine: true\n")
    refused = run_cli("init", str(folder))
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "cluster.yaml exists already" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert (folder / "cluster.yaml").read_text() == "mine: true\n"
    assert not (folder / "experiment.yaml").exists()
