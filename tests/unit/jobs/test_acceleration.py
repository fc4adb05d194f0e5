"""The device speed-ups (`xstilts.jobs.acceleration`): chosen on a CUDA device, left off on
the CPU, and each switch applied to a real model. The selection is a pure function of the
device's facts, so the CUDA branch runs here without a GPU."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, XLMRobertaConfig

from xstilts.core.errors import UserError
from xstilts.core.spec import Acceleration, Hyperparameters, validate
from xstilts.jobs.acceleration import (
    AccelerationPolicy,
    apply_to_model,
    encoder_layers,
    fsdp_mixed_precision,
    is_checkpointing,
    is_compiled,
    select_speedups,
    speedups_for,
)
from xstilts.jobs.device import DeviceInfo, mixed_precision_dtype, select_device
from xstilts.jobs.trainer import MIN_EVAL_BATCH_SIZE, TrainConfig, adamw
from xstilts.launcher.profiles import SPEC_OWNED_ENV
from tests.support.specs import demo_raw

DEFAULT = AccelerationPolicy()
CUDA_BF16 = mixed_precision_dtype("cuda", bf16_supported=True)


def tiny_model(attn: str | None = None, dropout: float = 0.1) -> torch.nn.Module:
    config = XLMRobertaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=64, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                              num_labels=3)
    torch.manual_seed(0)
    if attn is None:
        return AutoModelForSequenceClassification.from_config(config)
    return AutoModelForSequenceClassification.from_config(config, attn_implementation=attn)


# ----------------------------------------------------------------------------- selection


def test_precision_is_bf16_on_cuda_devices_that_have_it_and_fp32_elsewhere() -> None:
    assert mixed_precision_dtype("cuda", bf16_supported=True) == torch.bfloat16
    assert mixed_precision_dtype("cuda", bf16_supported=False) is None  # V100: fp32, not fp16 without loss scaling
    assert mixed_precision_dtype("cpu", bf16_supported=True) is None


def test_cuda_single_process_selects_bf16_autocast_sdpa_fused_adamw_and_compile() -> None:
    chosen = select_speedups("cuda", CUDA_BF16, world_size=1, policy=DEFAULT)
    assert chosen.autocast_dtype == torch.bfloat16
    assert chosen.fsdp_param_dtype is None  # nothing is sharded on one process
    assert chosen.attn_implementation == "sdpa"
    assert chosen.fused_adamw
    assert chosen.compile_layers
    assert not chosen.activation_checkpointing


def test_cuda_sharded_run_keeps_bf16_parameters_and_reduces_in_fp32() -> None:
    chosen = select_speedups("cuda", CUDA_BF16, world_size=4, policy=DEFAULT)
    assert chosen.fsdp_param_dtype == torch.bfloat16
    layer, root = fsdp_mixed_precision(chosen, root=False), fsdp_mixed_precision(chosen, root=True)
    assert layer is not None and root is not None
    assert (layer.param_dtype, layer.reduce_dtype, layer.output_dtype) == (torch.bfloat16, torch.float32, None)
    # the root casts the logits back, so losses and metrics are fp32
    assert (root.param_dtype, root.reduce_dtype, root.output_dtype) == (torch.bfloat16, torch.float32, torch.float32)


def test_cuda_without_bf16_stays_fp32() -> None:
    chosen = select_speedups("cuda", mixed_precision_dtype("cuda", bf16_supported=False), world_size=2, policy=DEFAULT)
    assert chosen.autocast_dtype is None and chosen.fsdp_param_dtype is None
    assert fsdp_mixed_precision(chosen, root=True) is None
    assert chosen.fused_adamw and chosen.compile_layers  # those pay in fp32 too


def test_cpu_selects_none_of_the_gpu_only_speedups() -> None:
    for world_size in (1, 2):
        chosen = select_speedups("cpu", None, world_size=world_size, policy=DEFAULT)
        assert chosen.autocast_dtype is None and chosen.fsdp_param_dtype is None
        assert not chosen.compile_layers
        assert not chosen.activation_checkpointing
        assert fsdp_mixed_precision(chosen, root=True) is None
        # SDPA and fused AdamW have CPU kernels that beat the alternatives (bench/train_scale.py)
        assert chosen.attn_implementation == "sdpa"
        assert chosen.fused_adamw


def test_cpu_never_autocasts_even_if_handed_a_dtype() -> None:
    assert select_speedups("cpu", torch.bfloat16, world_size=2, policy=DEFAULT).autocast_dtype is None


def test_compile_switch_forces_either_way() -> None:
    assert select_speedups("cpu", None, 1, AccelerationPolicy(compile="on")).compile_layers
    assert not select_speedups("cuda", CUDA_BF16, 1, AccelerationPolicy(compile="off")).compile_layers


def test_activation_checkpointing_switch_on_either_device() -> None:
    policy = AccelerationPolicy(activation_checkpointing=True)
    assert select_speedups("cuda", CUDA_BF16, 8, policy).activation_checkpointing
    assert select_speedups("cpu", None, 1, policy).activation_checkpointing


def test_this_machine_gets_the_cpu_choice() -> None:
    device = select_device()
    chosen = speedups_for(device, 1)
    assert chosen.fused_adamw
    if device.is_cuda:  # a GPU machine running the suite
        assert chosen.compile_layers
    else:
        assert not chosen.compile_layers and chosen.autocast_dtype is None


def test_a_cuda_device_info_selects_the_cuda_path_without_a_gpu() -> None:
    device = DeviceInfo(torch.device("cuda", 0), torch.bfloat16, num_threads=4)
    chosen = speedups_for(device, 2, AccelerationPolicy(activation_checkpointing=True))
    assert chosen.autocast_dtype == torch.bfloat16 and chosen.fsdp_param_dtype == torch.bfloat16
    assert chosen.fused_adamw and chosen.compile_layers and chosen.activation_checkpointing
    assert "fused AdamW" in chosen.describe() and "activation checkpointing" in chosen.describe()


# ----------------------------------------------------------------------------- the spec's switches reach jobs


def test_spec_section_round_trips_through_the_job_environment() -> None:
    section = Acceleration(compile="off", activation_checkpointing=True, eval_batch_size=512)
    assert AccelerationPolicy.from_env(section.env()) == AccelerationPolicy("off", True, 512)
    assert AccelerationPolicy.from_env(Acceleration().env()) == DEFAULT
    assert AccelerationPolicy.from_env({}) == DEFAULT
    raw = demo_raw()
    raw["acceleration"] = {"activation_checkpointing": True}
    env = validate(raw).job_env()
    assert env["XSTILTS_ACTIVATION_CHECKPOINTING"] == "1" and env["XSTILTS_COMPILE"] == "auto"
    assert {"XSTILTS_COMPILE", "XSTILTS_ACTIVATION_CHECKPOINTING", "XSTILTS_EVAL_BATCH_SIZE"} <= SPEC_OWNED_ENV.keys()


def test_bad_compile_switch_names_the_choices() -> None:
    raw = demo_raw()
    raw["acceleration"] = {"compile": "yes please"}
    with pytest.raises(UserError) as info:
        validate(raw)
    assert "acceleration.compile" in str(info.value) and "'auto', 'on' or 'off'" in str(info.value)
    with pytest.raises(ValueError, match="valid values: auto, on, off"):
        AccelerationPolicy.from_env({"XSTILTS_COMPILE": "maybe"})


def test_evaluation_batch_is_sized_apart_from_the_training_batch() -> None:
    hparams = Hyperparameters(batch_size=16, max_steps=10)
    assert TrainConfig.from_hparams(hparams, 100, seed=1).eval_batch_size == max(MIN_EVAL_BATCH_SIZE, 32)
    assert TrainConfig.from_hparams(hparams, 100, seed=1, eval_batch_size=512).eval_batch_size == 512


# ----------------------------------------------------------------------------- applied to a real model


def test_sdpa_is_switched_on_and_checked_active() -> None:
    model = tiny_model(attn="eager")
    assert model.config._attn_implementation == "eager"
    apply_to_model(model, select_speedups("cpu", None, 1, DEFAULT))
    assert model.config._attn_implementation == "sdpa"


def test_activation_checkpointing_gives_the_same_gradients_with_dropout_on() -> None:
    """Recomputation replays the RNG state, so dropout masks and gradients are identical."""
    ids = torch.randint(3, 100, (4, 12))
    mask = torch.ones_like(ids)
    mask[2:, 9:] = 0
    labels = torch.tensor([0, 1, 2, 1])
    grads = []
    for checkpointing in (False, True):
        model = tiny_model()
        apply_to_model(model, select_speedups("cpu", None, 1, AccelerationPolicy(activation_checkpointing=checkpointing)))
        assert is_checkpointing(model) is checkpointing
        model.train()
        torch.manual_seed(7)
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=0, atol=0, msg=name)


def test_compile_switch_compiles_each_layer_and_keeps_state_dict_names() -> None:
    model = tiny_model()
    names = list(model.state_dict())
    apply_to_model(model, select_speedups("cpu", None, 1, AccelerationPolicy(compile="on")))
    assert all(is_compiled(layer) for layer in encoder_layers(model)) and len(encoder_layers(model)) == 2
    assert list(model.state_dict()) == names  # checkpoints and exports keep their keys
    plain = tiny_model()
    apply_to_model(plain, select_speedups("cpu", None, 1, DEFAULT))
    assert not any(is_compiled(layer) for layer in encoder_layers(plain))


def test_encoder_layer_traces_as_one_graph_at_varying_widths() -> None:
    """What the compile switch relies on: dynamo captures an XLM-R layer without graph breaks,
    also when dynamic padding changes the width from batch to batch (eager backend: the
    tracing, not a C++ build)."""
    model = tiny_model(dropout=0.0).eval()
    reference = tiny_model(dropout=0.0).eval()
    for layer in encoder_layers(model):
        layer.compile(backend="eager", fullgraph=True)
    for width in (7, 12, 19):
        ids = torch.randint(3, 100, (2, width))
        with torch.no_grad():
            torch.testing.assert_close(model(input_ids=ids).logits, reference(input_ids=ids).logits)


def test_trainer_applies_the_selection(tmp_path: Path) -> None:
    """The CPU default of the trainer: fused AdamW, no compiled layers; and a forced
    selection reaches the optimizer and the model."""
    from xstilts.jobs.data import TokenizedData
    from xstilts.core.tasks import get_task
    from xstilts.jobs.trainer import Trainer

    task = get_task("syn-rate")
    rows = [[0, 5, 6, 7, 2], [0, 8, 9, 2]]
    data = TokenizedData(rows, [0, 1], pad_id=1)
    config = TrainConfig.from_hparams(Hyperparameters(batch_size=2, max_steps=2, eval_interval=2), 2, seed=1)
    device = DeviceInfo(torch.device("cpu"), None, 1)
    log = logging.getLogger("test")
    gold = [{"label": "negative"}, {"label": "neutral"}]
    default = Trainer(tiny_model(), task, data, data, config, device, tmp_path / "a.jsonl", log, dev_examples=gold)
    assert default.optimizer.defaults["fused"] is True and not default.speedups.compile_layers
    assert not is_checkpointing(default.model)
    forced = select_speedups("cpu", None, 1, AccelerationPolicy(activation_checkpointing=True))
    forced = type(forced)(**{**forced.__dict__, "fused_adamw": False})
    trainer = Trainer(tiny_model(), task, data, data, config, device, tmp_path / "b.jsonl", log,
                      dev_examples=gold, speedups=forced)
    assert not trainer.optimizer.defaults.get("fused")
    assert is_checkpointing(trainer.model)
    trainer.fit()
    assert trainer.state.step == 2
    assert adamw(tiny_model(), 1e-3, 0.01, fused=True).defaults["fused"] is True
