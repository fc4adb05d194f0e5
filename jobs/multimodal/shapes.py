"""``syn-shapes``: a generated image-caption dataset in the demo's synthetic English.

Why: the demo must exercise the multimodal intermediate tasks (image-text matching,
contrastive, masked caption modelling) offline, on 2 CPUs, in seconds. Real caption
sets are gigabytes and their English shares no vocabulary with the demo's synthetic
languages, so an intermediate task trained on them could not help the synthetic targets.
Here every caption word is a word of :mod:`xstilts.jobs.synthetic`'s English lexicon (colours and
sizes are neutral adjectives, shapes and sides are nouns, positions are prepositional
phrases, joined by a determiner, a conjunction and one verb), in the lexicon's own
``DET ADJ* NOUN`` order, so caption training touches exactly the words that the demo's
tasks and the cross-lingual re-spellings are about.

Each image is a 32x32 RGB picture on a plain (faintly grainy) grey background with one object (a shape of
a colour and a size at one of five positions) and sometimes a second, small object on the
opposite side. Captions (1-5 per image) paraphrase the scene with several templates; some
mention only the main object, as human captions leave out details. Colours are exact
palette RGB values, so a test can read the scene back from the pixels.

Determinism: every random stream is seeded by a CRC32 of a descriptive string (as in
:mod:`xstilts.jobs.synthetic`); images are rendered on demand from their id alone (< 1 ms each),
captions of all splits are generated in well under a second. Torch-free.

Public API: :func:`caption_rows`, :func:`render`, :func:`image_ids`, :func:`scene` (what an
image shows) and :func:`words` (concept -> pseudo-word table).
"""

from __future__ import annotations

import bisect
import random
import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image
from xstilts.core.rng import stable_rng, stable_seed

__all__ = [
    "BACKGROUND_GRAIN", "BACKGROUND_RANGE", "COLOURS", "IMAGE_SIZE", "POSITIONS", "SHAPES", "SIZES", "SPLIT_IMAGES",
    "Obj", "Scene", "caption_rows", "image_ids", "render", "scene", "words",
]

IMAGE_SIZE = 32

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
    "black": (20, 20, 20),
}
"""Palette; none of them is grey, so no object can vanish into the background."""

SHAPES: tuple[str, ...] = ("square", "circle", "triangle", "cross", "diamond")
SIZES: dict[str, int] = {"small": 4, "big": 7}
"""Size word -> half-width in pixels."""

POSITIONS: dict[str, tuple[int, int]] = {
    "left": (9, 16), "right": (23, 16), "top": (16, 9), "bottom": (16, 23), "middle": (16, 16),
}
"""Position word -> (x, y) centre before a jitter of +-1 pixel. With the jitter, a big
object on one side and a small one on the opposite side never touch (9+1+7 < 23-1-4)."""

_OPPOSITE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}
BACKGROUND_RANGE = (190, 245)
"""Grey levels of the plain background (inclusive), drawn per image."""
BACKGROUND_GRAIN = 4

SPLIT_IMAGES: dict[str, int] = {"train": 520, "dev": 80}
"""Images per split; ids are consecutive, train first (train ~2000 captions, dev ~300)."""

_SECOND_OBJECT_RATE = 0.35
_MENTION_SECOND_RATE = 0.7
_CAPTION_COUNTS = (1, 2, 3, 4, 5)
_CAPTION_COUNT_CUM = (0.05, 0.15, 0.35, 0.65, 1.0)  # mean 3.8 captions per image
_ID_PATTERN = re.compile(r"shape-(\d{6})")




# --------------------------------------------------------------------------------------
# Vocabulary: concepts -> words of the synthetic English lexicon
# --------------------------------------------------------------------------------------

# (concepts, lexicon sampling pool). Colours and sizes take *neutral* adjectives (ADJ0) so
# captions carry no polarity that could leak into the sentiment target; positions are
# prepositional phrases "ADP the SIDE-NOUN". Pools are in frequency-rank order, so these
# are frequent words that the demo's tasks see often.
_VOCABULARY_PLAN: tuple[tuple[tuple[str, ...], str], ...] = (
    (("a", "the"), "DET"),
    (("on", "in"), "ADP"),
    (("and",), "CONJ"),
    (("is",), "VERB"),
    ((*COLOURS, *SIZES), "ADJ0"),
    ((*SHAPES, *POSITIONS), "NOUN"),
)


