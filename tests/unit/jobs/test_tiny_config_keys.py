"""The tiny-config keys the spec accepts are real integer arguments of the transformers
configs they build (core keeps the lists, since it cannot import transformers)."""

from __future__ import annotations

import inspect

import transformers

from xstilts.core.spec import TINY_TEXT_CONFIG_KEYS, TINY_VISION_CONFIG_KEYS


def _integer_arguments(config_class: type) -> set[str]:
    config = config_class()
    names = set(inspect.signature(config_class.__init__).parameters) | set(config.to_dict())
    return {name for name in names if isinstance(getattr(config, name, None), int)}


def test_tiny_text_keys_are_xlm_roberta_config_integers() -> None:
    assert set(TINY_TEXT_CONFIG_KEYS) <= _integer_arguments(transformers.XLMRobertaConfig)


def test_tiny_vision_keys_are_clip_vision_config_integers() -> None:
    assert set(TINY_VISION_CONFIG_KEYS) <= _integer_arguments(transformers.CLIPVisionConfig)
