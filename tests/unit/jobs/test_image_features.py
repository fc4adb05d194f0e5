"""The vision encoder and the resumable image-features store (local, file://, s3://)."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from xstilts.jobs.multimodal.features import FeatureStoreMismatch, read_features, write_features
from xstilts.jobs.multimodal.vision import VisionEncoder
from xstilts.core.nodes import VisionEncoderConfig

TINY = {"hidden_size": 32, "image_size": 32, "patch_size": 8, "num_hidden_layers": 2,
        "num_attention_heads": 2, "intermediate_size": 64}
IDS = [f"img-{k:02d}" for k in range(10)]
CHUNK = 3  # 10 images -> 4 chunks, the last one short


def make_image(image_id: str) -> Image.Image:
    """A deterministic image of a size that varies, so the processor has to resize."""
    k = int(image_id.split("-")[1])
    pixels = np.random.default_rng(k).integers(0, 256, size=(24 + k, 40 - k, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def load_images(ids: Sequence[str]) -> Iterator[tuple[str, Image.Image]]:
    return ((i, make_image(i)) for i in ids)


class Counting:
    """An encoder that counts its `encode` calls (one per chunk written)."""

    def __init__(self, inner: VisionEncoder) -> None:
        self.inner = inner
        self.spec, self.dim, self.patches = inner.spec, inner.dim, inner.patches
        self.calls = 0

    def encode(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        return self.inner.encode(images)


@pytest.fixture(scope="module")
def encoder() -> VisionEncoder:
    return VisionEncoder.load(VisionEncoderConfig(tiny=TINY, seed=0))


@pytest.fixture(scope="module")
def expected(encoder: VisionEncoder) -> tuple[np.ndarray, np.ndarray]:
    return encoder.encode([make_image(i) for i in IDS])


def test_tiny_encoder_shapes_and_dtypes(encoder: VisionEncoder) -> None:
    assert (encoder.dim, encoder.patches) == (32, 16)  # (32 / 8)^2 patches, CLS excluded
    pooled, patches = encoder.encode([make_image(i) for i in IDS[:3]])
    assert pooled.shape == (3, 32) and pooled.dtype == np.float16
    assert patches.shape == (3, 16, 32) and patches.dtype == np.float16
    assert np.isfinite(pooled).all() and np.isfinite(patches).all()
    assert not np.array_equal(pooled[0], pooled[1])  # images differ, so do features
    empty_pooled, empty_patches = encoder.encode([])
    assert empty_pooled.shape == (0, 32) and empty_patches.shape == (0, 16, 32)


def test_encoding_is_deterministic_per_seed_and_batch_independent(encoder: VisionEncoder) -> None:
    images = [make_image(i) for i in IDS[:4]]
    again = VisionEncoder.load(VisionEncoderConfig(tiny=TINY, seed=0), batch_size=3)  # batches of 3 + 1
    for a, b in zip(encoder.encode(images), again.encode(images)):
        np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), atol=2e-3)
    other = VisionEncoder.load(VisionEncoderConfig(tiny=TINY, seed=1))
    assert not np.allclose(encoder.encode(images)[0], other.encode(images)[0])


def test_second_write_computes_nothing_and_reads_back(
    encoder: VisionEncoder, expected: tuple[np.ndarray, np.ndarray], tmp_path: Path,
) -> None:
    counting = Counting(encoder)
    url = str(tmp_path / "features.zarr")
    first = write_features(url, IDS, load_images, counting, chunk_size=CHUNK, progress=False)
    assert first == {"images": 10, "computed_chunks": 4, "reused_chunks": 0, "dim": 32, "patches": 16}
    assert counting.calls == 4
    second = write_features(f"file://{url}", IDS, load_images, counting, chunk_size=CHUNK, progress=False)
    assert (second["computed_chunks"], second["reused_chunks"], counting.calls) == (0, 4, 4)

    features = read_features(url)
    assert features.ids == IDS and features.index["img-07"] == 7
    assert features.pooled.dtype == np.float32
    np.testing.assert_array_equal(features.pooled, expected[0].astype(np.float32))
    rows = [7, 2, 7, 0]  # any order, repeats allowed, across chunks
    np.testing.assert_array_equal(features.patches(rows), expected[1][rows].astype(np.float32))
    assert features.patches([]).shape == (0, 16, 32)


def test_interrupted_write_resumes_with_the_remaining_chunks(
    encoder: VisionEncoder, expected: tuple[np.ndarray, np.ndarray], tmp_path: Path,
) -> None:
    url = str(tmp_path / "features.zarr")
    calls = {"n": 0}

    def dying_loader(ids: Sequence[str]) -> Iterator[tuple[str, Image.Image]]:
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt("killed while loading chunk 3")
        return load_images(ids)

    counting = Counting(encoder)
    with pytest.raises(KeyboardInterrupt):
        write_features(url, IDS, dying_loader, counting, chunk_size=CHUNK, progress=False)
    assert counting.calls == 2
    with pytest.raises(ValueError, match="incomplete: 2 of 4 chunks"):
        read_features(url)

    resumed = Counting(encoder)
    stats = write_features(url, IDS, load_images, resumed, chunk_size=CHUNK, progress=False)
    assert (stats["computed_chunks"], stats["reused_chunks"], resumed.calls) == (2, 2, 2)
    features = read_features(url)
    np.testing.assert_array_equal(features.pooled, expected[0].astype(np.float32))
    np.testing.assert_array_equal(features.patches(range(10)), expected[1].astype(np.float32))


def test_a_store_of_another_encoder_or_other_images_is_an_error(encoder: VisionEncoder, tmp_path: Path) -> None:
    url = str(tmp_path / "features.zarr")
    write_features(url, IDS[:4], load_images, encoder, chunk_size=CHUNK, progress=False)
    other = Counting(VisionEncoder.load(VisionEncoderConfig(tiny=TINY, seed=1)))
    with pytest.raises(FeatureStoreMismatch, match="encoder: stored"):
        write_features(url, IDS[:4], load_images, other, chunk_size=CHUNK, progress=False)
    with pytest.raises(FeatureStoreMismatch, match="image_ids differ"):
        write_features(url, IDS[4:8], load_images, encoder, chunk_size=CHUNK, progress=False)
    assert other.calls == 0


def test_loader_that_reorders_images_is_an_error(encoder: VisionEncoder, tmp_path: Path) -> None:
    def reversed_loader(ids: Sequence[str]) -> Iterator[tuple[str, Image.Image]]:
        return load_images(list(ids)[::-1])

    with pytest.raises(ValueError, match="not in the order"):
        write_features(str(tmp_path / "f.zarr"), IDS[:4], reversed_loader, encoder, chunk_size=CHUNK, progress=False)


def test_s3_round_trip(
    encoder: VisionEncoder, expected: tuple[np.ndarray, np.ndarray], s3_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in s3_env.items():
        monkeypatch.setenv(name, value)
    url = f"s3://xstilts-test/features-{uuid.uuid4().hex[:8]}/features.zarr"
    counting = Counting(encoder)
    assert write_features(url, IDS, load_images, counting, chunk_size=CHUNK, progress=False)["computed_chunks"] == 4
    assert write_features(url, IDS, load_images, counting, chunk_size=CHUNK, progress=False)["computed_chunks"] == 0
    assert counting.calls == 4
    features = read_features(url)
    assert features.ids == IDS
    np.testing.assert_array_equal(features.pooled, expected[0].astype(np.float32))
    np.testing.assert_array_equal(features.patches([9, 1]), expected[1][[9, 1]].astype(np.float32))


def test_named_model_offline_fails_fast_naming_it() -> None:
    if os.environ.get("HF_HUB_OFFLINE") != "1":
        pytest.skip("needs HF_HUB_OFFLINE=1 (set by conftest) to fail without retries")
    started = time.monotonic()
    with pytest.raises(OSError, match="vision model 'no-such-org/no-such-vision-model'.*HF_HUB_OFFLINE"):
        VisionEncoder.load(VisionEncoderConfig(name="no-such-org/no-such-vision-model"))
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("family", ["siglip", "vit"])
def test_named_model_from_a_local_directory(family: str, tmp_path: Path) -> None:
    """The named path with each tower family: SigLIP has no CLS token, ViT's CLS is pooled."""
    import transformers

    config_class, model_class, processor = {
        "siglip": (transformers.SiglipVisionConfig, transformers.SiglipVisionModel, "SiglipImageProcessor"),
        "vit": (transformers.ViTConfig, transformers.ViTModel, "ViTImageProcessor"),
    }[family]
    processor_class = getattr(transformers, processor + "Pil", None) or getattr(transformers, processor)
    model_class(config_class(**{**TINY, "num_hidden_layers": 1})).save_pretrained(tmp_path)
    processor_class(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    encoder = VisionEncoder.load(VisionEncoderConfig(name=str(tmp_path)))
    pooled, patches = encoder.encode([make_image(i) for i in IDS[:2]])
    assert (encoder.dim, encoder.patches) == (32, 16)
    assert pooled.shape == (2, 32) and patches.shape == (2, 16, 32) and patches.dtype == np.float16


def test_spec_needs_a_name_or_a_tiny_config() -> None:
    with pytest.raises(ValueError, match="exactly one of 'name'"):
        VisionEncoderConfig(seed=0)


def test_prepare_images_stage_writes_into_the_node_folder_and_resumes(tmp_path: Path) -> None:
    pytest.importorskip("xstilts.jobs.multimodal.captions")
    from xstilts.core.nodes import parse_node_record
    from xstilts.jobs.stages.base import StageContext
    from xstilts.jobs.stages.prepare_images import FEATURES_STORE, dataset_image_ids, run
    from xstilts.core.store import Store

    store = Store(str(tmp_path / "store"))
    node = parse_node_record({"stage": "prepare", "kind": "images", "task": "syn-shapes", "intermediate": None,
                              "seed": None, "key": "abc123", "inputs": {},
                              "config": {"dataset": "syn-shapes", "vision": {"tiny": TINY, "seed": 0},
                                         "chunk_size": 64}})
    ctx = StageContext(node=node, out_dir=tmp_path / "out", inputs={}, log=logging.getLogger("test"),
                       node_folder_url=store.url_of(store.node_path("prepare", "abc123")), store_url=store.url)
    first = run(ctx)
    ids = dataset_image_ids("syn-shapes", None)
    assert ids == sorted(ids) and first["images"] == len(ids) > 0
    assert first["store"] == FEATURES_STORE and first["computed_chunks"] == -(-len(ids) // 64)
    features = read_features(store.node_path("prepare", "abc123", FEATURES_STORE))
    assert features.ids == ids and features.pooled.shape == (len(ids), 32)
    assert run(ctx)["computed_chunks"] == 0


def test_a_job_log_says_how_far_the_encoding_is_with_an_eta(tmp_path: Path, encoder: VisionEncoder,
                                                            caplog: pytest.LogCaptureFixture,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """In a batch job (stderr is a file) the progress is plain log lines with the count,
    rate and ETA (`core.progress.job_progress`), here one per chunk, and a last one with
    the time taken; a resumed run counts from the chunks already done."""
    monkeypatch.setenv("XSTILTS_PROGRESS_EVERY", "0")
    url = str(tmp_path / "features")
    with caplog.at_level(logging.INFO, logger="xstilts.features"):
        write_features(url, IDS, load_images, encoder, chunk_size=CHUNK)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("image features:")]
    assert [line.split(",")[0] for line in lines] == ["image features: 3/10 img (30.0%)", "image features: 6/10 img (60.0%)",
                                                      "image features: 9/10 img (90.0%)", "image features: 10/10 img (100.0%)"]
    assert all(" img/s, ETA " in line for line in lines[:-1]) and " img/s, in " in lines[-1]
