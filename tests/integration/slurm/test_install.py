"""The package installer's decisions, against fake dpkg-query/apt-get (no root, no network):
nothing runs when all is installed, and `apt-get update` only after a failure for lack of lists."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.slurm import install

FAKE_DPKG_QUERY = """#!/bin/sh
# Packages named in $STATE are installed.
shift 2
for p in "$@"; do
  if grep -qx "$p" "$STATE" 2>/dev/null; then echo "$p installed"; else echo "$p not-installed"; fi
done
"""

FAKE_APT_GET = """#!/bin/sh
# Fails for lack of lists until `update` ran, then "installs" the packages.
shift 2  # -o DPkg::Lock::Timeout=...
echo "$*" >> "$CALLS"
case "$1" in
  update) touch "$STATE.lists"; exit 0 ;;
  install)
    [ -e "$STATE.lists" ] || { echo "E: Unable to locate package $4" >&2; exit 100; }
    shift 3; for p in "$@"; do echo "$p" >> "$STATE"; done ;;
esac
"""


@pytest.fixture
def fake_apt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("dpkg-query", FAKE_DPKG_QUERY), ("apt-get", FAKE_APT_GET)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("STATE", str(tmp_path / "installed"))
    monkeypatch.setenv("CALLS", str(tmp_path / "calls"))
    monkeypatch.setattr(install.os, "geteuid", lambda: 0)
    return tmp_path


def test_installed_packages_run_nothing(fake_apt: Path) -> None:
    (fake_apt / "installed").write_text("munge\nslurmd\n")
    assert install.ensure_packages(["munge", "slurmd"]) == []
    assert not (fake_apt / "calls").exists()


def test_update_only_after_missing_lists(fake_apt: Path) -> None:
    (fake_apt / "installed").write_text("munge\n")
    assert install.ensure_packages(["munge", "slurmd", "slurmctld"]) == ["slurmd", "slurmctld"]
    calls = (fake_apt / "calls").read_text().splitlines()
    assert [call.split()[0] for call in calls] == ["install", "update", "install"]
    assert calls[0] == "install -y --no-install-recommends slurmd slurmctld"
    assert install.missing_packages(["munge", "slurmd", "slurmctld"]) == []


def test_install_without_update_when_lists_exist(fake_apt: Path) -> None:
    (fake_apt / "installed.lists").touch()
    assert install.ensure_packages(["slurmdbd"]) == ["slurmdbd"]
    assert (fake_apt / "calls").read_text().split() == ["install", "-y", "--no-install-recommends", "slurmdbd"]
