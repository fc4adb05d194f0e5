"""Image-caption intermediate tasks end to end on generated images (syn-shapes): image
features once per dataset, each multimodal task and each control trains a few steps on
the visual-prefix model, exports a bare text encoder, and a target stage trains from it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from safetensors.torch import load_file

from xstilts.jobs.entry import run_node
from xstilts.launcher.experiment import open_experiment
from tests.support.specs import demo_raw
from tests.support.paths import REPO

CAPTION_TASKS = ["syn-shapes-itm", "syn-shapes-itm-shuffled", "syn-shapes-contrastive", "syn-shapes-mcm",
                 "syn-shapes-mcm-text"]
EVALUATED = "syn-shapes-mcm"
TINY_VISION = {"hidden_size": 32, "image_size": 32, "patch_size": 8, "num_hidden_layers": 2,
               "num_attention_heads": 2, "intermediate_size": 64}


def multimodal_raw(store: Path) -> dict[str, Any]:
    raw = demo_raw()
    raw["name"] = "mm"
    raw["storage"] = str(store)
    raw["model"].update(pretrain_steps=20, corpus_sentences_per_language=300, tokenizer_vocab_size=400)
    raw["vision"] = {"tiny": TINY_VISION, "prefix_length": 4, "chunk_size": 128}
    raw["intermediate"]["tasks"] = ["none", *CAPTION_TASKS]
    raw["intermediate"]["hparams"].update(max_steps=6, eval_interval=3, batch_size=16, max_seq_length=40)
    raw["target"]["tasks"] = ["syn-sent"]
    raw["target"]["hparams"].update(max_steps=4, eval_interval=2, batch_size=16)
    raw["seeds"] = [1]
    return raw


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Every node of the multimodal grid run once, in plan order, through the job entry."""
    tmp = tmp_path_factory.mktemp("mm")
    spec = tmp / "mm.yaml"
    spec.write_text(yaml.safe_dump(multimodal_raw(tmp / "store"), sort_keys=False))
    experiment = open_experiment(str(spec))
    experiment.materialize()
    for node in experiment.plan.nodes:
        if node.stage == "evaluate" and node.intermediate != EVALUATED:
            continue  # one zero-shot evaluation shows the path; the others would only cost time
        assert run_node(experiment.store.url, node.ref, job_id="test") == 0, node.label
    return experiment


def _node(experiment: Any, stage: str, task: str | None = None, **fields: Any) -> Any:
    matches = [n for n in experiment.plan.nodes if n.stage == stage and (task is None or n.task == task)
               and all(getattr(n, k) == v for k, v in fields.items())]
    assert len(matches) == 1, (stage, task, fields, [n.label for n in matches])
    return matches[0]


def test_one_features_node_serves_every_caption_task(grid: Any) -> None:
    images = [n for n in grid.plan.nodes if n.kind == "images"]
    assert len(images) == 1 and images[0].task == "syn-shapes"
    for task in CAPTION_TASKS:
        assert _node(grid, "prepare", task, kind="data").inputs["images"] is images[0]
    stats = grid.result(images[0])
    assert stats["images"] == 600 and stats["computed_chunks"] == 5 and stats["reused_chunks"] == 0
    assert (stats["dim"], stats["patches"]) == (32, 16)


def test_features_are_written_once(grid: Any) -> None:
    """Running the prepare-images node again (its DONE removed) computes nothing."""
    node = next(n for n in grid.plan.nodes if n.kind == "images")
    folder = Path(grid.store.node_path("prepare", node.key))
    (folder / "DONE").unlink()
    assert run_node(grid.store.url, node.ref, job_id="again") == 0
    stats = grid.result(node)
    assert stats["computed_chunks"] == 0 and stats["reused_chunks"] == 5, stats


