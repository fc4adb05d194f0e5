"""A node's output depends only on its key: the same prepare:model node, run twice in
fresh processes that differ in everything a key does not fix (Python's hash seed,
torch's and rayon's thread counts, the store folder), writes the same bytes.

Each run is a real node process (`python -m xstilts.jobs.entry`), as a compute node
runs it, so that whatever the process inherits - hash salting, thread pools started
from the environment - is in play. The tiny model is just wide enough (one weight
matrix over torch's 32768-element parallel grain) that a thread-count-dependent float
sum would show.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support.grid import small_grid_raw
from xstilts.launcher.experiment import open_experiment

BOOKKEEPING = {"state.json", "DONE", "lease"}
"""Node files and folders about a run rather than its output: attempts (host, PID,
times), the finishing time, who held the node. Everything else in the node folder is
compared byte for byte."""

TINY = {
    "tiny": {"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
             "max_position_embeddings": 130},
    "tokenizer_vocab_size": 600,
    "corpus_sentences_per_language": 300,
    "pretrain_steps": 12,
    "pretrain_lr": 0.002,
    "pretrain_batch_size": 16,
}

RUNS = (
    {"PYTHONHASHSEED": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1",
     "TOKENIZERS_PARALLELISM": "false"},
    {"PYTHONHASHSEED": "2", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "RAYON_NUM_THREADS": "2",
     "TOKENIZERS_PARALLELISM": "true"},
)
"""What differs between the two runs: nothing a node key covers."""


def _prepared_store(tmp_path: Path, name: str) -> tuple[str, str, Path]:
    """A store with the materialized grid of a tiny model: its URL, the prepare:model
    node's ref and that node's folder."""
    raw = small_grid_raw(str(tmp_path / f"store-{name}"))
    raw["model"] = TINY
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(yaml.safe_dump(raw, sort_keys=False))
    experiment = open_experiment(str(spec))
    experiment.materialize()
    node = next(n for n in experiment.plan.nodes if n.stage == "prepare" and n.kind == "model")
    return experiment.store.url, node.ref, Path(experiment.node_dir(node))


def _run_node(store_url: str, ref: str, env: dict[str, str]) -> None:
    command = [sys.executable, "-m", "xstilts.jobs.entry", "--store", store_url, "--ref", ref, "--job-id", "test"]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env}, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def _outputs(node_dir: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every output file of a finished node."""
    files = {}
    for path in sorted(node_dir.rglob("*")):
        relative = path.relative_to(node_dir).as_posix()
        if path.is_file() and relative.split("/")[0] not in BOOKKEEPING:
            files[relative] = path.read_bytes()
    return files


def _without_timings(value: Any) -> Any:
    """result.json less the fields that measure wall time (`*seconds`)."""
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if not k.endswith("seconds")}
    return value


def test_the_same_prepare_model_node_writes_the_same_bytes(tmp_path: Path) -> None:
    folders = []
    for index, env in enumerate(RUNS):
        store_url, ref, folder = _prepared_store(tmp_path, f"run{index}")
        _run_node(store_url, ref, env)
        folders.append(folder)
    first, second = (_outputs(folder) for folder in folders)
    assert first.keys() == second.keys()
    assert "model/model.safetensors" in first and "model/tokenizer.json" in first
    results = [json.loads(files.pop("result.json")) for files in (first, second)]
    assert _without_timings(results[0]) == _without_timings(results[1])
    differing = sorted(name for name in first if first[name] != second[name])
    assert differing == [], f"files that differ between the runs: {differing}"