@lru_cache(maxsize=1)
def words() -> dict[str, str]:
    """Concept (e.g. "red", "circle", "left", "the") -> its English pseudo-word.

    Each concept takes the next lemma of its pool whose spelling no other lemma shares:
    a homograph (noun/verb, adjective/adverb) would make a caption word ambiguous.
    """
    from xstilts.jobs.synthetic import unambiguous_lemmas, word_form

    table: dict[str, str] = {}
    for concepts, pool in _VOCABULARY_PLAN:
        unambiguous = unambiguous_lemmas(pool)
        if len(unambiguous) < len(concepts):
            raise RuntimeError(f"lexicon pool {pool} has too few unambiguous lemmas for {concepts}")
        for concept, lemma_index in zip(concepts, unambiguous):
            table[concept] = word_form(lemma_index, "en")
    return table


# --------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Obj:
    """One drawn object; `position` is the nominal one, (`x`, `y`) the jittered centre."""

    shape: str
    colour: str
    size: str
    position: str
    x: int
    y: int


@dataclass(frozen=True)
class Scene:
    """What one image shows: the main object first, then the optional second one."""

    background: int
    objects: tuple[Obj, ...]


def image_ids(split: str) -> list[str]:
    """Image ids of `split` ("shape-000000", ...): train first, then dev."""
    _check_split(split)
    start = 0
    for name, count in SPLIT_IMAGES.items():
        if name == split:
            return [_image_id(index) for index in range(start, start + count)]
        start += count
    raise AssertionError("unreachable: _check_split passed")


def _image_id(index: int) -> str:
    return f"shape-{index:06d}"


def _check_split(split: str) -> None:
    if split not in SPLIT_IMAGES:
        raise ValueError(f"syn-shapes has no split '{split}'; valid splits: {', '.join(SPLIT_IMAGES)}")


def _index(image_id: str) -> int:
    """The image number of a well-formed id within the generated range."""
    match = _ID_PATTERN.fullmatch(image_id)
    total = sum(SPLIT_IMAGES.values())
    if match is None or int(match.group(1)) >= total:
        raise ValueError(f"syn-shapes has no image '{image_id}'; ids are shape-000000 .. {_image_id(total - 1)}")
    return int(match.group(1))


def scene(image_id: str) -> Scene:
    """The scene of an image, drawn from a stream seeded by its number alone (so images
    render on demand in any order and any process)."""
    rng = stable_rng("syn-shapes", "scene", _index(image_id))
    background = rng.randint(*BACKGROUND_RANGE)
    position = rng.choice(tuple(POSITIONS))
    main = _object(rng, position, rng.choice(tuple(SIZES)), rng.choice(tuple(COLOURS)))
    objects: tuple[Obj, ...] = (main,)
    if position in _OPPOSITE and rng.random() < _SECOND_OBJECT_RATE:
        colour = rng.choice(tuple(c for c in COLOURS if c != main.colour))
        objects += (_object(rng, _OPPOSITE[position], "small", colour),)
    return Scene(background, objects)


def _object(rng: random.Random, position: str, size: str, colour: str) -> Obj:
    x, y = POSITIONS[position]
    return Obj(rng.choice(SHAPES), colour, size, position, x + rng.randint(-1, 1), y + rng.randint(-1, 1))


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------

_YS, _XS = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE]


