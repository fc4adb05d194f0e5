"""Models: task heads on a pretrained encoder, and reading/writing them in HF format.

Every training stage starts from an *encoder* checkpoint (the pretrained model, or the
encoder of an intermediate-task model) and puts a *fresh* head on it. We do not rely on
`from_pretrained(..., ignore_mismatched_sizes=True)` for that: it keeps every head
weight whose shape happens to match (the dense layer of a classification head, or the
whole head when the intermediate and target tasks have the same number of labels), so
intermediate-task heads would silently leak into target training. Instead the model is
built from its config with a seeded random head, and only the encoder's weights are
loaded from the checkpoint, by name, with missing encoder weights being an error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel

if TYPE_CHECKING:
    from transformers.models.auto.auto_factory import _BaseAutoModelClass

    from xstilts.core.tasks import Task

MODEL_SUBDIR = "model"
"""Every stage that produces a model writes it to `<out_dir>/model/` in HF format."""

def quiet_progress_bars() -> None:
    """Turn off transformers' and datasets' tqdm bars: in batch-job logs they are
    hundreds of carriage-return lines per save or load and carry no information."""
    import datasets
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()


def task_config(model_dir: Path, task: Task) -> PretrainedConfig:
    """The encoder's config with this task's label set."""
    config = AutoConfig.from_pretrained(model_dir)
    config.num_labels = len(task.labels)
    config.id2label = dict(enumerate(task.labels))
    config.label2id = {label: index for index, label in enumerate(task.labels)}
    return config


def read_checkpoint(model_dir: Path) -> dict[str, torch.Tensor]:
    """All tensors of a HF safetensors checkpoint, single-file or sharded."""
    single = model_dir / "model.safetensors"
    if single.is_file():
        return load_file(single)
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(load_file(model_dir / shard))
        return state
    raise FileNotFoundError(f"no safetensors checkpoint in {model_dir}")


def load_encoder_weights(model: PreTrainedModel, model_dir: Path) -> list[str]:
    """Copy the encoder weights of the checkpoint in `model_dir` into `model`'s encoder.

    The checkpoint may be a bare encoder (keys `embeddings.*`, `encoder.*`, `pooler.*`) or
    any model with a head (keys `roberta.embeddings.*`, ..., `classifier.*`). Head keys
    are ignored; encoder keys must all be present except the pooler, which heads built
    without one do not have and bare encoders carry untrained. Returns the checkpoint
    keys that were not used, for logging.
    """
    encoder = model.base_model
    prefix = f"{model.base_model_prefix}."
    wanted = encoder.state_dict()
    found: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    for key, tensor in read_checkpoint(model_dir).items():
        name = key[len(prefix):] if key.startswith(prefix) else key
        if name in wanted:
            found[name] = tensor
        else:
            unused.append(key)
    missing = [k for k in wanted if k not in found and not k.startswith("pooler.")]
    if missing:
        raise ValueError(f"{model_dir}: checkpoint lacks encoder weights {missing[:5]} (of {len(missing)})")
    mismatched = [k for k, t in found.items() if t.shape != wanted[k].shape]
    if mismatched:
        raise ValueError(f"{model_dir}: encoder weights with a different shape: {mismatched[:5]}")
    encoder.load_state_dict(found, strict=False)
    return unused


def fresh_head_model(auto_class: type[_BaseAutoModelClass], config: PretrainedConfig, encoder_dir: Path, seed: int) -> PreTrainedModel:
    """`auto_class`'s model from `config` with a head seeded by `seed` and the encoder
    weights of the checkpoint in `encoder_dir` (every head kind starts this way)."""
    torch.manual_seed(seed)
    model = auto_class.from_config(config)
    load_encoder_weights(model, encoder_dir)
    return model


def build_task_model(model_dir: Path, task: Task, seed: int) -> torch.nn.Module:
    """A model for `task`: the encoder from `model_dir` under a fresh head seeded by `seed`."""
    from xstilts.jobs.heads import head_for

    return head_for(task).build_model(model_dir, seed)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
