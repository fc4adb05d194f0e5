"""`xstilts data check SPEC` through the real CLI (issue 17): found data with counts and
exit 0; a missing file with the paths tried and exit 2; a wrong layout named with what
is there instead; withheld gold reported, not failed; and `launch` refusing missing
local data before it writes anything."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.specs import demo_raw
from tests.support.task_fixtures import write_fixture

XSTILTS = [sys.executable, "-c", "from xstilts.cli import main; main()"]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*XSTILTS, *args], capture_output=True, text=True, cwd=cwd, timeout=120,
                          env={**__import__("os").environ, "COLUMNS": "200"})


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    write_fixture("xnli", tmp_path / "download", n=3)
    write_fixture("pawsx", tmp_path / "download", n=2)
    return tmp_path


def write_spec(folder: Path, data_dir: str = "download", targets: tuple[str, ...] = ("syn-sent", "xnli", "pawsx")) -> None:
    raw = demo_raw()
    raw["intermediate"]["tasks"] = ["none", "syn-rate"]
    raw["target"]["tasks"] = list(targets)
    raw["data_dir"] = data_dir
    raw["storage"] = "store"
    (folder / "spec.yaml").write_text(yaml.safe_dump(raw))


def test_all_found_exits_0_with_counts_per_language(folder: Path) -> None:
    write_spec(folder)
    result = run("data", "check", "spec.yaml", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert "all data found: 4 tasks" in result.stdout
    assert "de 3 · el 3 · en 3 · es 3" in result.stdout  # xnli test, per language
    assert "train │ found  │ en 4,000" in result.stdout  # a generated task counts too
    payload = json.loads(run("data", "check", "spec.yaml", "--json", cwd=folder).stdout)
    assert payload["ok"] is True
    xnli = next(task for task in payload["tasks"] if task["task"] == "xnli")
    assert xnli["source"] == "data_dir"
    de = next(c for c in xnli["checks"] if (c["split"], c["lang"]) == ("test", "de"))
    assert (de["status"], de["examples"], de["files"]) == ("found", 3, ["xnli/test-de.tsv"])
    assert not (folder / "store").exists()  # a check writes nothing


def test_a_missing_file_exits_2_naming_the_paths_tried(folder: Path) -> None:
    (folder / "download" / "xnli" / "test-de.tsv").unlink()
    write_spec(folder)
    result = run("data", "check", "spec.yaml", cwd=folder)
    assert result.returncode == 2
    assert "xnli test: missing in de" in result.stdout
    assert "expected: xnli/test-de.tsv or xnli/test-de.jsonl" in result.stdout
    assert result.stderr.strip() == "error: data missing: xnli test/de (details above)"
    payload = json.loads(run("data", "check", "spec.yaml", "--json", cwd=folder).stdout)
    de = next(c for t in payload["tasks"] for c in t["checks"] if t["task"] == "xnli" and c["lang"] == "de"
              and c["split"] == "test")
    assert de["status"] == "missing" and de["tried"] == ["xnli/test-de.tsv", "xnli/test-de.jsonl"]
    assert "FileNotFoundError" in de["reason"]


def test_a_misnamed_file_is_shown_as_found_instead(folder: Path) -> None:
    xnli = folder / "download" / "xnli"
    (xnli / "test-de.tsv").rename(xnli / "test.de.tsv")
    write_spec(folder)
    result = run("data", "check", "spec.yaml", cwd=folder)
    assert result.returncode == 2
    assert "expected: xnli/test-de.tsv or xnli/test-de.jsonl" in result.stdout
    assert "found instead (no expected path names these): xnli/test.de.tsv" in result.stdout


@pytest.mark.parametrize("data_dir, hint", [
    (".", "data_dir is one level above the data: {folder}/download holds xnli/"),
    ("download/xnli", "data_dir is one level below the data: {folder}/download holds xnli/"),
])
def test_data_dir_one_level_off_is_named_with_the_fix(folder: Path, data_dir: str, hint: str) -> None:
    write_spec(folder, data_dir=data_dir)
    result = run("data", "check", "spec.yaml", cwd=folder)
    assert result.returncode == 2
    text = " ".join(result.stdout.split())
    assert "expected: xnli/train-en.tsv or xnli/train-en.jsonl" in text
    assert hint.format(folder=folder.resolve()) in text


def test_an_unfinished_official_download_is_named(tmp_path: Path) -> None:
    (tmp_path / "download" / "xnli-tmp").mkdir(parents=True)
    write_spec(tmp_path, targets=("xnli",))
    result = run("data", "check", "spec.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert "xnli-tmp is what scripts/download_data.sh leaves while it prepares xnli/" in " ".join(result.stdout.split())


def test_withheld_gold_is_reported_and_not_an_error(folder: Path) -> None:
    """The official script strips XNLI's test labels: two columns instead of three."""
    test_de = folder / "download" / "xnli" / "test-de.tsv"
    test_de.write_text("".join("\t".join(line.split("\t")[:2]) + "\n" for line in test_de.read_text().splitlines()))
    write_spec(folder)
    result = run("data", "check", "spec.yaml", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert "found, gold withheld in 1 of 15" in result.stdout
    payload = json.loads(run("data", "check", "spec.yaml", "--json", cwd=folder).stdout)
    statuses = {(c["split"], c["lang"]): c["status"] for t in payload["tasks"] if t["task"] == "xnli" for c in t["checks"]}
    assert statuses[("test", "de")] == "withheld" and statuses[("test", "fr")] == "found"


def test_a_hub_task_that_cannot_load_is_missing_with_its_reason(tmp_path: Path) -> None:
    raw = demo_raw()
    raw["intermediate"]["tasks"] = ["none"]
    raw["target"]["tasks"] = ["pawsx"]
    raw["storage"] = "store"
    raw["data_revision"] = {"pawsx": "0123456789abcdef0123456789abcdef01234567"}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(raw))
    result = run("data", "check", "spec.yaml", "--json", cwd=tmp_path)
    assert result.returncode == 2
    pawsx = json.loads(result.stdout)["tasks"][0]
    assert pawsx["source"] == "hub" and pawsx["revision"] == "0123456789abcdef0123456789abcdef01234567"
    assert all(c["status"] == "missing" and c["reason"] and "\n" not in c["reason"] for c in pawsx["checks"])


def test_launch_refuses_missing_local_data_before_writing(folder: Path) -> None:
    (folder / "download" / "pawsx" / "dev-en.tsv").unlink()
    write_spec(folder)
    result = run("launch", "spec.yaml", "--dry-run", cwd=folder)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "data missing for this spec: pawsx dev (en): expected pawsx/dev-en.tsv" in lines[0]
    assert not (folder / "store").exists()
