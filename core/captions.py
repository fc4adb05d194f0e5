"""The image-caption datasets: one registry, read by the task registry, the plan and
the loaders.

Torch-free facts only (names, descriptions, splits, where captions and images come
from); `xstilts.jobs.multimodal.captions` reads them to load the data, `core.tasks` makes
the caption tasks of every dataset, and the plan asks `is_generated` whether a dataset
is ever read from the spec's `data_dir`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

ImageSource = Literal["generated", "hub", "urls", "local"]


@dataclass(frozen=True)
class HubSource:
    """Where a caption dataset lives on the Hugging Face hub and how its rows look.

    `splits` maps our split to the hub split to read (several of ours may share one hub
    split, e.g. Flickr30k keeps all of them in "test" and tells them apart by a
    column). `columns` names the hub columns a row converter reads, by role:
    "captions" (a list), "caption" (one string), "image_id", "filename", "split".
    `row_format` names the converter in `_CONVERTERS`.
    """

    name: str
    config: str | None
    splits: Mapping[str, str]
    row_format: str
    columns: Mapping[str, str] = field(default_factory=dict)
    image_column: str | None = None
    """A column of decoded images (PIL), if the hub copy carries the pixels."""
    url_column: str | None = None
    """A column of image URLs, if that is all the hub copy has."""
    revision: str | None = None


@dataclass(frozen=True)
class CaptionDataset:
    """One image-caption dataset: where its captions and images come from."""

    name: str
    description: str
    splits: tuple[str, ...]
    languages: tuple[str, ...] = ("en",)
    hub: HubSource | None = None
    generator: str | None = None
    """Module that generates the dataset (`caption_rows(split)`, `render(image_id)`)."""
    images: ImageSource = "local"
    """Where images come from without data_dir: generated, a hub image column, URLs only
    (must be fetched into the local format), or nowhere but the local format."""


CAPTION_DATASETS: dict[str, CaptionDataset] = {
    "coco": CaptionDataset(
        name="coco",
        description="COCO Captions 2014, Karpathy splits (113k train incl. restval, 5k dev, 5k test; 5 captions)",
        splits=("train", "dev", "test"),
        hub=HubSource(
            name="yerevann/coco-karpathy", config=None,
            splits={"train": "train", "dev": "validation", "test": "test"},
            row_format="karpathy",
            columns={"captions": "sentences", "image_id": "cocoid", "split": "split"},
            url_column="url",
        ),
        images="urls",
    ),
    "flickr30k": CaptionDataset(
        name="flickr30k",
        description="Flickr30k, Karpathy splits (29k train, 1,014 dev, 1k test; 5 captions)",
        splits=("train", "dev", "test"),
        hub=HubSource(
            name="nlphuji/flickr30k", config=None,
            splits={"train": "test", "dev": "test", "test": "test"},
            row_format="karpathy",
            columns={"captions": "caption", "filename": "filename", "split": "split"},
            image_column="image",
        ),
        images="hub",
    ),
    "cc3m": CaptionDataset(
        name="cc3m",
        description="Conceptual Captions 3M (web alt-text; 3.3M train, 15.8k dev; 1 caption)",
        splits=("train", "dev"),
        hub=HubSource(
            name="google-research-datasets/conceptual_captions", config="unlabeled",
            splits={"train": "train", "dev": "validation"},
            row_format="one_caption",
            columns={"caption": "caption"},
            url_column="image_url",
        ),
        images="urls",
    ),
    "multi30k": CaptionDataset(
        name="multi30k",
        description="Multi30K task 1, English side (Flickr30k images; 29k train, 1,014 dev, 1k test; 1 caption)",
        splits=("train", "dev", "test"),
        hub=HubSource(
            name="bentrevett/multi30k", config=None,
            splits={"train": "train", "dev": "validation", "test": "test"},
            row_format="one_caption",
            columns={"caption": "en"},
        ),
        images="local",
    ),
    "syn-shapes": CaptionDataset(
        name="syn-shapes",
        description="generated 32x32 shapes with captions in the demo's synthetic English (~2000 train, ~300 dev)",
        splits=("train", "dev"),
        generator="xstilts.jobs.multimodal.shapes",
        images="generated",
    ),
}


def get_caption_dataset(dataset: str | CaptionDataset) -> CaptionDataset:
    """The registered dataset; ValueError listing the valid names for an unknown one."""
    if isinstance(dataset, CaptionDataset):
        return dataset
    try:
        return CAPTION_DATASETS[dataset]
    except KeyError:
        raise ValueError(
            f"unknown caption dataset '{dataset}'; valid: {', '.join(CAPTION_DATASETS)}"
        ) from None


def is_generated(dataset: str) -> bool:
    """Made by the project (no files, never read from `data_dir`)."""
    known = CAPTION_DATASETS.get(dataset)
    return known is not None and known.generator is not None
