"""Image-caption datasets for the multimodal intermediate tasks: the loaders (the
registry of datasets is `xstilts.core.captions`).

Why one module: whatever a caption dataset looks like at its source (hub rows with one
image and five captions, hub rows with one caption and a URL, a local folder, or the
generated ``syn-shapes``), the rest of xstilts sees one schema:

* captions: rows ``{"id", "image_id", "caption"}``, one per caption, ``id`` unique per
  split (``f"{image_id}#{k}"``), in a deterministic order (the source's order);
* images: ``(image_id, RGB PIL image)`` pairs in the order of the ids asked for, so a
  caller can encode one chunk of ids at a time.

Splits are ``train`` and ``dev`` (and ``test`` where the source has one). Karpathy
splits: ``restval`` goes to ``train`` (the usual 113,287 COCO training images), ``val``
is ``dev``.

Sources (data_dir None). What was checked against the hub's dataset cards and public code
using them, and what is assumed (there is no network here, so nothing was loaded):

* ``coco`` -> ``yerevann/coco-karpathy`` (parquet). Verified: splits ``train`` /
  ``validation`` / ``test``; columns ``filepath, sentids, filename, imgid, sentences,
  cocoid, url``; ``sentences`` is a list of caption strings; ``url`` points at
  images.cocodataset.org. Assumed: the hub ``train`` split holds Karpathy ``train`` and
  ``restval`` (113k rows, told apart by the ``split`` column); copies that store
  ``sentences`` as ``{"raw": ...}`` structs are read too. No image column: images must
  come from the local format.
* ``flickr30k`` -> ``nlphuji/flickr30k``. Verified: one hub split ``test`` with all
  31,014 images; columns ``image`` (PIL), ``caption`` (list of 5), ``sentids``,
  ``split`` (Karpathy ``train``/``val``/``test``), ``img_id``, ``filename``
  ("1000092795.jpg"); image ids here are the file stem (the Flickr photo id). Assumed:
  the repository loads with the installed ``datasets`` (it began as a loading-script
  dataset; if it does not, use the local format).
* ``cc3m`` -> ``google-research-datasets/conceptual_captions``, config ``unlabeled``.
  Verified: splits ``train`` (3,318,333) / ``validation`` (15,840); columns
  ``image_url, caption``. No id column: image ids are ``<hub split>-<row:07d>``, the
  row numbers img2dataset also names its files by. Images are URLs only (many dead), so
  they must be fetched into the local format first.
* ``multi30k`` -> ``bentrevett/multi30k`` (English side). Verified: splits ``train``
  (29,000) / ``validation`` (1,014) / ``test`` (1,000); columns ``en, de``, no image
  reference at all. Image ids are ``<hub split>-<row:07d>``: row i is line i of
  Multi30K's ``image_splits/<split>.txt`` (a Flickr30k file name), which is how a
  local folder can be built; images come only from the local format.
* ``syn-shapes`` -> :mod:`xstilts.jobs.multimodal.shapes` (generated, no files).

Local format (``data_dir`` set; for offline clusters and for images the hub lacks)::

    <data_dir>/<dataset>/<split>.jsonl     one line per image:
        {"image_id": "...", "path": "images/xxx.jpg", "captions": ["...", ...]}
    <data_dir>/<dataset>/images/...        paths are relative to <data_dir>/<dataset>

Each caption becomes one canonical row ``{"id": f"{image_id}#{k}", ...}``.
``datasets`` is imported only when the hub is asked.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from PIL import Image

from xstilts.core.captions import CAPTION_DATASETS, CaptionDataset, HubSource, get_caption_dataset

__all__ = [
    "CAPTION_DATASETS", "CaptionDataset", "CaptionHubError", "HubSource", "get_caption_dataset",
    "hub_rows_to_captions", "load_captions", "load_images", "local_layout",
]

Row = dict[str, Any]


class CaptionHubError(RuntimeError):
    """The hub copy of a caption dataset could not be read (offline, missing, refused)."""


# --------------------------------------------------------------------------------------
# public API


def load_captions(dataset: str, split: str, data_dir: str | Path | None = None) -> list[dict]:
    """Canonical caption rows ``{"id", "image_id", "caption"}`` of one split.

    `data_dir=None` reads the hub (or the generator for syn-shapes); otherwise the local
    format under `data_dir` (see `local_layout`).
    """
    spec = get_caption_dataset(dataset)
    _check_split(spec, split)
    if data_dir is not None:
        return _local_captions(spec, split, Path(data_dir))
    if spec.generator is not None:
        return _generator(spec).caption_rows(split)
    assert spec.hub is not None, f"{spec.name}: neither hub nor generator"
    hub_split = spec.hub.splits[split]
    return hub_rows_to_captions(spec, split, _hub_rows(spec, hub_split), hub_split)


def load_images(
    dataset: str, image_ids: Sequence[str], data_dir: str | Path | None = None
) -> Iterator[tuple[str, Image.Image]]:
    """``(image_id, RGB image)`` in the order of `image_ids`.

    Checks (dataset known, images reachable, every id known) happen at call time, before
    the first image, so a misconfigured run fails before it starts encoding.
    """
    spec = get_caption_dataset(dataset)
    ids = list(image_ids)
    if data_dir is not None:
        return _local_images(spec, ids, Path(data_dir))
    if spec.images == "generated":
        generator = _generator(spec)
        for image_id in ids:  # validate every id up front (cheap: no rendering)
            generator.scene(image_id)
        return ((image_id, generator.render(image_id)) for image_id in ids)
    if spec.images == "hub":
        return _hub_images(spec, ids)
    raise ValueError(_no_hub_images_message(spec))


def local_layout(dataset: str | CaptionDataset) -> dict[str, str]:
    """The local files of a dataset, relative to data_dir: one jsonl per split and the
    images folder (the paths error messages name)."""
    spec = get_caption_dataset(dataset)
    layout = {split: f"{spec.name}/{split}.jsonl" for split in spec.splits}
    layout["images"] = f"{spec.name}/images/"
    return layout


def hub_rows_to_captions(
    dataset: str | CaptionDataset, split: str, rows: Iterable[Row], hub_split: str | None = None
) -> list[dict]:
    """Canonical caption rows of `split` from rows shaped like the hub dataset's.

    `hub_split` is the hub split the rows came from (default: the one `split` reads);
    rows whose own split column names another split are skipped (Flickr30k keeps every
    split in one hub split).
    """
    spec = get_caption_dataset(dataset)
    _check_split(spec, split)
    if spec.hub is None:
        raise ValueError(f"caption dataset '{spec.name}' has no hub copy")
    hub_split = hub_split or spec.hub.splits[split]
    convert = _CONVERTERS[spec.hub.row_format]
    images = (convert(row, index, hub_split, spec.hub) for index, row in enumerate(rows))
    return _canonical(image for image in images if image.split == split)


# --------------------------------------------------------------------------------------
# validation and shared helpers


def _check_split(spec: CaptionDataset, split: str) -> None:
    if split not in spec.splits:
        raise ValueError(f"caption dataset '{spec.name}' has no split '{split}'; valid splits: {', '.join(spec.splits)}")


def _generator(spec: CaptionDataset) -> Any:
    import importlib

    return importlib.import_module(spec.generator or "")


class CaptionedImage(NamedTuple):
    """One source image with its captions: what every converter and reader produces."""

    split: str
    image_id: str
    captions: list[str]


def _canonical(images: Iterable[CaptionedImage]) -> list[dict]:
    """One row per non-empty caption; `k` counts on across repeated image ids, so ids
    stay unique even where a source lists one image twice."""
    rows: list[dict] = []
    seen: dict[str, int] = {}
    for image in images:
        for caption in image.captions:
            text = " ".join(caption.split())
            if not text:
                continue
            k = seen.get(image.image_id, 0)
            seen[image.image_id] = k + 1
            rows.append({"id": f"{image.image_id}#{k}", "image_id": image.image_id, "caption": text})
    return rows


def _local_hint(spec: CaptionDataset) -> str:
    layout = local_layout(spec)
    files = ", ".join(f"<data_dir>/{path}" for key, path in layout.items() if key != "images")
    return (f"pass data_dir with the local format: {files} (one line per image: "
            '{"image_id": ..., "path": "images/...", "captions": [...]}) and the images under '
            f"<data_dir>/{layout['images']}")


# --------------------------------------------------------------------------------------
# hub rows -> captioned images (one converter per row shape)

_KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "dev", "validation": "dev", "dev": "dev",
                    "test": "test"}


def _our_split(source: HubSource, hub_split: str) -> str:
    """Our split read from `hub_split` (the first one, where several share it)."""
    for split, name in source.splits.items():
        if name == hub_split:
            return split
    raise ValueError(f"{source.name}: hub split '{hub_split}' serves none of {', '.join(source.splits)}")


def _caption_list(value: Any) -> list[str]:
    """Captions as strings: plain strings, or Karpathy-json structs {"raw": ..., "tokens": ...}."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping) and "raw" in value:  # a struct column of lists
        raw = value["raw"]
        return [raw] if isinstance(raw, str) else list(raw)
    return [item["raw"] if isinstance(item, Mapping) else str(item) for item in value or ()]


