"""What the loaders contribute to data provenance (issue 17): every local path they read
lies in the folders the plan signs (`core.data_files.task_folders`), a pinned revision
reaches `load_dataset`, and a loaded hub split names the revision it resolved to."""

from __future__ import annotations

from pathlib import Path

import pytest

from xstilts.core.captions import CAPTION_DATASETS, is_generated
from xstilts.core.data_files import caption_split_files, task_folders
from xstilts.core.tasks import TASKS
from xstilts.jobs.multimodal import captions
from xstilts.jobs.tasks import sources


@pytest.mark.parametrize("name", sorted(n for n, t in TASKS.items() if t.source.kind not in ("synthetic", "captions")))
def test_every_local_path_of_a_task_lies_in_its_signed_folders(name: str) -> None:
    task = TASKS[name]
    folders = task_folders(task)
    for split in task.splits:
        for lang in task.split_languages(split):
            for group in sources._alternatives(task, split, lang):
                for path in group:
                    assert path.split("/")[0] in folders, f"{name} {split} {lang}: {path} is outside {folders}"


@pytest.mark.parametrize("name", sorted(n for n in CAPTION_DATASETS if not is_generated(n)))
def test_caption_split_files_are_the_loaders_layout(name: str) -> None:
    spec = CAPTION_DATASETS[name]
    layout = captions.local_layout(name)
    assert caption_split_files(name, spec.splits) == tuple(layout[split] for split in spec.splits)


def test_a_pinned_revision_reaches_load_dataset() -> None:
    """Offline, the hub load fails; the note it carries names what was asked for."""
    with pytest.raises(Exception) as caught:
        sources.load_examples("xnli", "test", "de", revision="0123456789abcdef0123456789abcdef01234567")
    notes = " ".join(getattr(caught.value, "__notes__", []))
    assert "revision=0123456789abcdef0123456789abcdef01234567" in notes
    pinned = sources.with_revision(TASKS["xcopa"], "v1")
    hub = [s for group in pinned.split_sources.values() for s in group if s.kind == "hf"] + [pinned.source]
    assert hub and all(s.revision == "v1" for s in hub)
    assert sources.with_revision(TASKS["xnli"], None) is TASKS["xnli"]


def test_hub_provenance_names_the_cached_commit(tmp_path: Path) -> None:
    """`datasets` caches a hub split under `.../<version>/<commit sha>/`: that folder is
    the resolved revision (checked on a real Arrow table saved in such a folder)."""
    from datasets import Dataset, load_from_disk

    commit = "b8dd5d7af51114dbda02c0e3f6133f332186418e"
    folder = tmp_path / "facebook___xnli" / "de" / "0.0.0" / commit
    Dataset.from_dict({"premise": ["a", "b"], "label": [0, 1]}).save_to_disk(str(folder))
    dataset = load_from_disk(str(folder))
    record = sources.hub_provenance(dataset, "facebook/xnli", "de", "test", None)
    assert record["resolved_revision"] == commit
    assert record["rows"] == 2 and record["fingerprint"] and record["config"] == "de"
    moved = tmp_path / "elsewhere"
    Dataset.from_dict({"x": [1]}).save_to_disk(str(moved))
    assert sources.hub_provenance(load_from_disk(str(moved)), "n", None, "train", "main")["resolved_revision"] is None


def test_prepare_records_every_hub_split_it_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`recording_hub_loads` sees what `_hub_split` loads through the real `load_dataset`
    (a local csv folder stands in for the hub repository)."""
    import datasets
    from dataclasses import replace

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "train.csv").write_text("premise,hypothesis,label\na,b,0\nc,d,1\n")
    source = replace(TASKS["xnli"].source, name=str(repo), config=None)
    with sources.recording_hub_loads() as loads:
        rows = sources._hub_split(TASKS["xnli"], source, None, "train")
    assert len(rows) == 2
    assert [(load["dataset"], load["split"], load["rows"]) for load in loads] == [(str(repo), "train", 2)]
    assert loads[0]["fingerprint"]
    sources._hub_split(TASKS["xnli"], source, None, "train")
    assert len(loads) == 1  # outside the block nothing is recorded
