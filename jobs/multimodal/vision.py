"""A frozen vision encoder that turns images into pooled and patch features.

Image-caption intermediate tasks never fine-tune the vision side: every image is encoded
once (stage `prepare/images`) and training reads the stored features. This module is
that encoder. The spec is a plain dict from the experiment spec:

    {"name": "openai/clip-vit-base-patch32"}      a CLIP / SigLIP vision tower or a ViT
    {"tiny": {...CLIPVisionConfig kwargs...}, "seed": 0}   a random CLIP tower (tests, demo)

A named model is loaded with `from_pretrained`, so it must be on the hub or in the local
cache (or be a local directory); offline and absent, loading fails at once with an error
naming the model rather than deep inside transformers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from xstilts.jobs.device import DeviceInfo, select_device
from xstilts.core.nodes import VisionEncoderConfig

if TYPE_CHECKING:
    from PIL.Image import Image
    from transformers import PretrainedConfig, PreTrainedModel
    from transformers.image_processing_utils import BaseImageProcessor

DEFAULT_BATCH_SIZE = 64
"""Images per forward pass inside `encode`: callers hand over whole store chunks, which
may be larger than what fits through a big model at once."""


@dataclass(frozen=True)
class _Family:
    """How one architecture family exposes its features."""

    model_class: str
    """transformers class of the vision tower."""
    prefix_tokens: int
    """Tokens before the patch tokens in `last_hidden_state` (CLIP/ViT: the CLS token)."""
    use_pooler: bool
    """Whether `pooler_output` is the pooled feature; otherwise the first token (CLS) is."""


# model_type (of the full model or of its vision config) -> family.
_FAMILIES: dict[str, _Family] = {
    "clip": _Family("CLIPVisionModel", 1, True),
    "clip_vision_model": _Family("CLIPVisionModel", 1, True),
    "siglip": _Family("SiglipVisionModel", 0, True),
    "siglip_vision_model": _Family("SiglipVisionModel", 0, True),
    # ViT checkpoints often ship without pooler weights (classification heads): a pooler
    # would be randomly initialized, so the tower is built without one and CLS is pooled.
    "vit": _Family("ViTModel", 1, False),
}


def canonical_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec as it round-trips through JSON (zarr attributes), so that a stored spec
    and a fresh one compare equal exactly when they describe the same encoder."""
    return json.loads(json.dumps(spec, sort_keys=True))


class VisionEncoder:
    """A frozen vision tower in eval mode: `encode(images) -> (pooled, patches)`."""

    def __init__(
        self, spec: dict[str, Any], model: PreTrainedModel, processor: BaseImageProcessor, family: _Family,
        patches: int, device: DeviceInfo, batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        self.spec = canonical_spec(spec)
        # As a torch module: transformers' `functools.wraps`-decorated `to` on
        # PreTrainedModel hides the signature of `Module.to` from the type checker.
        tower: torch.nn.Module = model
        self.model = tower.to(device.device).eval()
        self.processor = processor
        self.family = family
        self.device = device
        self.batch_size = batch_size
        self.dim: int = int(model.config.hidden_size)
        """D: width of the pooled and patch features."""
        self.patches: int = patches
        """P: patch tokens per image (CLS excluded)."""

    # -- construction --------------------------------------------------------------------
    @classmethod
    def load(cls, config: VisionEncoderConfig, batch_size: int = DEFAULT_BATCH_SIZE) -> VisionEncoder:
        """Build the encoder a prepare-images node's config describes (see the module
        docstring); the config validated that it names exactly one of a model or a tiny tower."""
        device = select_device()
        if config.tiny is not None:
            model, processor, family, patches = _tiny(dict(config.tiny), config.seed or 0)
        else:
            assert config.name is not None  # VisionEncoderConfig: exactly one of name and tiny
            model, processor, family, patches = _pretrained(config.name)
        return cls(config.as_json(), model, processor, family, patches, device, batch_size)

    # -- encoding ------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: Sequence[Image]) -> tuple[np.ndarray, np.ndarray]:
        """Pooled [n, D] and patch [n, P, D] features, float16 (what the store keeps)."""
        pooled = np.zeros((0, self.dim), dtype=np.float16)
        patches = np.zeros((0, self.patches, self.dim), dtype=np.float16)
        parts = [self._encode_batch(images[i:i + self.batch_size]) for i in range(0, len(images), self.batch_size)]
        if parts:
            pooled = np.concatenate([p for p, _ in parts])
            patches = np.concatenate([p for _, p in parts])
        return pooled, patches

    def _encode_batch(self, images: Sequence[Image]) -> tuple[np.ndarray, np.ndarray]:
        pixels = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
        with self.device.autocast():
            out = self.model(pixel_values=pixels.to(self.device.device))
        hidden = out.last_hidden_state
        pooled = out.pooler_output if self.family.use_pooler else hidden[:, 0]
        patches = hidden[:, self.family.prefix_tokens:]
        if patches.shape[1] != self.patches:
            raise RuntimeError(
                f"vision encoder {self.describe()} produced {patches.shape[1]} patch tokens, expected {self.patches}"
            )
        return _half(pooled), _half(patches)

    def describe(self) -> str:
        return self.spec["name"] if "name" in self.spec else f"tiny(seed={self.spec.get('seed', 0)})"


def _half(tensor: torch.Tensor) -> np.ndarray:
    """float16 numpy; through float32 because numpy has no bfloat16 (CUDA autocast)."""
    return tensor.detach().float().cpu().numpy().astype(np.float16)


def _patch_count(config: PretrainedConfig) -> int:
    return (int(config.image_size) // int(config.patch_size)) ** 2


def _tiny(kwargs: dict[str, Any], seed: int) -> tuple[PreTrainedModel, BaseImageProcessor, _Family, int]:
    """A random CLIP vision tower with a locally built processor: no hub, deterministic
    for a seed, and without touching the caller's global RNG state."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(**kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPVisionModel(config)
    size = config.image_size
    if not isinstance(size, int):
        raise ValueError(f"a tiny vision encoder has square images: image_size must be one integer, got {size!r}")
    processor = _clip_processor_class()(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return model, processor, _FAMILIES["clip_vision_model"], _patch_count(config)


def _clip_processor_class() -> type[BaseImageProcessor]:
    """The PIL CLIP processor where transformers has one (v5 otherwise wants torchvision
    and warns on every construction), else the classic class."""
    import transformers

    return getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor


def _pretrained(name: str) -> tuple[PreTrainedModel, BaseImageProcessor, _Family, int]:
    """A vision tower and its processor from the hub, the cache or a local directory."""
    import transformers
    from transformers import AutoConfig, AutoImageProcessor

    try:
        config = AutoConfig.from_pretrained(name)
        processor = AutoImageProcessor.from_pretrained(name)
    except OSError as exc:
        raise OSError(f"vision model '{name}' could not be loaded{_offline_hint()}: {exc}") from exc
    family = _FAMILIES.get(config.model_type)
    if family is None:
        raise ValueError(
            f"vision model '{name}' has model_type '{config.model_type}'; supported: {', '.join(sorted(_FAMILIES))}"
        )
    model_class = getattr(transformers, family.model_class)
    extra = {"add_pooling_layer": False} if family.model_class == "ViTModel" else {}
    try:
        model = model_class.from_pretrained(name, **extra)
    except OSError as exc:
        raise OSError(f"vision model '{name}': weights could not be loaded{_offline_hint()}: {exc}") from exc
    return model, processor, family, _patch_count(model.config)


def _offline_hint() -> str:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return " (HF_HUB_OFFLINE is set and it is not in the local cache: download it first or give a local directory)"
    return ""