def _mask(obj: Obj) -> np.ndarray:
    """Boolean pixel mask of one object (pure numpy: a few microseconds)."""
    r = SIZES[obj.size]
    dx, dy = np.abs(_XS - obj.x), _YS - obj.y
    if obj.shape == "square":
        return (dx <= r - 1) & (np.abs(dy) <= r - 1)
    if obj.shape == "circle":
        return dx * dx + dy * dy <= r * r
    if obj.shape == "triangle":  # apex up, base at the bottom
        return (dy >= -r) & (dy <= r) & (2 * dx <= dy + r)
    if obj.shape == "cross":
        arm = max(1, r // 3)
        return ((dx <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (dx <= r))
    if obj.shape == "diamond":
        return dx + np.abs(dy) <= r
    raise ValueError(f"unknown shape {obj.shape!r}; valid: {', '.join(SHAPES)}")


def _background(image_id: str, level: int) -> np.ndarray:
    """A grey background with faint grain (+-`BACKGROUND_GRAIN` per pixel, equal in the
    three channels so it stays grey). The grain makes every image distinct even where
    two scenes and their jitter coincide, so no two ids share pixels (a contrastive batch
    would otherwise hold exact duplicate images with different captions)."""
    grain = np.random.default_rng(stable_seed("syn-shapes", "grain", image_id))
    grey = level + grain.integers(-BACKGROUND_GRAIN, BACKGROUND_GRAIN + 1, size=(IMAGE_SIZE, IMAGE_SIZE))
    return np.repeat(grey.astype(np.uint8)[:, :, None], 3, axis=2)


def render(image_id: str) -> Image.Image:
    """The 32x32 RGB image of `image_id` (deterministic, < 1 ms)."""
    drawn = scene(image_id)
    pixels = _background(image_id, drawn.background)
    for obj in drawn.objects:
        pixels[_mask(obj)] = COLOURS[obj.colour]
    return Image.fromarray(pixels, mode="RGB")


# --------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------

def _noun_phrase(obj: Obj, determiner: str, with_size: bool) -> list[str]:
    return [determiner, *([obj.size] if with_size else []), obj.colour, obj.shape]


def _location(obj: Obj) -> list[str]:
    return ["in" if obj.position == "middle" else "on", "the", obj.position]


def _clause(obj: Obj, template: int) -> list[str]:
    """One object described by paraphrase `template` (concepts, not yet words)."""
    if template == 0:  # a big red circle on the left
        return _noun_phrase(obj, "a", True) + _location(obj)
    if template == 1:  # a red circle on the left
        return _noun_phrase(obj, "a", False) + _location(obj)
    if template == 2:  # on the left a big red circle
        return _location(obj) + _noun_phrase(obj, "a", True)
    if template == 3:  # the big red circle is on the left
        return _noun_phrase(obj, "the", True) + ["is"] + _location(obj)
    if template == 4:  # the circle on the left is big and red
        return ["the", obj.shape] + _location(obj) + ["is", obj.size, "and", obj.colour]
    if template == 5:  # a big red circle
        return _noun_phrase(obj, "a", True)
    if template == 6:  # the red circle is big
        return _noun_phrase(obj, "the", False) + ["is", obj.size]
    raise ValueError(f"no caption template {template}")


_TEMPLATES = 7
_SECOND_TEMPLATES = (0, 1, 5)  # the appended second object: short noun-phrase clauses


def _caption(rng: random.Random, drawn: Scene) -> str:
    """One caption: the main object, sometimes 'and' the second one (in either order)."""
    main = drawn.objects[0]
    concepts = _clause(main, rng.randrange(_TEMPLATES))
    if len(drawn.objects) > 1 and rng.random() < _MENTION_SECOND_RATE:
        second = _clause(drawn.objects[1], rng.choice(_SECOND_TEMPLATES))
        concepts = concepts + ["and"] + second if rng.random() < 0.5 else second + ["and"] + concepts
    table = words()
    return " ".join(table[c] for c in concepts) + " ."


def _captions(image_id: str) -> list[str]:
    """1-5 distinct captions of one image."""
    rng = stable_rng("syn-shapes", "captions", _index(image_id))
    wanted = _CAPTION_COUNTS[bisect.bisect_left(_CAPTION_COUNT_CUM, rng.random())]
    drawn = scene(image_id)
    captions: list[str] = []
    for _ in range(4 * wanted):  # the templates allow >= 5 distinct captions per scene
        caption = _caption(rng, drawn)
        if caption not in captions:
            captions.append(caption)
            if len(captions) == wanted:
                break
    return captions


@lru_cache(maxsize=None)
def _rows(split: str) -> tuple[tuple[str, str, str], ...]:
    return tuple((f"{image_id}#{k}", image_id, caption)
                 for image_id in image_ids(split)
                 for k, caption in enumerate(_captions(image_id)))


def caption_rows(split: str) -> list[dict]:
    """Canonical caption rows ``{"id", "image_id", "caption"}`` of `split` ("train" or
    "dev"), image by image; fresh dicts each call (callers may mutate them)."""
    _check_split(split)
    return [{"id": id_, "image_id": image_id, "caption": caption} for id_, image_id, caption in _rows(split)]

