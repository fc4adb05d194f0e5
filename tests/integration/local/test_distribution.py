"""`pip install .` installs one import package, `xstilts`, and nothing generic beside it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.layers import PACKAGE_FOLDERS, REPO

pytestmark = pytest.mark.integration


def test_pip_install_puts_exactly_one_package_into_site_packages(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy: setuptools leaves build/ beside the sources
    for folder in PACKAGE_FOLDERS.values():
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    site = tmp_path / "site-packages"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
                    "--target", str(site), str(source)], check=True, capture_output=True,
                   cwd=tmp_path, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    entries = sorted(p.name for p in site.iterdir() if p.name != "bin")
    assert [e for e in entries if not e.endswith(".dist-info")] == ["xstilts"], entries
    package = site / "xstilts"
    assert {p.name for p in package.iterdir() if p.is_dir() and p.name != "__pycache__"} == {
        "core", "launcher", "analysis", "jobs", "cluster_profiles", "experiments"}
    assert (package / "cluster_profiles" / "local.yaml").is_file()
    assert (package / "experiments" / "demo.yaml").is_file()
    version = subprocess.run([sys.executable, "-P", "-m", "xstilts", "--version"], capture_output=True, text=True,
                             cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)})
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip().endswith("0.1.0")
