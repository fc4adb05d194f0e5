"""Caption datasets: the generated syn-shapes, the local format, hub rows and errors.

syn-shapes must be deterministic across processes, speak only the demo's synthetic
English, and describe what is actually drawn (read back from the pixels, not from the
generator's own scene). Hub loading cannot reach the network here, so the converters
are tested on hand-made rows shaped like each hub dataset's, and the hub path itself on
a small in-memory `datasets.Dataset` standing in for the download.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from xstilts.jobs import synthetic
from xstilts.jobs.multimodal import captions, shapes
from xstilts.jobs.multimodal.captions import (
    CAPTION_DATASETS, CaptionHubError, hub_rows_to_captions, load_captions, load_images,
)
from tests.support.paths import REPO

ALL_SHAPE_IDS = shapes.image_ids("train") + shapes.image_ids("dev")


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.uint8)


# --------------------------------------------------------------------------------------
# registry


def test_registry_has_the_five_datasets_with_english_train_and_dev() -> None:
    assert set(CAPTION_DATASETS) == {"coco", "flickr30k", "cc3m", "multi30k", "syn-shapes"}
    for name, spec in CAPTION_DATASETS.items():
        assert spec.name == name
        assert {"train", "dev"} <= set(spec.splits)
        assert spec.languages == ("en",)
        assert (spec.hub is None) != (spec.generator is None), name
        if spec.hub is not None:
            assert set(spec.hub.splits) == set(spec.splits)
            assert spec.hub.row_format in captions._CONVERTERS


# --------------------------------------------------------------------------------------
# syn-shapes


def _digest() -> str:
    """A digest of every caption row and image (what another process must reproduce)."""
    digest = hashlib.sha256()
    for split in ("train", "dev"):
        digest.update(json.dumps(shapes.caption_rows(split)).encode())
    for image_id in ALL_SHAPE_IDS[::7]:
        digest.update(shapes.render(image_id).tobytes())
    return digest.hexdigest()


def test_syn_shapes_is_deterministic_within_and_across_processes() -> None:
    first = shapes.caption_rows("train")
    shapes._rows.cache_clear()
    assert shapes.caption_rows("train") == first
    assert load_captions("syn-shapes", "train") == first
    first[0]["caption"] = "changed"  # callers may mutate their copy
    assert shapes.caption_rows("train")[0]["caption"] != "changed"
    assert shapes.render("shape-000042").tobytes() == shapes.render("shape-000042").tobytes()
    code = "from tests.unit.jobs.test_captions import _digest; print(_digest())"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert other.stdout.strip() == _digest()


def test_syn_shapes_sizes_ids_and_speed() -> None:
    started = time.perf_counter()
    shapes._rows.cache_clear()
    rows = {split: shapes.caption_rows(split) for split in ("train", "dev")}
    assert time.perf_counter() - started < 1.0
    assert 1800 <= len(rows["train"]) <= 2200
    assert 250 <= len(rows["dev"]) <= 350
    for split, split_rows in rows.items():
        ids = [row["id"] for row in split_rows]
        assert len(ids) == len(set(ids))
        per_image = Counter(row["image_id"] for row in split_rows)
        assert set(per_image) == set(shapes.image_ids(split))  # every image has captions
        assert set(per_image.values()) <= {1, 2, 3, 4, 5}
        for image_id in per_image:  # an image's captions are distinct paraphrases
            texts = [row["caption"] for row in split_rows if row["image_id"] == image_id]
            assert len(texts) == len(set(texts))
    assert not set(shapes.image_ids("train")) & set(shapes.image_ids("dev"))
    assert ALL_SHAPE_IDS[123] == "shape-000123"
    started = time.perf_counter()
    images = [shapes.render(image_id) for image_id in ALL_SHAPE_IDS]
    assert (time.perf_counter() - started) / len(images) < 1e-3
    assert {(image.mode, image.size) for image in images} == {("RGB", (32, 32))}
    assert len({image.tobytes() for image in images}) == len(images)  # distinct images per id


def test_syn_shapes_speaks_only_the_synthetic_english_lexicon() -> None:
    lemmas = synthetic._lexicon().lemmas
    english = {synthetic.word_form(lemma.index, "en"): lemma for lemma in lemmas}
    table = shapes.words()
    assert len(set(table.values())) == len(table)  # no two concepts share a word
    pos = {concept: english[word].pos for concept, word in table.items()}
    assert {pos[c] for c in shapes.COLOURS} == {"ADJ"} and {pos[c] for c in shapes.SIZES} == {"ADJ"}
    assert {pos[c] for c in (*shapes.SHAPES, *shapes.POSITIONS)} == {"NOUN"}
    assert {pos["on"], pos["in"]} == {"ADP"} and pos["a"] == pos["the"] == "DET"
    assert all(english[table[c]].polarity == 0 for c in (*shapes.COLOURS, *shapes.SIZES))
    used: set[str] = set()
    for split in ("train", "dev"):
        for row in shapes.caption_rows(split):
            tokens = row["caption"].split()
            assert tokens[-1] == synthetic.SENTENCE_END
            used.update(tokens[:-1])
    assert used <= set(english), used - set(english)
    assert used == set(table.values())  # every concept word is exercised


def _regions(pixels: np.ndarray) -> dict[str, np.ndarray]:
    """Palette colour name -> boolean mask of its pixels (the grey background matches none)."""
    regions = {name: np.all(pixels == np.array(rgb, dtype=np.uint8), axis=2) for name, rgb in shapes.COLOURS.items()}
    return {name: mask for name, mask in regions.items() if mask.any()}


def _side(mask: np.ndarray) -> str:
    ys, xs = np.nonzero(mask)
    x, y = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2  # box centre: a triangle's mass sits low
    if x < 13:
        return "left"
    if x > 19:
        return "right"
    if y < 13:
        return "top"
    return "bottom" if y > 19 else "middle"


def test_syn_shapes_captions_describe_the_pixels() -> None:
    concept_of = {word: concept for concept, word in shapes.words().items()}
    checked_sides = checked_sizes = 0
    for split in ("train", "dev"):
        for row in shapes.caption_rows(split):
            pixels = _pixels(shapes.render(row["image_id"]))
            regions = _regions(pixels)
            assert 1 <= len(regions) <= 2
            background = pixels[~np.any(np.stack(list(regions.values())), axis=0)]
            assert np.all(background[:, 0] == background[:, 1])  # grey, so never a palette colour
            said = [concept_of[word] for word in row["caption"].split()[:-1]]
            colours = [c for c in said if c in shapes.COLOURS]
            assert colours and set(colours) <= set(regions), (row, sorted(regions))
            if len(regions) == 1:
                assert colours == list(regions)
            if len(colours) != 1:
                continue  # two objects: which size / side goes with which needs parsing
            mask = regions[colours[0]]
            sides = [c for c in said if c in shapes.POSITIONS]
            sizes = [c for c in said if c in shapes.SIZES]
            if sides:
                assert sides == [_side(mask)], row
                checked_sides += 1
            if sizes:
                assert sizes == ["big" if mask.sum() > 55 else "small"], row
                checked_sizes += 1
    assert checked_sides > 1000 and checked_sizes > 1000


def test_syn_shapes_images_through_load_images() -> None:
    wanted = ["shape-000530", "shape-000007", "shape-000530"]
    loaded = list(load_images("syn-shapes", wanted))
    assert [image_id for image_id, _ in loaded] == wanted
    for image_id, image in loaded:
        assert image.tobytes() == shapes.render(image_id).tobytes()
    with pytest.raises(ValueError, match="no image 'shape-999999'"):
        load_images("syn-shapes", ["shape-000001", "shape-999999"])  # before any image


def test_unknown_dataset_and_split_list_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown caption dataset 'cocoo'; valid: coco, flickr30k, cc3m, multi30k, syn-shapes"):
        load_captions("cocoo", "train")
    with pytest.raises(ValueError, match="unknown caption dataset"):
        load_images("mscoco", ["1"])
    with pytest.raises(ValueError, match="has no split 'validation'; valid splits: train, dev"):
        load_captions("syn-shapes", "validation")
    with pytest.raises(ValueError, match="valid splits: train, dev$"):
        load_captions("cc3m", "test")


# --------------------------------------------------------------------------------------
# local format


def _write_local(root: Path, dataset: str, splits: dict[str, list[dict[str, Any]]]) -> None:
    for split, entries in splits.items():
        folder = root / dataset
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / f"{split}.jsonl").open("w", encoding="utf-8") as out:
            for entry in entries:
                out.write(json.dumps(entry) + "\n")
            out.write("\n")  # blank lines are ignored


@pytest.fixture
def local_root(tmp_path: Path) -> Path:
    images = tmp_path / "flickr30k" / "images"
    images.mkdir(parents=True)
    Image.new("RGB", (8, 6), (255, 0, 0)).save(images / "a.png")
    Image.new("L", (5, 5), 77).save(images / "b.png")  # greyscale: comes back as RGB
    Image.new("RGBA", (4, 4), (0, 0, 255, 128)).save(images / "c.png")
    _write_local(tmp_path, "flickr30k", {
        "train": [
            {"image_id": "a", "path": "images/a.png", "captions": ["A red  image .", "all red"]},
            {"image_id": "b", "path": "images/b.png", "captions": ["grey", "  "]},  # blank caption dropped
        ],
        "dev": [{"image_id": "c", "path": "images/c.png", "captions": ["blue"]}],
    })
    return tmp_path


def test_local_format_round_trip(local_root: Path) -> None:
    assert load_captions("flickr30k", "train", data_dir=str(local_root)) == [
        {"id": "a#0", "image_id": "a", "caption": "A red image ."},
        {"id": "a#1", "image_id": "a", "caption": "all red"},
        {"id": "b#0", "image_id": "b", "caption": "grey"},
    ]
    assert load_captions("flickr30k", "dev", data_dir=local_root) == [{"id": "c#0", "image_id": "c", "caption": "blue"}]
    loaded = list(load_images("flickr30k", ["c", "a", "b"], data_dir=local_root))  # across splits, in asked order
    assert [image_id for image_id, _ in loaded] == ["c", "a", "b"]
    images = dict(loaded)
    assert all(image.mode == "RGB" for image in images.values())
    assert images["a"].size == (8, 6) and _pixels(images["a"])[0, 0].tolist() == [255, 0, 0]
    assert _pixels(images["b"])[2, 2].tolist() == [77, 77, 77]
    assert _pixels(images["c"])[0, 0].tolist()[2] == 255
    _write_local(local_root, "flickr30k", {"dev": [{"image_id": "d", "path": "images/c.png", "captions": ["x"]}]})
    assert [image_id for image_id, _ in load_images("flickr30k", ["d"], data_dir=local_root)] == ["d"]


def test_local_format_syn_shapes_export_round_trip(tmp_path: Path) -> None:
    """syn-shapes written to the local format reads back identically (the offline path)."""
    rows = shapes.caption_rows("dev")
    by_image: dict[str, list[str]] = {}
    for row in rows:
        by_image.setdefault(row["image_id"], []).append(row["caption"])
    (tmp_path / "syn-shapes" / "images").mkdir(parents=True)
    entries = []
    for image_id, texts in by_image.items():
        shapes.render(image_id).save(tmp_path / "syn-shapes" / "images" / f"{image_id}.png")
        entries.append({"image_id": image_id, "path": f"images/{image_id}.png", "captions": texts})
    _write_local(tmp_path, "syn-shapes", {"dev": entries})
    assert load_captions("syn-shapes", "dev", data_dir=tmp_path) == rows
    ids = list(by_image)[:5]
    for (image_id, image), expected in zip(load_images("syn-shapes", ids, data_dir=tmp_path), ids):
        assert image_id == expected and image.tobytes() == shapes.render(expected).tobytes()


def test_local_format_errors_name_the_paths(local_root: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(local_root / "flickr30k" / "test.jsonl")):
        load_captions("flickr30k", "test", data_dir=local_root)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere" / "coco" / "train.jsonl")):
        load_images("coco", ["1"], data_dir=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="1 image id.* not in the split files.*: zzz"):
        load_images("flickr30k", ["a", "zzz"], data_dir=local_root)
    (local_root / "flickr30k" / "images" / "b.png").unlink()
    with pytest.raises(FileNotFoundError, match="missing: .*images/b.png"):
        load_images("flickr30k", ["a", "b"], data_dir=local_root)


@pytest.mark.parametrize(("line", "problem"), [
    ('{"image_id": "x", "path": "images/x.png", "captions": "one"}', "'captions' missing or not a list"),
    ('{"path": "images/x.png", "captions": ["one"]}', "'image_id' missing"),
    ("not json", "not JSON"),
])
def test_local_format_rejects_malformed_lines(tmp_path: Path, line: str, problem: str) -> None:
    (tmp_path / "coco").mkdir()
    (tmp_path / "coco" / "train.jsonl").write_text('{"image_id": "ok", "path": "p", "captions": []}\n' + line + "\n")
    with pytest.raises(ValueError, match=f"train.jsonl:2: {problem}"):
        load_captions("coco", "train", data_dir=tmp_path)


def test_local_format_rejects_an_image_listed_twice(tmp_path: Path) -> None:
    entry = {"image_id": "x", "path": "images/x.png", "captions": ["one"]}
    _write_local(tmp_path, "coco", {"dev": [entry, entry]})
    with pytest.raises(ValueError, match="dev.jsonl:2: image_id 'x' already on line 1"):
        load_captions("coco", "dev", data_dir=tmp_path)


# --------------------------------------------------------------------------------------
# the hub: offline errors, converters on hub-shaped rows


def test_offline_hub_fails_fast_with_the_local_format_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(CaptionHubError) as error:
        load_captions("coco", "dev")
    assert time.perf_counter() - started < 20
    message = str(error.value)
    assert "'coco'" in message and "yerevann/coco-karpathy" in message and "'validation'" in message
    assert "data_dir" in message and "<data_dir>/coco/dev.jsonl" in message and "<data_dir>/coco/images/" in message
    with pytest.raises(CaptionHubError, match="nlphuji/flickr30k.*data_dir"):
        load_images("flickr30k", ["1000092795"])


@pytest.mark.parametrize(("dataset", "needle"), [
    ("coco", "image URLs only \\(column 'url'\\)"),
    ("cc3m", "image URLs only \\(column 'image_url'\\)"),
    ("multi30k", "no images at all"),
])
def test_datasets_without_hub_images_point_to_the_local_format(dataset: str, needle: str) -> None:
    with pytest.raises(ValueError, match=f"{needle}.*<data_dir>/{dataset}/train.jsonl.*<data_dir>/{dataset}/images/"):
        load_images(dataset, ["x"])


def _coco_row(cocoid: int, split: str, sentences: Any) -> dict[str, Any]:
    """Shaped like yerevann/coco-karpathy."""
    return {"filepath": "val2014", "sentids": [1, 2], "filename": f"COCO_val2014_{cocoid:012d}.jpg", "imgid": 7,
            "split": split, "sentences": sentences, "cocoid": cocoid,
            "url": f"http://images.cocodataset.org/val2014/COCO_val2014_{cocoid:012d}.jpg"}


def test_coco_karpathy_rows() -> None:
    rows = [
        _coco_row(391895, "train", ["A man with a red helmet .", "a bike"]),
        _coco_row(522418, "restval", ["A woman cutting a cake."]),  # restval trains
        _coco_row(184613, "val", ["stray"]),  # not train: skipped
        _coco_row(60623, "restval", [{"raw": " Struct  style ", "tokens": ["struct", "style"]}]),
    ]
    assert hub_rows_to_captions("coco", "train", rows) == [
        {"id": "391895#0", "image_id": "391895", "caption": "A man with a red helmet ."},
        {"id": "391895#1", "image_id": "391895", "caption": "a bike"},
        {"id": "522418#0", "image_id": "522418", "caption": "A woman cutting a cake."},
        {"id": "60623#0", "image_id": "60623", "caption": "Struct style"},
    ]
    dev = hub_rows_to_captions("coco", "dev", [_coco_row(184613, "val", ["x", "y"])], hub_split="validation")
    assert [row["id"] for row in dev] == ["184613#0", "184613#1"]
    with pytest.raises(ValueError, match="unknown Karpathy split 'holdout'"):
        hub_rows_to_captions("coco", "train", [_coco_row(1, "holdout", ["x"])])


def _flickr_rows() -> list[dict[str, Any]]:
    """Shaped like nlphuji/flickr30k (every Karpathy split in the one hub split 'test')."""
    return [
        {"image": None, "caption": ["Two dogs play .", "dogs"], "sentids": ["0", "1"], "split": "train",
         "img_id": "0", "filename": "1000092795.jpg"},
        {"image": None, "caption": ["A girl ."], "sentids": ["5"], "split": "val", "img_id": "1",
         "filename": "10002456.jpg"},
        {"image": None, "caption": ["A car ."], "sentids": ["9"], "split": "test", "img_id": "2",
         "filename": "1000268201.jpg"},
    ]


def test_flickr30k_rows_split_by_their_karpathy_column() -> None:
    assert hub_rows_to_captions("flickr30k", "dev", _flickr_rows()) == [
        {"id": "10002456#0", "image_id": "10002456", "caption": "A girl ."},
    ]
    assert [row["id"] for row in hub_rows_to_captions("flickr30k", "train", _flickr_rows())] == [
        "1000092795#0", "1000092795#1"]


def test_one_caption_rows_of_cc3m_and_multi30k() -> None:
    cc3m = [{"image_url": "http://a/1.jpg", "caption": "actor attends the premiere"},
            {"image_url": "http://a/2.jpg", "caption": "a view of the lake"}]
    assert hub_rows_to_captions("cc3m", "dev", cc3m) == [
        {"id": "validation-0000000#0", "image_id": "validation-0000000", "caption": "actor attends the premiere"},
        {"id": "validation-0000001#0", "image_id": "validation-0000001", "caption": "a view of the lake"},
    ]
    multi30k = [{"en": "Two young guys are outside.", "de": "Zwei junge Männer sind im Freien."}]
    assert hub_rows_to_captions("multi30k", "train", multi30k) == [
        {"id": "train-0000000#0", "image_id": "train-0000000", "caption": "Two young guys are outside."},
    ]


def test_repeated_images_keep_caption_ids_unique() -> None:
    rows = [_coco_row(5, "train", ["a", "b"]), _coco_row(5, "train", ["c"])]
    assert [row["id"] for row in hub_rows_to_captions("coco", "train", rows)] == ["5#0", "5#1", "5#2"]


def test_hub_captions_and_images_through_a_stand_in_dataset(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """The hub path end to end on an in-memory `datasets.Dataset` shaped like
    nlphuji/flickr30k (the download itself needs the network)."""
    import datasets

    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    rows = _flickr_rows()
    table = {key: [row[key] for row in rows] for key in rows[0]}
    table["image"] = [Image.new("RGB", (4, 4), colour) for colour in colours]
    features = datasets.Features({
        "image": datasets.Image(), "caption": datasets.Sequence(datasets.Value("string")),
        "sentids": datasets.Sequence(datasets.Value("string")), "split": datasets.Value("string"),
        "img_id": datasets.Value("string"), "filename": datasets.Value("string"),
    })
    stand_in = datasets.Dataset.from_dict(table, features=features)
    asked: list[str] = []

    def fake_hub_dataset(spec: Any, hub_split: str) -> Any:
        asked.append(f"{spec.hub.name}:{hub_split}")
        return stand_in

    monkeypatch.setattr(captions, "_hub_dataset", fake_hub_dataset)
    captions._hub_image_index.cache_clear()
    request.addfinalizer(captions._hub_image_index.cache_clear)  # the stand-in must not outlive the test
    assert load_captions("flickr30k", "test") == [{"id": "1000268201#0", "image_id": "1000268201", "caption": "A car ."}]
    loaded = list(load_images("flickr30k", ["1000268201", "1000092795"]))
    assert [image_id for image_id, _ in loaded] == ["1000268201", "1000092795"]
    assert [_pixels(image)[0, 0].tolist() for _, image in loaded] == [[0, 0, 255], [255, 0, 0]]
    assert set(asked) == {"nlphuji/flickr30k:test"}
    with pytest.raises(ValueError, match="not in the hub copy nlphuji/flickr30k: 42"):
        load_images("flickr30k", ["42"])
    assert asked.count("nlphuji/flickr30k:test") == 2  # captions once, the image index once (cached)
