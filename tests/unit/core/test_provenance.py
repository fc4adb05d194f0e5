"""Provenance: the code version of a real (throw-away) git checkout, GPU facts, and the
stale-code counts `status` and `analysis table` warn with."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from xstilts.core.provenance import (
    UNKNOWN_CODE, DeviceFacts, code_string, code_versions, git_info, gpu_summary, mixed_code_warning, run_provenance,
)


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@x", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "core").mkdir(parents=True)
    (root / "core" / "plan.py").write_text("KEY = 1\n")
    (root / "README.md").write_text("readme\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "first")
    return root


def test_a_clean_checkout_is_named_by_its_commit(checkout: Path) -> None:
    info = git_info(checkout, [checkout / "core"])
    assert info is not None
    assert info.commit == git(checkout, "rev-parse", "HEAD")
    assert not info.dirty and info.diff_sha256 is None
    assert code_string(info, "0.1.0") == info.commit[:12]


def test_an_edited_tracked_file_makes_it_dirty_with_a_hash_of_the_edit(checkout: Path) -> None:
    (checkout / "core" / "plan.py").write_text("KEY = 2\n")
    first = git_info(checkout, [checkout / "core"])
    assert first is not None and first.dirty and first.diff_sha256
    assert code_string(first, "0.1.0") == f"{first.commit[:12]}+dirty.{first.diff_sha256[:8]}"
    (checkout / "core" / "plan.py").write_text("KEY = 3\n")
    second = git_info(checkout, [checkout / "core"])
    assert second is not None and second.diff_sha256 != first.diff_sha256  # another edit, another version


def test_untracked_files_count_only_under_the_package_folders(checkout: Path) -> None:
    (checkout / "notes.txt").write_text("scratch\n")
    clean = git_info(checkout, [checkout / "core"])
    assert clean is not None and not clean.dirty
    (checkout / "core" / "new_module.py").write_text("X = 1\n")
    dirty = git_info(checkout, [checkout / "core"])
    assert dirty is not None and dirty.dirty


def test_no_checkout_or_no_git_gives_none(tmp_path: Path, checkout: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert git_info(tmp_path / "elsewhere", []) is None
    assert git_info(checkout / "core", []) is None  # inside a checkout, but not its top
    assert code_string(None, "0.1.0") == "xstilts 0.1.0"
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no git binary at all
    assert git_info(checkout, []) is None


def test_gpu_selection_from_device_facts() -> None:
    assert gpu_summary(DeviceFacts(False, 0, ())) == {"model": None, "count": 0}
    assert gpu_summary(DeviceFacts(True, 0, ())) == {"model": None, "count": 0}
    assert gpu_summary(DeviceFacts(True, 4, ("NVIDIA H100",) * 4)) == {"model": "NVIDIA H100", "count": 4}
    assert gpu_summary(DeviceFacts(True, 2, ("A100", "H100"))) == {"model": "A100 + H100", "count": 2}


def test_run_provenance_has_the_schema_the_report_reads() -> None:
    record = run_provenance(world_size=3, devices=DeviceFacts(True, 2, ("NVIDIA H200", "NVIDIA H200")))
    assert set(record) == {"xstilts", "git", "packages", "host", "gpu", "world_size", "code"}
    assert record["world_size"] == 3
    assert set(record["packages"]) == {"python", "torch", "transformers", "datasets", "tokenizers"}
    assert record["gpu"] == {"model": "NVIDIA H200", "count": 2}
    assert isinstance(record["code"], str) and record["code"]
    again = run_provenance(world_size=1, devices=DeviceFacts(False, 0, ()))  # cached code facts, fresh dict
    assert again["world_size"] == 1 and again["gpu"] == {"model": None, "count": 0} and record["world_size"] == 3


def done_state(code: str | None) -> dict[str, object]:
    attempt: dict[str, object] = {"id": "g2", "outcome": "done"}
    if code is not None:
        attempt["provenance"] = {"code": code}
    return {"status": "done", "attempts": [{"id": "g1", "outcome": "lost", "provenance": {"code": "old"}}, attempt]}


def test_code_versions_count_the_completed_attempts() -> None:
    states = [done_state("1a2b3c4d5e6f")] * 3 + [done_state("9f8e7d6c5b4a+dirty.ab12cd34"), done_state(None)]
    versions = code_versions(states)
    assert versions == {"1a2b3c4d5e6f": 3, "9f8e7d6c5b4a+dirty.ab12cd34": 1, UNKNOWN_CODE: 1}
    assert mixed_code_warning(versions) == ("done nodes come from 3 code versions: 1a2b3c4d5e6f (3), "
                                            f"9f8e7d6c5b4a+dirty.ab12cd34 (1), {UNKNOWN_CODE} (1)")
    assert mixed_code_warning(code_versions([done_state("1a2b3c4d5e6f")] * 2)) is None
