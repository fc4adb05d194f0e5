"""`xstilts history`'s spec diff: key by key, in the newer spec's order, gone keys last."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from xstilts.launcher.commands.history import SpecChange, spec_changes
from tests.support.grid import run_cli, write_small_grid


def dump(raw: dict[str, object]) -> str:
    return yaml.safe_dump(raw, sort_keys=False)


def test_changed_added_and_removed_keys() -> None:
    before = dump({"seeds": [1], "target": {"hparams": {"learning_rate": 1e-5, "epochs": 3}}, "data_dir": "/d"})
    after = dump({"seeds": [1, 2], "target": {"hparams": {"learning_rate": 3e-5, "epochs": 3, "patience": 2}}})
    assert spec_changes(before, after) == [
        SpecChange("seeds", [1], [1, 2]),
        SpecChange("target.hparams.learning_rate", 1e-5, 3e-5),
        SpecChange("target.hparams.patience", None, 2),
        SpecChange("data_dir", "/d", None),
    ]
    assert SpecChange("seeds", [1], [1, 2]).describe() == "seeds: [1] -> [1, 2]"
    assert SpecChange("data_dir", "/d", None).describe() == 'data_dir: "/d" -> (unset)'


def test_an_unchanged_spec_has_no_changes() -> None:
    text = dump({"name": "x", "seeds": [1]})
    assert spec_changes(text, text) == []


def test_an_experiment_never_launched_has_an_empty_history(tmp_path: Path) -> None:
    spec = write_small_grid(tmp_path)
    shown = run_cli("history", str(spec))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == "" and "'small' was never launched at" in shown.stderr
    as_json = json.loads(run_cli("history", str(spec), "--json").stdout)
    assert as_json["experiment"] == "small" and as_json["launches"] == []