@pytest.mark.parametrize("task", CAPTION_TASKS)
def test_each_caption_task_trains_and_exports_only_the_text_encoder(grid: Any, task: str) -> None:
    node = _node(grid, "train-intermediate", task)
    result = grid.result(node)
    assert result["steps"] == 6 and result["dev"], result
    weights = load_file(Path(grid.store.node_path("train-intermediate", node.key)) / "model" / "model.safetensors")
    assert weights and all(k.split(".")[0] in ("embeddings", "encoder") for k in weights), sorted(weights)[:5]
    target = _node(grid, "train-target", "syn-sent", intermediate=task)
    assert target.inputs["init"] is node
    assert grid.result(target)["steps"] == 4
    if task == EVALUATED:
        evaluation = _node(grid, "evaluate", "syn-sent", intermediate=task)
        assert set(grid.result(evaluation)["languages"]) == {"en", "qaa", "qab", "qac"}


def _examples(grid: Any, task: str, split: str = "train") -> list[dict[str, Any]]:
    node = _node(grid, "prepare", task, kind="data")
    path = Path(grid.store.node_path("prepare", node.key)) / "data" / split / "en" / "examples.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_matching_pairs_and_the_shuffled_control(grid: Any) -> None:
    paired = _examples(grid, "syn-shapes-itm")
    assert {e["label"] for e in paired} == {"match", "mismatch"}
    negatives = [e for e in paired if e["label"] == "mismatch"]
    assert {e["negative"] for e in negatives} == {"random", "hard"}
    captions = {e["id"][:-1]: e["image_id"] for e in paired if e["label"] == "match"}
    assert all(e["image_id"] != captions[e["id"][:-1]] for e in negatives)
    shuffled = _examples(grid, "syn-shapes-itm-shuffled")
    matched = [e for e in shuffled if e["label"] == "match"]
    assert matched and all(e["image_id"] != e["true_image_id"] for e in matched)
    masked = _examples(grid, "syn-shapes-mcm")
    assert all(e["masked"] for e in masked)


def test_paper_table_marks_rows_by_modality(grid: Any) -> None:
    from xstilts.analysis.table import modality_label

    assert modality_label("syn-shapes-mcm") == "multimodal"
    assert modality_label("syn-shapes-mcm-text") == modality_label("syn-shapes-itm-shuffled") == "text control"
    assert modality_label("syn-rate") == "text" and modality_label("none") == "-"


def test_paper_scale_spec_plans_offline_with_a_gpu_hour_estimate() -> None:
    """`xstilts plan experiments/xtreme-r-multimodal.yaml`: node counts per stage and the
    GPU-hour estimate, with no hub access (the conftest sets HF_HUB_OFFLINE)."""
    from tests.support.grid import cli_env, run_cli

    spec = REPO / "experiments" / "xtreme-r-multimodal.yaml"
    shown = run_cli("plan", str(spec), env=cli_env({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}))
    assert shown.returncode == 0, shown.stderr
    assert "train-intermediate: 57" in shown.stdout and "total 1299 nodes" in shown.stdout, shown.stdout
    assert "estimated GPU-hours" in shown.stdout
    plan = json.loads(run_cli("plan", str(spec), "--json").stdout)
    rows = {row["stage"]: row for row in plan["gpu_hours"]}
    assert set(rows) == {"prepare", "tune", "train-intermediate", "train-target", "evaluate"}
    assert all(row["hours"] is not None and row["hours"] > 0 for row in rows.values())
    assert rows["train-target"]["nodes"] == plan["counts"]["train-target"] == 600
    intermediates = {n["task"] for n in plan["nodes"] if n["stage"] == "train-intermediate"}
    controls = {t for t in intermediates if t.endswith(("-mcm-text", "-itm-shuffled"))}
    assert controls == {"coco-mcm-text", "coco-itm-shuffled", "cc3m-mcm-text"}
    images = [n for n in plan["nodes"] if n["kind"] == "images"]
    assert sorted(n["task"] for n in images) == ["cc3m", "coco"]
    expected = 0.0  # the estimate is the spec's hours summed over the plan's nodes
    from xstilts.core.spec import load_spec

    loaded = load_spec(str(spec))
    for node in plan["nodes"]:
        expected += loaded.gpu_hours_for(node["stage"], node["task"]) or 0.0
    assert abs(sum(row["hours"] for row in rows.values()) - expected) < 1e-6
