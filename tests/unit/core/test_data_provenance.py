"""Data provenance in the keys (issue 17): a changed local data file changes the key of
the prepare node that reads it and of everything downstream, and nothing else; a pinned
hub revision (`data_revision`) does the same and is what the loader is asked for."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.support.specs import demo_raw
from tests.support.task_fixtures import write_fixture
from xstilts.core.errors import UserError
from xstilts.core.nodes import PrepareDataConfig
from xstilts.core.plan import Node, Plan, build_plan
from xstilts.core.spec import validate


def _raw(data_dir: Path | None) -> dict[str, Any]:
    raw = demo_raw()
    raw["intermediate"]["tasks"] = ["none", "syn-rate", "syn-shapes-mcm"]
    raw["target"]["tasks"] = ["syn-sent", "xnli", "pawsx"]
    if data_dir is not None:
        raw["data_dir"] = str(data_dir)
    return raw


def _keys(plan: Plan) -> dict[str, str]:
    """label -> key (labels are unique within these plans)."""
    keys = {node.label: node.key for node in plan.nodes}
    assert len(keys) == len(plan.nodes)
    return keys


def _downstream(plan: Plan, task: str) -> set[str]:
    """Labels of the prepare-data node of `task` and of every node that reads it, transitively."""
    reached: set[str] = set()

    def reads(node: Node) -> bool:
        if node.stage == "prepare" and node.kind == "data" and node.task == task:
            return True
        return any(dep.label in reached or reads(dep) for dep in node.inputs.values())

    for node in plan.nodes:
        if reads(node):
            reached.add(node.label)
    return reached


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    root = tmp_path / "download"
    write_fixture("xnli", root, n=2)
    write_fixture("pawsx", root, n=2)
    return root


def _changed(before: Plan, after: Plan) -> set[str]:
    old, new = _keys(before), _keys(after)
    assert old.keys() == new.keys()
    return {label for label in old if old[label] != new[label]}


@pytest.mark.parametrize("change", ["mtime", "append"])
def test_a_changed_local_file_changes_its_task_and_downstream_keys_only(data_dir: Path, change: str) -> None:
    spec = validate(_raw(data_dir))
    before = build_plan(spec)
    path = data_dir / "xnli" / "test-de.tsv"
    if change == "mtime":
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    else:
        with path.open("a", encoding="utf-8") as handle:
            handle.write("\n")
    after = build_plan(spec)
    expected = _downstream(before, "xnli")
    assert {"prepare:data xnli", "evaluate syn-rate->xnli seed=1", "train-target none->xnli seed=2"} <= expected
    assert _changed(before, after) == expected
    # pawsx, the synthetic tasks and the model keep their keys
    assert not any("pawsx" in label or "syn-sent" in label for label in _changed(before, after))


def test_an_unchanged_data_dir_gives_the_same_keys(data_dir: Path) -> None:
    spec = validate(_raw(data_dir))
    assert _keys(build_plan(spec)) == _keys(build_plan(spec))


def test_the_signature_is_in_the_prepare_config_and_missing_files_do_not_stop_planning(data_dir: Path) -> None:
    spec = validate(_raw(data_dir))
    config = _config(build_plan(spec), "xnli")
    assert config.data_files is not None and len(config.data_files) == 16
    assert _config(build_plan(spec), "syn-sent").data_files is None  # generated: no files, no field
    for path in (data_dir / "xnli").iterdir():
        path.unlink()
    assert _config(build_plan(spec), "xnli").data_files is None  # nothing there: planning still works


def test_a_touched_caption_split_file_changes_the_images_node_and_its_tasks(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "coco").mkdir(parents=True)
    (root / "coco" / "train.jsonl").write_text('{"image_id": "1", "path": "images/1.jpg", "captions": ["a"]}\n')
    raw = _raw(root)
    raw["intermediate"]["tasks"] = ["none", "coco-mcm"]
    raw["target"]["tasks"] = ["syn-sent"]
    spec = validate(raw)
    before = build_plan(spec)
    with (root / "coco" / "train.jsonl").open("a") as handle:
        handle.write('{"image_id": "2", "path": "images/2.jpg", "captions": ["b"]}\n')
    changed = _changed(before, build_plan(spec))
    assert {"prepare:images coco", "prepare:data coco-mcm", "train-intermediate coco-mcm seed=1"} <= changed
    assert not any("syn-sent" in label and "coco" not in label for label in changed)


def _config(plan: Plan, task: str) -> PrepareDataConfig:
    node = next(n for n in plan.nodes if n.stage == "prepare" and n.kind == "data" and n.task == task)
    assert isinstance(node.config, PrepareDataConfig)
    return node.config


def test_a_pinned_revision_changes_its_task_and_downstream_keys_only() -> None:
    before = build_plan(validate(_raw(None)))
    raw = _raw(None)
    raw["data_revision"] = {"xnli": "b8dd5d7af51114dbda02c0e3f6133f332186418e"}
    after = build_plan(validate(raw))
    assert _changed(before, after) == _downstream(before, "xnli")
    assert _config(after, "xnli").data_revision == "b8dd5d7af51114dbda02c0e3f6133f332186418e"
    assert "data_revision" not in _config(before, "xnli").as_json()  # unset: absent, keys as before


@pytest.mark.parametrize("revision, data_dir, expected", [
    ({"mnli": "main"}, False, "data_revision: unknown task of this spec 'mnli'"),
    ({"syn-sent": "main"}, False, "data_revision.syn-sent: 'syn-sent' is not read from the Hugging Face hub (generated)"),
    ({"syn-shapes-mcm": "main"}, False, "not read from the Hugging Face hub"),
    ({"xnli": "main"}, True, "data_revision: pins hub dataset revisions, but data_dir is set"),
])
def test_bad_data_revisions_name_the_problem(revision: dict[str, str], data_dir: bool, expected: str,
                                             tmp_path: Path) -> None:
    raw = _raw(tmp_path if data_dir else None)
    raw["data_revision"] = revision
    with pytest.raises(UserError, match="invalid experiment spec") as caught:
        validate(raw)
    assert expected in str(caught.value)
    if "unknown task" in expected:
        assert "valid: pawsx, syn-rate, syn-sent, syn-shapes-mcm, xnli" in str(caught.value)
