"""How a training job uses its device: the speed-ups a user would switch on by hand.

On a GPU, fine-tuning XLM-R is made fast by a short, well-known list: bf16 (autocast, and
under FSDP2 bf16 parameters with fp32 gradient reduction), fused attention (PyTorch's
SDPA, which dispatches to flash attention), the fused AdamW kernel, `torch.compile` of
the encoder layers, and, when memory is what limits the batch (the large model at long
sequence lengths), activation checkpointing. On a CPU most of them lose: bf16 is slower
than fp32 on most server cores, a compile costs minutes that a short CPU run never earns
back, and checkpointing trades compute that a CPU lacks for memory it has. Two are
chosen on both: SDPA (transformers' default, a fused kernel on CPU too) and fused AdamW,
whose CPU kernel is one vectorised pass (measured at XLM-R base size on this project's
2-core machine: 0.46-0.65 s per step against 1.5-3.0 s for the default foreach
implementation, whose sqrt/div/lerp passes over 278M parameters were 30% of a step).

So the choice is made here, once per job, from the device and the spec's `acceleration`
section, and written down as a `Speedups` value that the trainer applies
(`apply_to_model`, `fsdp_mixed_precision`, `jobs.trainer.adamw`). The choice is a pure
function of plain facts (`select_speedups`), so it is unit-tested without a GPU; the
device itself is probed only by `jobs.device.select_device`.

None of these changes what a node *is*: its key does not include them, like the device it
ran on. bf16 and compilation change results in the last bits, as another GPU model would;
activation checkpointing and the evaluation batch size change nothing but speed and memory.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

import torch

if TYPE_CHECKING:
    from torch.distributed.fsdp import MixedPrecisionPolicy

    from xstilts.jobs.device import DeviceInfo

CompileSwitch = Literal["auto", "on", "off"]
COMPILE_CHOICES: tuple[CompileSwitch, ...] = ("auto", "on", "off")
ATTENTION = "sdpa"
"""The attention kernel every job asks transformers for: `scaled_dot_product_attention`,
which runs flash or memory-efficient attention on CUDA and a fused kernel on CPU."""


FUSED_ADAMW_DEVICES = ("cuda", "cpu")
"""Devices with a fused AdamW kernel in torch >= 2.4 (the CPU one arrived with 2.4)."""


@dataclass(frozen=True)
class AccelerationPolicy:
    """The spec's `acceleration` section as jobs read it from the environment
    (`xstilts.core.spec.Acceleration.env`), so it reaches jobs on every executor."""

    compile: CompileSwitch = "auto"
    """`torch.compile` the encoder layers: `auto` is on with CUDA, off on CPU."""
    activation_checkpointing: bool = False
    """Recompute each encoder layer's activations in the backward pass (memory for compute)."""
    eval_batch_size: int | None = None
    """Examples per forward pass when evaluating; None: twice the training batch, at least 64
    (dev evaluation) or 128 (test prediction)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AccelerationPolicy:
        switch = env.get("XSTILTS_COMPILE", "auto").strip().lower() or "auto"
        if switch not in COMPILE_CHOICES:
            raise ValueError(f"XSTILTS_COMPILE is {switch!r}; valid values: {', '.join(COMPILE_CHOICES)}")
        batch = env.get("XSTILTS_EVAL_BATCH_SIZE", "").strip()
        return cls(
            compile=switch,
            activation_checkpointing=env.get("XSTILTS_ACTIVATION_CHECKPOINTING", "0").lower() in ("1", "true", "yes"),
            eval_batch_size=int(batch) if batch else None,
        )


@dataclass(frozen=True)
class Speedups:
    """What one training process does to go fast on its device (see the module docstring)."""

    autocast_dtype: torch.dtype | None
    """`torch.autocast` dtype of forward passes: bf16 on a CUDA device that has it, else None (fp32)."""
    fsdp_param_dtype: torch.dtype | None
    """FSDP2 `MixedPrecisionPolicy.param_dtype` when the model is sharded on CUDA (bf16
    all-gathers and compute; gradients reduced in fp32); None keeps fp32 parameters."""
    attn_implementation: str
    """The attention kernel asked of transformers and checked after the model is built."""
    fused_adamw: bool
    """`torch.optim.AdamW(fused=True)`: one pass over each parameter (CUDA and CPU kernels)."""
    compile_layers: bool
    """`torch.compile` each encoder layer (before sharding, as FSDP2 wants)."""
    activation_checkpointing: bool
    """Non-reentrant activation checkpointing of each encoder layer."""

    def describe(self) -> str:
        """One log line: what this job switched on."""
        parts = [
            f"autocast {_dtype_name(self.autocast_dtype)}",
            f"FSDP params {_dtype_name(self.fsdp_param_dtype)}",
            f"attention {self.attn_implementation}",
            "fused AdamW" if self.fused_adamw else "foreach AdamW",
            "compiled layers" if self.compile_layers else "eager layers",
        ]
        if self.activation_checkpointing:
            parts.append("activation checkpointing")
        return ", ".join(parts)


def _dtype_name(dtype: torch.dtype | None) -> str:
    return "off (fp32)" if dtype is None else str(dtype).removeprefix("torch.")


def select_speedups(device_type: str, autocast_dtype: torch.dtype | None, world_size: int,
                    policy: AccelerationPolicy) -> Speedups:
    """The speed-ups of one process on `device_type` ("cuda" or "cpu").

    `autocast_dtype` is the device's mixed-precision dtype as `jobs.device.select_device`
    found it (bf16 on a CUDA device that supports it, else None). Sharded CUDA runs
    also keep their parameters in that dtype between layers (FSDP2 mixed precision),
    which halves all-gather traffic; gradients are still reduced in fp32.
    """
    cuda = device_type == "cuda"
    mixed = autocast_dtype if cuda else None
    return Speedups(
        autocast_dtype=mixed,
        fsdp_param_dtype=mixed if world_size > 1 else None,
        attn_implementation=ATTENTION,
        fused_adamw=device_type in FUSED_ADAMW_DEVICES,
        compile_layers=policy.compile == "on" or (policy.compile == "auto" and cuda),
        activation_checkpointing=policy.activation_checkpointing,
    )


def speedups_for(device: DeviceInfo, world_size: int, policy: AccelerationPolicy | None = None) -> Speedups:
    """`select_speedups` for a chosen device."""
    return select_speedups(device.device.type, device.autocast_dtype, world_size, policy or AccelerationPolicy())


def fsdp_mixed_precision(speedups: Speedups, *, root: bool) -> MixedPrecisionPolicy | None:
    """The FSDP2 policy of one `fully_shard` call, or None for fp32 parameters.

    The root unit casts its outputs back to fp32, so losses and metrics are computed in
    fp32 whatever the layers ran in.
    """
    if speedups.fsdp_param_dtype is None:
        return None
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(
        param_dtype=speedups.fsdp_param_dtype,
        reduce_dtype=torch.float32,
        output_dtype=torch.float32 if root else None,
    )


def encoder_of(model: torch.nn.Module) -> Any:
    """The transformers encoder model inside a task model (every head builds one: its
    `base_model` is an `XLMRobertaModel`, whose `encoder.layer` is the layer list)."""
    return cast(Any, model).base_model


def encoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer layers of a task model, in order."""
    return list(encoder_of(model).encoder.layer)


