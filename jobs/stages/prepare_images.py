"""Stage `prepare` (kind `images`): encode every image of a caption dataset once.

Config: `xstilts.core.nodes.PrepareImagesConfig`.
The images are those of the dataset's train and dev captions (sorted union of their
image ids, so the row order does not depend on the caption order). Unlike other stages
this one writes straight into its node folder in the store (`ctx.node_url("features.zarr")`) instead of
`ctx.out_dir`: encoding a real dataset is long, and a preempted or killed node must
resume chunk by chunk rather than start over from an empty scratch directory. The entry
still writes `result.json` and `DONE` after `run` returns, so downstream nodes only see
a complete store; they read it as `<input dir>/features.zarr`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from xstilts.core.nodes import PrepareImagesConfig
from xstilts.jobs.modeling import quiet_progress_bars
from xstilts.jobs.multimodal import captions
from xstilts.jobs.multimodal.features import write_features
from xstilts.jobs.multimodal.vision import VisionEncoder
from xstilts.jobs.stages.base import StageContext

if TYPE_CHECKING:
    from PIL.Image import Image

FEATURES_STORE = "features.zarr"
"""The store's name inside the node folder (and so inside a fetched input directory)."""

SPLITS = ("train", "dev")


def run(ctx: StageContext[PrepareImagesConfig]) -> dict[str, Any]:
    quiet_progress_bars()
    dataset = ctx.config.dataset
    data_dir = ctx.config.data_dir
    started = time.perf_counter()
    image_ids = dataset_image_ids(dataset, data_dir)
    encoder = VisionEncoder.load(ctx.config.vision)
    url = features_url(ctx)

    def load(ids: Sequence[str]) -> Iterator[tuple[str, Image]]:
        return captions.load_images(dataset, ids, data_dir)

    ctx.log.info("encoding %d images of %s with %s into %s", len(image_ids), dataset, encoder.describe(), url)
    stats = write_features(url, image_ids, load, encoder, chunk_size=ctx.config.chunk_size)
    ctx.log.info("image features of %s: %s in %.1fs", dataset, stats, time.perf_counter() - started)
    return {**stats, "dataset": dataset, "store": FEATURES_STORE}


def dataset_image_ids(dataset: str, data_dir: str | None) -> list[str]:
    """Sorted union of the image ids of the dataset's train and dev captions."""
    ids: set[str] = set()
    for split in SPLITS:
        ids.update(str(row["image_id"]) for row in captions.load_captions(dataset, split, data_dir))
    return sorted(ids)


def features_url(ctx: StageContext[PrepareImagesConfig]) -> str:
    """Where this node's features live: in its node folder in the store, so that a rerun
    finds the chunks already done; without a store (a stage run by hand), in out_dir."""
    return ctx.node_url(FEATURES_STORE) or str(ctx.out_dir / FEATURES_STORE)
