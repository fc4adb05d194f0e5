"""The package's layers are checked, not remembered (tests/support/layers.py has the rules)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.layers import OLD_TOP_LEVEL, PACKAGE_FOLDERS, REPO, module_files, violations


def test_every_import_follows_the_layer_rules() -> None:
    found = violations()
    assert not found, "imports across layers:\n" + "\n".join(map(str, found))


def test_the_checker_catches_a_wrong_import(tmp_path: Path) -> None:
    """A copy of the tree with three wrong imports planted: each is reported."""
    for folder in PACKAGE_FOLDERS.values():
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    plan = tmp_path / "core" / "plan.py"
    plan.write_text(plan.read_text() + "\n\ndef _late() -> None:\n    from xstilts.launcher import experiment\n")
    collect = tmp_path / "analysis" / "collect.py"
    collect.write_text("import torch\n" + collect.read_text())
    entry = tmp_path / "jobs" / "entry.py"
    entry.write_text("import launcher.cli\n" + entry.read_text())
    found = {(v.module, v.imported) for v in violations(tmp_path)}
    assert ("xstilts.core.plan", "xstilts.launcher.experiment") in found
    assert ("xstilts.analysis.collect", "torch") in found
    assert ("xstilts.jobs.entry", "launcher.cli") in found


def _loaded_after_importing(prefixes: tuple[str, ...]) -> list[str]:
    """Modules loaded by a fresh interpreter that imports every module under `prefixes`."""
    names = [name for name in module_files() if name.startswith(prefixes) and not name.endswith("__main__")]
    code = ("import importlib, json, sys\n"
            f"for name in {names!r}: importlib.import_module(name)\n"
            "print(json.dumps(sorted(sys.modules)))")
    result = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True,
                            cwd=REPO / "tests")  # not the repo root: its folders must not be importable bare
    return json.loads(result.stdout.splitlines()[-1])


def test_launcher_analysis_and_core_load_no_torch() -> None:
    loaded = _loaded_after_importing(("xstilts.core", "xstilts.launcher", "xstilts.analysis", "xstilts.cli"))
    heavy = [m for m in loaded if m.split(".")[0] in ("torch", "transformers", "datasets", "ray")]
    assert not heavy, heavy[:10]


def test_no_bare_top_level_module_is_ever_imported() -> None:
    loaded = _loaded_after_importing(("xstilts",))
    bare = [m for m in loaded if m.split(".")[0] in OLD_TOP_LEVEL]
    assert not bare, bare
    assert "xstilts.jobs.trainer" in loaded  # the whole package was imported, jobs included
