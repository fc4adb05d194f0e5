"""The image-features store: every image of a caption dataset encoded once, in zarr v3.

Layout of the group (any fsspec URL: a plain path, file://, s3://):

    pooled     [N, D]    float16, chunks (C, D)
    patches    [N, P, D] float16, chunks (C, P, D)
    image_ids  [N]       str
    done       [N / C]   bool, chunks (1,): chunk k of pooled/patches is complete
    attrs      {"count": N, "dim": D, "patches": P, "chunk": C, "encoder": <vision spec>}

Why this shape: encoding a real dataset takes hours on a GPU node that may be preempted,
so the work is split into chunks of C images that are encoded, written and then marked
done, each mark being its own small object written after the chunk's data (a single PUT
on object stores, an atomic rename on local disks). A restarted writer skips the chunks
already marked and a reader can tell a complete store from a partial one. The attributes
are written last when the store is laid out, so their presence means the arrays and ids
exist; on a second run they must describe the same encoder and images, or the run fails
instead of mixing features of two encoders.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
import zarr
from zarr.storage import FsspecStore, LocalStore

from xstilts.core.progress import job_progress
from xstilts.jobs.multimodal.vision import canonical_spec

if TYPE_CHECKING:
    from PIL.Image import Image
    from zarr.abc.store import Store

log = logging.getLogger("xstilts.features")

LoadImages = Callable[[Sequence[str]], Iterator[tuple[str, "Image"]]]
"""Images for a list of ids, yielded as (id, image) in the order of the ids."""


class ImageEncoder(Protocol):
    """What the store needs of an encoder (`xstilts.jobs.multimodal.vision.VisionEncoder`)."""

    spec: dict[str, Any]
    dim: int
    patches: int

    def encode(self, images: Sequence[Image]) -> tuple[np.ndarray, np.ndarray]: ...


class FeatureStoreMismatch(ValueError):
    """An existing store was written for other images or by another encoder."""


# -- opening -------------------------------------------------------------------------------
def open_zarr_store(url: str, read_only: bool) -> Store:
    """A zarr store for a plain path, a file:// URL or any fsspec URL (s3://, gs://).

    Local paths use zarr's LocalStore (atomic writes by rename); everything else goes
    through fsspec, whose options come from the environment as for every other tool:
    botocore's AWS_* variables (AWS_ENDPOINT_URL for MinIO/moto) and fsspec's own
    FSSPEC_<PROTOCOL>_<OPTION> variables.
    """
    if "://" not in url:
        return LocalStore(url, read_only=read_only)
    if url.startswith("file://"):
        return LocalStore(url[len("file://"):], read_only=read_only)
    return FsspecStore.from_url(url, storage_options={}, read_only=read_only)


def _array(group: zarr.Group, name: str) -> zarr.Array:
    """One of the store's arrays (the layout above has no subgroups)."""
    return cast(zarr.Array, group[name])


def _values(group: zarr.Group, name: str) -> np.ndarray:
    """All values of one of the store's arrays."""
    return np.asarray(_array(group, name)[:])


def _attrs(group: zarr.Group) -> dict[str, Any]:
    """The store's attributes, as JSON values (see the layout above)."""
    return dict(group.attrs)


# -- writing -------------------------------------------------------------------------------
def write_features(
    url: str,
    image_ids: Sequence[str],
    load_images: LoadImages,
    encoder: ImageEncoder,
    chunk_size: int = 256,
    progress: bool = True,
) -> dict[str, Any]:
    """Encode every image into the store at `url`, resuming after the last done chunk.

    Returns {"images": N, "computed_chunks": k, "reused_chunks": m, "dim": D, "patches": P}.
    """
    ids = _checked_ids(image_ids)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    group = _open_layout(url, ids, encoder, chunk_size)
    chunk = int(_attrs(group)["chunk"])
    done = np.asarray(_values(group, "done"), dtype=bool)
    todo = [k for k in range(len(done)) if not done[k]]
    remaining = sum(len(_chunk_ids(ids, k, chunk)) for k in todo)
    with job_progress("image features", total=len(ids), completed=len(ids) - remaining, unit="img", log=log,
                      enabled=progress) as bar:
        for k in todo:
            bar.advance(_write_chunk(group, ids, k, chunk, load_images, encoder))
    log.info("features at %s: %d chunks computed, %d reused", url, len(todo), len(done) - len(todo))
    return {"images": len(ids), "computed_chunks": len(todo), "reused_chunks": len(done) - len(todo),
            "dim": encoder.dim, "patches": encoder.patches}


def _checked_ids(image_ids: Sequence[str]) -> list[str]:
    ids = [str(i) for i in image_ids]
    if not ids:
        raise ValueError("no image ids to encode")
    if len(set(ids)) != len(ids):
        raise ValueError(f"image ids are not unique ({len(ids) - len(set(ids))} duplicates)")
    return ids


def _chunk_ids(ids: list[str], k: int, chunk: int) -> list[str]:
    return ids[k * chunk:(k + 1) * chunk]


def _write_chunk(
    group: zarr.Group, ids: list[str], k: int, chunk: int, load_images: LoadImages, encoder: ImageEncoder,
) -> int:
    """Encode and write chunk k, then mark it done (data first: a mark means complete)."""
    chunk_ids = _chunk_ids(ids, k, chunk)
    pooled, patches = encoder.encode(_load_chunk(load_images, chunk_ids))
    expected = (len(chunk_ids), encoder.patches, encoder.dim)
    if pooled.shape != expected[::2] or patches.shape != expected:
        raise ValueError(f"encoder returned pooled {pooled.shape} and patches {patches.shape}, "
                         f"expected {expected[::2]} and {expected}")
    start = k * chunk
    _array(group, "pooled")[start:start + len(chunk_ids)] = pooled.astype(np.float16)
    _array(group, "patches")[start:start + len(chunk_ids)] = patches.astype(np.float16)
    _array(group, "done")[k] = True
    return len(chunk_ids)


