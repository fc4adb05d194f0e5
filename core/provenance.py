"""What code, packages and machine produced a result: recorded per attempt, compared per grid.

Why: node keys hash configs, not code, so a fixed bug in the trainer silently reused
results made before the fix. Each attempt now records its provenance (`jobs.entry`
stores `run_provenance()` in `attempt["provenance"]`), `status` and `analysis table`
warn when the done nodes of a grid come from more than one code version
(`code_versions`, `mixed_code_warning`), and a spec may fold the code version into the
keys of chosen stages (`rerun_on_code_change`, `core.plan`).

The schema of `run_provenance()` (read by the report of the analysis layer):

    {"xstilts": str, "git": {"commit": str, "dirty": bool, "diff_sha256": str | None} | None,
     "packages": {"python", "torch", "transformers", "datasets", "tokenizers": str | None},
     "host": str, "gpu": {"model": str | None, "count": int}, "world_size": int, "code": str}

Everything here is computed once per process and never raises: a missing git binary or
a tree that is no checkout leave a field None, never a failed job. The GPU facts are
torch's, so the jobs layer passes them in (`jobs.device_facts`).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import platform
import socket
import subprocess
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

GIT_TIMEOUT_S = 10.0
"""A git command that hangs (a network filesystem) must not hold a job."""

PACKAGES = ("torch", "transformers", "datasets", "tokenizers")
"""The packages whose versions decide a result, besides Python and xstilts itself."""

SUBPACKAGES = ("xstilts", "xstilts.core", "xstilts.launcher", "xstilts.analysis", "xstilts.jobs")
"""The import packages whose folders hold the code: untracked files there change what runs."""

UNKNOWN_CODE = "unknown (before provenance)"
"""The code version counted for done nodes whose attempt recorded none (older versions)."""


@dataclass(frozen=True)
class GitInfo:
    commit: str
    dirty: bool
    diff_sha256: str | None
    """sha256 of `git diff HEAD` and of the untracked files under the package folders:
    two dirty trees with the same edits have the same code version."""


@dataclass(frozen=True)
class DeviceFacts:
    """What torch says about the GPUs this process sees (passed in by tests)."""

    cuda_available: bool
    count: int
    names: tuple[str, ...]


def source_root() -> Path:
    """The folder above the `xstilts` package folder: in a checkout, its root."""
    import xstilts

    return Path(xstilts.__file__).resolve().parent.parent


def package_folders() -> list[Path]:
    """Where the import packages live (found without importing them)."""
    folders: list[Path] = []
    for name in SUBPACKAGES:
        spec = importlib.util.find_spec(name)
        for location in (spec.submodule_search_locations or []) if spec else []:
            folders.append(Path(location).resolve())
    return folders


def _git(root: Path, *args: str) -> bytes | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):  # no git binary, a hang
        return None
    return done.stdout if done.returncode == 0 else None


def git_info(root: Path, package_dirs: Iterable[Path] = ()) -> GitInfo | None:
    """The checkout at `root` (None when `root` is not the top of one, or git is missing).

    Tracked changes anywhere make the tree dirty; untracked files only under
    `package_dirs` (new modules run, stray notes beside the code do not).
    """
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None or Path(top.decode().strip()).resolve() != root.resolve():
        return None  # e.g. site-packages inside a virtualenv that lives in some checkout
    head = _git(root, "rev-parse", "HEAD")
    if head is None:  # a repository without a commit
        return None
    status = _git(root, "status", "--porcelain", "--untracked-files=all", "-z") or b""
    digest = hashlib.sha256(_git(root, "diff", "HEAD", "--binary") or b"")
    dirs = [d.resolve() for d in package_dirs]
    changed = False
    for entry in status.split(b"\0"):
        if len(entry) < 4:
            continue
        code, path = entry[:2], entry[3:].decode(errors="replace")
        if code != b"??":
            changed = True
            continue
        full = (root / path).resolve()
        if any(full.is_relative_to(d) for d in dirs) and full.suffix != ".pyc":
            changed = True
            digest.update(path.encode() + b"\0")
            try:
                digest.update(full.read_bytes())
            except OSError:
                pass
    commit = head.decode().strip()
    return GitInfo(commit=commit, dirty=changed, diff_sha256=digest.hexdigest() if changed else None)


def code_string(git: GitInfo | None, package_version: str) -> str:
    """One name for the code: `<commit[:12]>`, `<commit[:12]>+dirty.<hash[:8]>`, or
    `xstilts <version>` outside a checkout."""
    if git is None:
        return f"xstilts {package_version}"
    if git.dirty:
        return f"{git.commit[:12]}+dirty.{(git.diff_sha256 or '')[:8]}"
    return git.commit[:12]


def _package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _xstilts_version() -> str:
    import xstilts

    return xstilts.__version__


@functools.cache
def current_git() -> GitInfo | None:
    """The checkout the running xstilts is imported from, once per process."""
    try:
        return git_info(source_root(), package_folders())
    except Exception:  # noqa: BLE001 (provenance never fails a job or a command)
        return None


def code_version() -> str:
    """The running code's version string (the launcher folds it into keys, `core.plan`)."""
    return code_string(current_git(), _xstilts_version())


def gpu_summary(facts: DeviceFacts) -> dict[str, Any]:
    """`{"model", "count"}`: the first GPU's name (mixed models: all names joined by ' + ')."""
    if not facts.cuda_available or facts.count == 0:
        return {"model": None, "count": 0}
    names = list(dict.fromkeys(facts.names))
    return {"model": " + ".join(names) if names else None, "count": facts.count}


@functools.cache
def _static_provenance() -> dict[str, Any]:
    git = current_git()
    xstilts_version = _xstilts_version()
    return {
        "xstilts": xstilts_version,
        "git": None if git is None else asdict(git),
        "packages": {"python": platform.python_version(), **{name: _package_version(name) for name in PACKAGES}},
        "host": socket.gethostname(),
        "code": code_string(git, xstilts_version),
    }


def run_provenance(world_size: int, devices: DeviceFacts) -> dict[str, Any]:
    """This process's provenance (schema above): the code and package facts computed once
    per process, a fresh dict each call. `devices` comes from the jobs layer
    (`jobs.device_facts`: core never imports torch)."""
    static = _static_provenance()
    return {"xstilts": static["xstilts"], "git": static["git"], "packages": static["packages"],
            "host": static["host"], "gpu": gpu_summary(devices), "world_size": world_size, "code": static["code"]}


def attempt_code(state: Mapping[str, Any]) -> str:
    """The code version of a done node's completed attempt (the last one recorded done)."""
    attempts = [a for a in state.get("attempts") or [] if isinstance(a, dict) and a.get("outcome") == "done"]
    provenance = attempts[-1].get("provenance") if attempts else None
    code = provenance.get("code") if isinstance(provenance, dict) else None
    return code if isinstance(code, str) and code else UNKNOWN_CODE


def code_versions(states: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Code version -> number of done nodes it produced, most first; `states` are the
    state.json contents of the done nodes."""
    return count_codes(attempt_code(state) for state in states)


def count_codes(codes: Iterable[str]) -> dict[str, int]:
    """Code version -> how often it occurs, most first."""
    return dict(Counter(codes).most_common())


def mixed_code_warning(versions: Mapping[str, int]) -> str | None:
    """The one-line warning when the done nodes come from more than one code version."""
    if len(versions) < 2:
        return None
    listed = ", ".join(f"{code} ({count})" for code, count in versions.items())
    return f"done nodes come from {len(versions)} code versions: {listed}"
