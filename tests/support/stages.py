"""Running stages in-process on a tiny model: node records, stage contexts, prepared nodes."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Tiny models run fastest on one thread, and two threads thrash when another process
# holds the second core; the stages read this through jobs.device.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

from xstilts.jobs import data as jdata
from xstilts.jobs import synthetic
from xstilts.core.allocation import local_world_size
from xstilts.jobs.device import cpu_threads, select_device
from xstilts.jobs.modeling import build_task_model, read_checkpoint
from xstilts.jobs.stages import evaluate, prepare_data, prepare_model, train
from xstilts.core.nodes import NodeRecord, parse_node_record
from xstilts.core.spec import Hyperparameters
from xstilts.jobs.stages.base import StageContext
from xstilts.core.tasks import get_task
from xstilts.jobs.heads import head_for
from xstilts.jobs.trainer import linear_schedule

TINY_MODEL: dict[str, Any] = {
    "name": None,
    "tiny": {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 130,
    },
    "tokenizer_vocab_size": 600,
    "corpus_languages": ["en", "qaa", "qab", "qac"],
    "corpus_sentences_per_language": 300,
    "pretrain_steps": 20,
    "pretrain_lr": 1e-3,
    "pretrain_batch_size": 16,
}

HPARAMS: dict[str, Any] = {
    "learning_rate": 2e-3,
    "batch_size": 16,
    "grad_accum_steps": 2,
    "epochs": 1.0,
    "max_steps": 12,
    "warmup_ratio": 0.1,
    "max_seq_length": 128,
    "eval_interval": 5,
    "patience": None,
    "weight_decay": 0.01,
    "max_grad_norm": 1.0,
}


def node_record(stage: str, key: str, config: dict[str, Any], **node: Any) -> NodeRecord[Any]:
    """A node.json as the plan writes it, parsed as the entry parses it."""
    record = {"stage": stage, "kind": None, "task": None, "intermediate": None, "seed": None, "key": key,
              "config": config, "inputs": {}, **node}
    return parse_node_record(record)


def make_ctx(out_dir: Path, stage: str, config: dict[str, Any], inputs: dict[str, Path] | None = None,
             node_folder_url: str | None = None, **node: Any) -> StageContext[Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    return StageContext(node=node_record(stage, out_dir.name, config, **node), out_dir=out_dir, inputs=inputs or {},
                        log=logging.getLogger("test"), node_folder_url=node_folder_url)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stages")


@pytest.fixture(scope="module")
def model_node(workdir: Path) -> tuple[Path, dict[str, Any]]:
    out = workdir / "prepare-model"
    result = prepare_model.run(
        make_ctx(out, "prepare", {"model": TINY_MODEL, "seed": 0}, kind="model")
    )
    return out, result


@pytest.fixture(scope="module")
def data_nodes(workdir: Path, model_node: tuple[Path, dict[str, Any]]) -> dict[str, tuple[Path, dict[str, Any]]]:
    nodes = {}
    for task in ("syn-rate", "syn-chunk", "syn-sent", "syn-pos"):
        out = workdir / f"data-{task}"
        ctx = make_ctx(out, "prepare", {"task": task, "max_seq_length": 128}, {"model": model_node[0]},
                       kind="data", task=task)
        nodes[task] = (out, prepare_data.run(ctx))
    return nodes


def run_train(out: Path, stage: str, task: str, seed: int, encoder: Path, data_dir: Path,
              hparams: dict[str, Any] | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {"task": task, "seed": seed, "hparams": hparams or HPARAMS}
    if stage == "train-target":
        config["intermediate"] = "test"
        inputs = {"init": encoder, "data": data_dir}
    else:
        inputs = {"model": encoder, "data": data_dir}
    return train.run(make_ctx(out, stage, config, inputs, task=task, seed=seed))


@pytest.fixture(scope="module")
def intermediate_node(workdir: Path, model_node: Any, data_nodes: Any) -> tuple[Path, dict[str, Any]]:
    out = workdir / "inter-syn-rate"
    result = run_train(out, "train-intermediate", "syn-rate", 0, model_node[0], data_nodes["syn-rate"][0])
    return out, result


# ------------------------------------------------------------------ prepare model