def _karpathy(row: Row, index: int, hub_split: str, source: HubSource) -> CaptionedImage:
    """COCO / Flickr30k rows: one image, several captions, a Karpathy split column."""
    columns = source.columns
    karpathy = row.get(columns.get("split", "split"))
    if karpathy is None:
        split = _our_split(source, hub_split)
    elif str(karpathy) in _KARPATHY_SPLITS:
        split = _KARPATHY_SPLITS[str(karpathy)]
    else:
        raise ValueError(f"{source.name} row {index}: unknown Karpathy split '{karpathy}'; "
                         f"known: {', '.join(_KARPATHY_SPLITS)}")
    if "image_id" in columns:
        image_id = str(row[columns["image_id"]])
    else:
        image_id = Path(str(row[columns["filename"]])).stem
    return CaptionedImage(split, image_id, _caption_list(row[columns["captions"]]))


def _one_caption(row: Row, index: int, hub_split: str, source: HubSource) -> CaptionedImage:
    """CC3M / Multi30K rows: one caption, no image id (the row number stands in)."""
    return CaptionedImage(_our_split(source, hub_split), f"{hub_split}-{index:07d}",
                          [str(row[source.columns["caption"]] or "")])


Converter = Callable[[Row, int, str, HubSource], CaptionedImage]
_CONVERTERS: dict[str, Converter] = {"karpathy": _karpathy, "one_caption": _one_caption}