class AttentionNotActive(RuntimeError):
    """The model does not run the attention kernel the job selected."""


def apply_to_model(model: torch.nn.Module, speedups: Speedups, log: logging.Logger | None = None) -> torch.nn.Module:
    """Switch the model to the selected attention kernel, activation checkpointing and
    per-layer compilation, in place, before it is moved into FSDP2.

    The attention kernel is checked to be active afterwards: transformers falls back to
    eager attention for configurations SDPA cannot run, and a silent fallback would cost
    a GPU run a large part of its speed.
    """
    encoder = encoder_of(model)
    if getattr(encoder.config, "_attn_implementation", None) != speedups.attn_implementation:
        encoder.set_attn_implementation(speedups.attn_implementation)
    active = getattr(encoder.config, "_attn_implementation", None)
    if active != speedups.attn_implementation:
        raise AttentionNotActive(f"the encoder runs {active!r} attention, not {speedups.attn_implementation!r}")
    if speedups.activation_checkpointing:
        # non-reentrant: it replays the RNG state (same dropout masks) and nests in FSDP2's hooks
        kwargs = {"use_reentrant": False}
        if hasattr(encoder, "activation_checkpointing_enable"):  # transformers >= 5.x; the old name warns
            encoder.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if speedups.compile_layers:
        for layer in encoder_layers(model):
            layer.compile()
    if log is not None:
        log.info("device speed-ups: %s", speedups.describe())
    return model


def is_checkpointing(model: torch.nn.Module) -> bool:
    """Whether activation checkpointing is on for the model's encoder layers."""
    return any(getattr(layer, "gradient_checkpointing", False) for layer in encoder_layers(model))


def is_compiled(module: torch.nn.Module) -> bool:
    """Whether `module.compile()` was called on it (compilation itself happens at its first call)."""
    return getattr(module, "_compiled_call_impl", None) is not None