def _load_chunk(load_images: LoadImages, chunk_ids: list[str]) -> list[Image]:
    """The images of one chunk, checked to be the ones asked for in that order: a loader
    that skips or reorders images would silently attach features to the wrong ids."""
    pairs = list(load_images(chunk_ids))
    got = [str(i) for i, _ in pairs]
    if got != chunk_ids:
        missing = sorted(set(chunk_ids) - set(got))[:5]
        raise ValueError(f"load_images returned {len(got)} images for {len(chunk_ids)} ids, not in the order "
                         f"asked (first missing: {missing})")
    return [image for _, image in pairs]


def _open_layout(url: str, ids: list[str], encoder: ImageEncoder, chunk_size: int) -> zarr.Group:
    """The store's group with its arrays: laid out on the first run, checked afterwards."""
    group = zarr.open_group(store=open_zarr_store(url, read_only=False), mode="a")
    layout = {"count": len(ids), "dim": int(encoder.dim), "patches": int(encoder.patches),
              "encoder": canonical_spec(encoder.spec)}
    if "count" not in group.attrs:  # new, or interrupted while being laid out
        _lay_out(group, ids, {**layout, "chunk": chunk_size})
        return group
    stored = _attrs(group)
    differ = [f"{key}: stored {stored.get(key)!r}, now {value!r}" for key, value in layout.items()
              if stored.get(key) != value]
    if not differ:
        stored_ids = [str(i) for i in _values(group, "image_ids")]
        if stored_ids != ids:
            first = next((i for i, (a, b) in enumerate(zip(stored_ids, ids)) if a != b), None)
            differ.append(f"image_ids differ (first difference at row {first})")
    if differ:
        raise FeatureStoreMismatch(
            f"features store {url} was written for other images or another encoder ({'; '.join(differ)}); "
            "remove it or write to another location"
        )
    if int(stored["chunk"]) != chunk_size:  # layout only: the values do not depend on it
        log.info("features at %s use chunk %s (asked %d): keeping the stored layout", url, stored["chunk"], chunk_size)
    return group


def _lay_out(group: zarr.Group, ids: list[str], attrs: dict[str, Any]) -> None:
    """Create the arrays (replacing any half-made ones) and write the attributes last."""
    n, dim, patches, chunk = len(ids), attrs["dim"], attrs["patches"], attrs["chunk"]
    chunks = -(-n // chunk)
    group.create_array("pooled", shape=(n, dim), chunks=(chunk, dim), dtype="float16", overwrite=True)
    group.create_array("patches", shape=(n, patches, dim), chunks=(chunk, patches, dim), dtype="float16",
                       overwrite=True)
    group.create_array("done", shape=(chunks,), chunks=(1,), dtype="bool", fill_value=False, overwrite=True)
    image_ids = group.create_array("image_ids", shape=(n,), chunks=(n,), dtype=str, overwrite=True)
    image_ids[:] = np.array(ids, dtype=object)
    group.attrs.update(attrs)


# -- reading -------------------------------------------------------------------------------
class ImageFeatures:
    """A complete features store: ids and pooled features in memory, patches on demand
    (they are P times larger and a batch needs only its own rows)."""

    def __init__(self, group: zarr.Group, url: str) -> None:
        attrs = _attrs(group)
        self.url = url
        self.count: int = int(attrs["count"])
        self.dim: int = int(attrs["dim"])
        self.num_patches: int = int(attrs["patches"])
        self.chunk: int = int(attrs["chunk"])
        self.encoder: dict[str, Any] = attrs["encoder"]
        self.ids: list[str] = [str(i) for i in _values(group, "image_ids")]
        self.index: dict[str, int] = {image_id: row for row, image_id in enumerate(self.ids)}
        self.pooled: np.ndarray = np.asarray(_values(group, "pooled"), dtype=np.float32)
        self._patches = _array(group, "patches")

    def __len__(self) -> int:
        return self.count

    def patches(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Patch features [len(rows), P, D] float32 of the given rows, in that order;
        only the chunks holding them are read."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size == 0:
            return np.zeros((0, self.num_patches, self.dim), dtype=np.float32)
        if rows.min() < 0 or rows.max() >= self.count:
            raise IndexError(f"rows out of range [0, {self.count}) in features store {self.url}")
        unique, inverse = np.unique(rows, return_inverse=True)
        data = self._patches.get_orthogonal_selection((unique, slice(None), slice(None)))
        return np.asarray(data, dtype=np.float32)[inverse.reshape(-1)]


def read_features(url: str) -> ImageFeatures:
    """Open a complete features store; a missing or partial one is an error naming it."""
    try:
        group = zarr.open_group(store=open_zarr_store(url, read_only=True), mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
        raise FileNotFoundError(f"no features store at {url}") from exc
    if "count" not in group.attrs:
        raise ValueError(f"features store {url} was never laid out (interrupted before its first chunk)")
    done = np.asarray(_values(group, "done"), dtype=bool)
    if not done.all():
        raise ValueError(f"features store {url} is incomplete: {int(done.sum())} of {done.size} chunks done; "
                         "run its prepare/images node again to finish it")
    return ImageFeatures(group, url)