# --------------------------------------------------------------------------------------
# the hub


def _hub_dataset(spec: CaptionDataset, hub_split: str) -> Any:
    """The hub split as a `datasets.Dataset`; failures name the dataset and the local
    format (with HF_HUB_OFFLINE=1 this fails in a second or two unless cached)."""
    assert spec.hub is not None
    from datasets import load_dataset

    source = spec.hub
    try:
        return load_dataset(source.name, source.config, split=hub_split, revision=source.revision)
    except Exception as error:
        raise CaptionHubError(
            f"caption dataset '{spec.name}': could not load {source.name}"
            f"{' (' + source.config + ')' if source.config else ''} split '{hub_split}' from the Hugging Face "
            f"hub ({type(error).__name__}: {error}). Offline, {_local_hint(spec)}"
        ) from error


def _hub_rows(spec: CaptionDataset, hub_split: str) -> Iterator[Row]:
    """Rows without the image column (decoding 31k JPEGs to read captions is waste)."""
    dataset = _hub_dataset(spec, hub_split)
    assert spec.hub is not None
    if spec.hub.image_column and spec.hub.image_column in dataset.column_names:
        dataset = dataset.remove_columns([spec.hub.image_column])
    return iter(dataset)


def _no_hub_images_message(spec: CaptionDataset) -> str:
    if spec.images == "urls":
        column = spec.hub.url_column if spec.hub else "url"
        why = (f"its hub copy has image URLs only (column '{column}'), which cannot be fetched offline and are "
               "too slow and too often dead to fetch one by one during a run; download them once "
               "(e.g. with img2dataset) into the local format")
    else:
        why = "its hub copy has no images at all (captions only); put the images in the local format"
    return f"caption dataset '{spec.name}': images are not on the hub: {why}. To load images, {_local_hint(spec)}"


def _hub_images(spec: CaptionDataset, ids: list[str]) -> Iterator[tuple[str, Image.Image]]:
    """Images from a hub image column, found via the converters' image ids."""
    assert spec.hub is not None and spec.hub.image_column is not None
    column = spec.hub.image_column
    position = _hub_image_index(spec.name)
    _check_known(spec, ids, position, f"the hub copy {spec.hub.name}")

    def image(image_id: str) -> Image.Image:
        dataset, index = position[image_id]
        return _rgb(dataset[index][column])

    return ((image_id, image(image_id)) for image_id in ids)


@functools.lru_cache(maxsize=2)
def _hub_image_index(name: str) -> dict[str, tuple[Any, int]]:
    """image_id -> (hub split dataset, row), over every hub split of the dataset.

    Cached: a caller encoding one chunk of ids at a time calls `load_images` once per
    chunk, and reading every row's captions again per chunk would dominate the run.
    """
    spec = CAPTION_DATASETS[name]
    assert spec.hub is not None and spec.hub.image_column is not None
    source = spec.hub
    position: dict[str, tuple[Any, int]] = {}
    for hub_split in dict.fromkeys(source.splits.values()):
        dataset = _hub_dataset(spec, hub_split)
        rows = dataset.remove_columns([source.image_column])
        for index, row in enumerate(rows):
            image_id = _CONVERTERS[source.row_format](row, index, hub_split, source).image_id
            position.setdefault(image_id, (dataset, index))
    return position


