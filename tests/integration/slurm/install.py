"""Install Debian's SLURM, munge and MariaDB packages when they are missing.

Why here: `.ci/run` starts from a fresh machine where nothing but Python is installed, so the
fixture itself must bring the daemons in. A dpkg query (~10 ms) keeps repeated runs cheap;
`apt-get update` runs only when an install failed for lack of package lists, because it is the
slow part and the lists are usually present.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence

SLURM_PACKAGES: tuple[str, ...] = ("slurmctld", "slurmd", "slurm-client", "munge")
ACCOUNTING_PACKAGES: tuple[str, ...] = ("slurmdbd", "mariadb-server")

# apt-get's messages when its package lists are missing or stale.
_NEEDS_UPDATE = ("Unable to locate package", "has no installation candidate", "404  Not Found",
                 "Failed to fetch", "--fix-missing")


class InstallError(RuntimeError):
    """The packages could not be installed; the message carries apt-get's output."""


def missing_packages(packages: Sequence[str]) -> list[str]:
    """Packages of `packages` that dpkg does not report as installed."""
    result = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\\n", *packages],
                            capture_output=True, text=True)
    installed = {line.split()[0] for line in result.stdout.splitlines() if line.endswith(" installed")}
    return [name for name in packages if name not in installed]


def _apt_get(*args: str) -> subprocess.CompletedProcess[str]:
    """apt-get, waiting for another installer (say, a second test session) to finish: dpkg's
    lock is waited for by apt itself, the archive and list locks by a few retries here."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for _ in range(10):
        result = subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=300", *args], env=env,
                                capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if result.returncode == 0 or "Could not get lock" not in result.stderr:
            break
        time.sleep(3)
    return result


def ensure_packages(packages: Sequence[str]) -> list[str]:
    """Install whatever of `packages` is missing; return what was installed (empty if nothing)."""
    todo = missing_packages(packages)
    if not todo:
        return []
    if os.geteuid() != 0:
        raise InstallError(f"packages {' '.join(todo)} are missing and installing them needs root")
    install = ("install", "-y", "--no-install-recommends", *todo)
    result = _apt_get(*install)
    if result.returncode != 0 and any(marker in result.stdout + result.stderr for marker in _NEEDS_UPDATE):
        update = _apt_get("update")
        if update.returncode != 0:
            raise InstallError(f"apt-get update failed:\n{update.stdout}\n{update.stderr}")
        result = _apt_get(*install)
    if result.returncode != 0:
        raise InstallError(f"apt-get install {' '.join(todo)} failed:\n{result.stdout}\n{result.stderr}")
    still = missing_packages(todo)
    if still:
        raise InstallError(f"apt-get install succeeded but {' '.join(still)} are still not installed")
    return todo
