"""Launching from where researchers launch: a profile given as a path to a detached
scheduler, and a launch folder holding modules named like ours."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.grid import cli_env, run_cli, status_json, wait_until, write_small_grid

N_NODES = 8


def test_detached_launch_with_a_profile_path_runs_the_whole_grid(tmp_path: Path) -> None:
    """The detached scheduler gets the resolved profile, not its name: before, it died at
    once ("unknown cluster profile 'mine'") and the nodes stayed pending."""
    profile = tmp_path / "profiles" / "mine.yaml"
    profile.parent.mkdir()
    profile.write_text("executor: local\nmax_parallel: 2\nprocs_per_node: 1\n")
    spec = write_small_grid(tmp_path)
    launched = run_cli("launch", str(spec), "--profile", str(profile))
    assert launched.returncode == 0, launched.stderr
    assert "local scheduler" in launched.stdout
    wait_until(lambda: status_json(spec)["counts"] == {"done": N_NODES}, timeout=600, every=2)


def test_modules_in_the_launch_folder_never_shadow_the_package(tmp_path: Path) -> None:
    """`python -m` puts the working directory first on sys.path: node processes start with
    `-P`, so a researcher's `xstilts.py` or `analysis.py` next to the spec is not imported."""
    folder = tmp_path / "here"
    folder.mkdir()
    for name in ("analysis", "launcher", "jobs", "xstilts"):
        (folder / f"{name}.py").write_text(f"raise RuntimeError('imported {name}.py from the launch folder')\n")
    spec = write_small_grid(folder, storage=str(tmp_path / "store"))
    # as the console script runs: its folder, not the working directory, on sys.path
    cli = [sys.executable, "-P", "-c", "from xstilts.cli import main; main()"]
    launched = subprocess.run([*cli, "launch", spec.name, "--wait"], capture_output=True, text=True, cwd=folder,
                              env=cli_env(), timeout=600)
    assert launched.returncode == 0, launched.stdout + launched.stderr
    assert status_json(spec)["counts"] == {"done": N_NODES}
    shadowed = json.loads(run_cli("analysis", "table", str(spec), "--json").stdout)

    clean = tmp_path / "clean"
    clean.mkdir()
    reference = write_small_grid(clean, storage=str(tmp_path / "reference-store"))
    assert run_cli("launch", str(reference), "--wait").returncode == 0
    assert json.loads(run_cli("analysis", "table", str(reference), "--json").stdout) == shadowed