def _check_known(spec: CaptionDataset, ids: Sequence[str], known: Mapping[str, Any], where: str) -> None:
    missing = [image_id for image_id in ids if image_id not in known]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ValueError(f"caption dataset '{spec.name}': {len(missing)} image id(s) not in {where}: {shown}")


def _rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


# --------------------------------------------------------------------------------------
# the local format


def _local_entries(path: Path) -> list[tuple[int, Row]]:
    """(line number, entry) of one split file, each entry checked for the three keys."""
    entries: list[tuple[int, Row]] = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not JSON ({error})") from None
            problem = _entry_problem(entry)
            if problem:
                raise ValueError(f"{path}:{number}: {problem}; expected "
                                 '{"image_id": str, "path": str, "captions": [str, ...]}')
            entries.append((number, entry))
    return entries


def _entry_problem(entry: Any) -> str:
    if not isinstance(entry, dict):
        return "not a JSON object"
    if not isinstance(entry.get("image_id"), str) or not entry["image_id"]:
        return "'image_id' missing or not a string"
    if not isinstance(entry.get("path"), str) or not entry["path"]:
        return "'path' missing or not a string"
    captions = entry.get("captions")
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
        return "'captions' missing or not a list of strings"
    return ""


def _split_file(spec: CaptionDataset, split: str, root: Path) -> Path:
    path = root / spec.name / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"caption dataset '{spec.name}': no local {split} captions; expected {path} "
            f"(and images under {root / spec.name / 'images'})"
        )
    return path


def _local_captions(spec: CaptionDataset, split: str, root: Path) -> list[dict]:
    path = _split_file(spec, split, root)
    images: list[CaptionedImage] = []
    first_line: dict[str, int] = {}
    for number, entry in _local_entries(path):
        image_id = entry["image_id"]
        if image_id in first_line:
            raise ValueError(f"{path}:{number}: image_id '{image_id}' already on line {first_line[image_id]}; "
                             "one line per image, with all its captions")
        first_line[image_id] = number
        images.append(CaptionedImage(split, image_id, entry["captions"]))
    return _canonical(images)


def _local_index(spec: CaptionDataset, root: Path) -> dict[str, Path]:
    """image_id -> image file, over every split file present (ids may be asked for
    across splits: features are computed for train and dev together)."""
    folder = root / spec.name
    files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    if not files:
        expected = ", ".join(str(root / path) for key, path in local_layout(spec).items() if key != "images")
        raise FileNotFoundError(f"caption dataset '{spec.name}': no local split files; expected {expected} "
                                f"(and images under {folder / 'images'})")
    signature = tuple((str(path), path.stat().st_mtime_ns, path.stat().st_size) for path in files)
    return _read_local_index(folder, signature)


@functools.lru_cache(maxsize=4)
def _read_local_index(folder: Path, signature: tuple[tuple[str, int, int], ...]) -> dict[str, Path]:
    """The index of `_local_index`, cached per set of file versions (`signature`), so
    per-chunk calls of `load_images` do not re-read a 100k-line jsonl every time."""
    index: dict[str, Path] = {}
    for name, _, _ in signature:
        path = Path(name)
        for number, entry in _local_entries(path):
            image_path = folder / entry["path"]
            if index.setdefault(entry["image_id"], image_path) != image_path:
                raise ValueError(f"{path}:{number}: image_id '{entry['image_id']}' has path {entry['path']} here "
                                 f"but {index[entry['image_id']]} elsewhere")
    return index


def _local_images(spec: CaptionDataset, ids: list[str], root: Path) -> Iterator[tuple[str, Image.Image]]:
    index = _local_index(spec, root)
    _check_known(spec, ids, index, f"the split files under {root / spec.name}")
    absent = [str(index[image_id]) for image_id in ids if not index[image_id].is_file()]
    if absent:
        shown = ", ".join(absent[:5]) + (f" and {len(absent) - 5} more" if len(absent) > 5 else "")
        raise FileNotFoundError(f"caption dataset '{spec.name}': {len(absent)} image file(s) missing: {shown}")
    return ((image_id, _open_rgb(index[image_id])) for image_id in ids)


def _open_rgb(path: Path) -> Image.Image:
    """Decode fully and close the file (a lazily decoded image keeps it open)."""
    with Image.open(path) as image:
        return image.convert("RGB")  # a copy: it outlives the closed file
