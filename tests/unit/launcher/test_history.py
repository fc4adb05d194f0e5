"""`xstilts history`'s spec diff: key by key, in the newer spec's order, gone keys last."""

from __future__ import annotations

import yaml

from xstilts.launcher.commands.history import SpecChange, spec_changes


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
