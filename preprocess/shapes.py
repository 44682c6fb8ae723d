"""The built-in synthetic "shapes" captioning dataset.

Every image shows 1-3 coloured shapes (circle, square, triangle, star; six colours; two
sizes) that never overlap, on a muted, noisy gradient background. Each image gets five
different English captions built from varied templates (lists, "there is ...", counts,
spatial relations), and the ground truth (every object's shape, colour, size and position)
is stored beside them so that generated captions can be scored for correctness
(:mod:`eval.shapes_metrics`).

The output reads exactly like COCO/Flickr in Karpathy's split format::

    out_dir/images/{train,val,test}/NNNNNN.jpg        (NNNNNN = imgid)
    out_dir/dataset_shapes.json
        {"dataset": "shapes", "params": {...},
         "images": [{"filepath": "images/train", "filename": "000000.jpg", "imgid": 0,
                     "split": "train", "sentids": [0, 1, 2, 3, 4],
                     "sentences": [{"raw": "Two red circles above a blue square.",
                                    "tokens": ["two", "red", ...], "imgid": 0, "sentid": 0}, ...],
                     "objects": [{"shape": "circle", "color": "red", "size": "small",
                                  "cx": 0.31, "cy": 0.52, "extent": 0.07}, ...],
                     "background": "light grey"}, ...]}

Object geometry is in image-size units: ``(cx, cy)`` is the centre (y grows downwards) and
the whole shape lies inside the disc of radius ``extent`` around it.

Generation is deterministic: the same parameters give a byte-identical JSON file and
identical image pixels. The JSON is written last (atomically), so its presence means the
dataset is complete; calling :func:`generate_shapes` again with the same parameters
returns at once.

The caption lexicon (colour, shape, size, count and relation words) is exported as
module constants, and :func:`relation_between` is the one geometry rule for "left of",
"right of", "above" and "below", shared with the scorer.

CLI::

    python -m preprocess.shapes --out data/shapes [--n-train 4000] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from nic.vocab import tokenize

# Bump when the output for given parameters changes, so old datasets are regenerated.
GENERATOR_VERSION = 1
JSON_NAME = "dataset_shapes.json"
SPLITS = ("train", "val", "test")

# ----------------------------------------------------------------------------- lexicon

# Canonical colour -> nominal RGB (far apart; each drawn colour is jittered by COLOR_JITTER).
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (30, 160, 50),
    "blue": (35, 75, 215),
    "yellow": (240, 215, 30),
    "purple": (135, 45, 175),
    "orange": (245, 130, 15),
}
COLOR_WORDS: tuple[str, ...] = tuple(COLORS)  # one word per colour, no synonyms

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
# Canonical shape -> its singular nouns (the first is the canonical word); each noun names one shape.
SHAPE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc"),
    "square": ("square", "box"),
    "triangle": ("triangle",),
    "star": ("star",),
}
PLURALS: dict[str, str] = {
    "circle": "circles", "disc": "discs", "square": "squares", "box": "boxes",
    "triangle": "triangles", "star": "stars",
}
# Every shape noun, singular and plural -> canonical shape.
SHAPE_WORDS: dict[str, str] = {
    form: shape
    for shape, nouns in SHAPE_SYNONYMS.items()
    for noun in nouns
    for form in (noun, PLURALS[noun])
}
# Nouns that name "some shape" without saying which ("three shapes").
GENERIC_NOUNS: tuple[str, ...] = ("shape", "shapes", "object", "objects")

SIZES: tuple[str, ...] = ("small", "large")
SIZE_WORDS: dict[str, str] = {"small": "small", "little": "small", "large": "large", "big": "large"}

# Explicit counts ("a"/"an" are determiners, not counts).
COUNT_WORDS: dict[str, int] = {"one": 1, "single": 1, "two": 2, "three": 3}
NUMBER_WORDS: dict[int, str] = {1: "one", 2: "two", 3: "three"}
DETERMINERS: tuple[str, ...] = ("a", "an", "the")

# Canonical relations: "A <relation> B" as relation_between(A, B) returns it.
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
INVERSE_RELATION: dict[str, str] = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
# Token sequences that state a relation -> canonical relation.
RELATION_PHRASES: dict[tuple[str, ...], str] = {
    ("to", "the", "left", "of"): "left of",
    ("left", "of"): "left of",
    ("to", "the", "right", "of"): "right of",
    ("right", "of"): "right of",
    ("above",): "above",
    ("below",): "below",
    ("under",): "below",
}

# Background name -> base RGB: muted greys and beige, never close to a shape colour.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "light grey": (200, 200, 198),
    "grey": (148, 149, 150),
    "dark grey": (72, 72, 76),
    "beige": (212, 198, 168),
}

# ----------------------------------------------------------------------------- geometry

# Object extent (circumradius, image-size units) per size class: clearly different in pixels.
SIZE_EXTENT: dict[str, tuple[float, float]] = {"small": (0.065, 0.08), "large": (0.135, 0.165)}
BORDER = 0.02  # min gap between a shape and the image edge
GAP = 0.03  # min gap between the discs of two shapes
RELATION_MIN_OFFSET = 0.1  # centres at least this far apart along the stated axis ...
RELATION_RATIO = 1.5  # ... and this many times farther than along the other axis
COLOR_JITTER = 12  # +- per channel
NOISE = 10  # +- per pixel and channel
SUPERSAMPLE = 4


def relation_between(a: Mapping[str, Any], b: Mapping[str, Any]) -> str | None:
    """The spatial relation of object ``a`` to object ``b`` ("a is ... b"), or None if unclear.

    Decided from the centres (y grows downwards): "left of"/"right of" when the horizontal
    offset is at least :data:`RELATION_MIN_OFFSET` and :data:`RELATION_RATIO` times the
    vertical one, "above"/"below" likewise; diagonal or close pairs get None.
    """
    dx, dy = b["cx"] - a["cx"], b["cy"] - a["cy"]
    if abs(dx) >= RELATION_MIN_OFFSET and abs(dx) >= RELATION_RATIO * abs(dy):
        return "left of" if dx > 0 else "right of"
    if abs(dy) >= RELATION_MIN_OFFSET and abs(dy) >= RELATION_RATIO * abs(dx):
        return "above" if dy > 0 else "below"
    return None


def objects_overlap(a: Mapping[str, Any], b: Mapping[str, Any], gap: float = 0.0) -> bool:
    """Whether the bounding discs of two objects come closer than ``gap``."""
    return math.hypot(a["cx"] - b["cx"], a["cy"] - b["cy"]) < a["extent"] + b["extent"] + gap


def _sample_attributes(r: random.Random) -> list[dict[str, Any]]:
    """1-3 objects' shape, colour and size; later objects sometimes repeat an earlier colour+shape."""
    objects: list[dict[str, Any]] = []
    for _ in range(r.randint(1, 3)):
        if objects and r.random() < 0.2:
            prev = r.choice(objects)
            shape, color = prev["shape"], prev["color"]
        else:
            shape, color = r.choice(SHAPES), r.choice(COLOR_WORDS)
        objects.append({"shape": shape, "color": color, "size": r.choice(SIZES)})
    return objects


def _place(objects: list[dict[str, Any]], r: random.Random) -> list[dict[str, Any]]:
    """Give every object a centre and extent, non-overlapping and inside the image (rejection sampling)."""
    extents = [round(r.uniform(*SIZE_EXTENT[o["size"]]), 4) for o in objects]
    while True:
        placed: list[dict[str, Any]] = []
        for obj, extent in zip(objects, extents):
            lo, hi = extent + BORDER, 1.0 - extent - BORDER
            for _ in range(200):
                cand = {**obj, "cx": round(r.uniform(lo, hi), 4), "cy": round(r.uniform(lo, hi), 4),
                        "extent": extent}
                if not any(objects_overlap(cand, p, GAP) for p in placed):
                    placed.append(cand)
                    break
            else:
                break  # no room: start the layout again
        if len(placed) == len(objects):
            return placed


def sample_scene(r: random.Random) -> tuple[list[dict[str, Any]], str]:
    """A random scene: its objects (as stored in the JSON) and background name."""
    return _place(_sample_attributes(r), r), r.choice(tuple(BACKGROUNDS))


# ----------------------------------------------------------------------------- drawing


def _outline(shape: str, cx: float, cy: float, extent: float, angle: float) -> list[tuple[float, float]]:
    """Polygon vertices (pixel units) of a square, triangle or star of circumradius ``extent``."""
    if shape == "square":
        radii, n = [extent], 4
        angle += math.pi / 4
    elif shape == "triangle":
        radii, n = [extent], 3
        angle -= math.pi / 2
    else:  # star
        radii, n = [extent, 0.45 * extent], 10
        angle -= math.pi / 2
    return [(cx + radii[k % len(radii)] * math.cos(angle + 2 * math.pi * k / n),
             cy + radii[k % len(radii)] * math.sin(angle + 2 * math.pi * k / n)) for k in range(n)]


def _shape_alpha(obj: Mapping[str, Any], size: int, angle: float) -> tuple[int, int, np.ndarray]:
    """Anti-aliased coverage of one object: top-left pixel and a float alpha array of its box."""
    cx, cy, e = obj["cx"] * size, obj["cy"] * size, obj["extent"] * size
    x0, y0 = max(int(cx - e) - 1, 0), max(int(cy - e) - 1, 0)
    x1, y1 = min(int(math.ceil(cx + e)) + 1, size), min(int(math.ceil(cy + e)) + 1, size)
    s = SUPERSAMPLE
    mask = Image.new("L", ((x1 - x0) * s, (y1 - y0) * s), 0)
    draw = ImageDraw.Draw(mask)
    lx, ly = (cx - x0) * s, (cy - y0) * s
    if obj["shape"] == "circle":
        rad = 0.9 * e * s
        draw.ellipse((lx - rad, ly - rad, lx + rad, ly + rad), fill=255)
    else:
        draw.polygon(_outline(obj["shape"], lx, ly, e * s, angle), fill=255)
    alpha = np.asarray(mask.resize((x1 - x0, y1 - y0), Image.BOX), dtype=np.float32) / 255.0
    return x0, y0, alpha[..., None]


def _background(name: str, size: int, r: random.Random) -> np.ndarray:
    """A smooth random gradient around the named base colour, as float32 (size, size, 3)."""
    shift = r.uniform(-12, 12)  # lighter or darker, keeping the hue
    base = np.array([c + shift + r.uniform(-4, 4) for c in BACKGROUNDS[name]], dtype=np.float32)
    theta, amp = r.uniform(0, 2 * math.pi), r.uniform(12, 32)
    tint = np.array([amp * r.uniform(0.9, 1.1) for _ in range(3)], dtype=np.float32)
    c = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5  # pixel centres
    ramp = (c * math.cos(theta))[None, :] + (c * math.sin(theta))[:, None]  # in [-0.71, 0.71]
    img = np.multiply(ramp[..., None], tint)  # in place from here on: few full-size temporaries
    img += base
    return img


def render(objects: Sequence[Mapping[str, Any]], background: str, size: int, seed: int) -> Image.Image:
    """Draw a scene (deterministic in ``seed``): gradient background, jittered shapes, pixel noise."""
    r = random.Random(seed)
    img = _background(background, size, r)
    for obj in objects:
        color = np.array([c + r.randint(-COLOR_JITTER, COLOR_JITTER) for c in COLORS[obj["color"]]],
                         dtype=np.float32)
        angle = r.uniform(-0.2, 0.2) if obj["shape"] in ("square", "triangle") else r.uniform(0, 2 * math.pi)
        x0, y0, alpha = _shape_alpha(obj, size, angle)
        region = img[y0:y0 + alpha.shape[0], x0:x0 + alpha.shape[1]]
        region += alpha * (color - region)
    img += np.random.default_rng(seed).integers(-NOISE, NOISE + 1, size=img.shape, dtype=np.int16)
    return Image.fromarray(np.clip(img, 0, 255, out=img).astype(np.uint8), "RGB")


# ----------------------------------------------------------------------------- captions


@dataclass(frozen=True)
class _Unit:
    """Objects described by one noun phrase: all of a colour+shape, or those of one size."""

    color: str
    shape: str
    objs: tuple[int, ...]  # indices into the scene's objects
    sizes: tuple[str, ...]  # their sizes
    size_required: bool = False  # the phrase must state the size (it picks out one size class)


def _an(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _join(phrases: Sequence[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _groups(objects: Sequence[Mapping[str, Any]], idx: Sequence[int]) -> dict[tuple[str, str], list[int]]:
    """The given objects grouped by (colour, shape), in order of first appearance."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i in idx:
        groups.setdefault((objects[i]["color"], objects[i]["shape"]), []).append(i)
    return groups


def _unit(objects: Sequence[Mapping[str, Any]], idx: Sequence[int], size_required: bool = False) -> _Unit:
    o = objects[idx[0]]
    return _Unit(o["color"], o["shape"], tuple(idx), tuple(objects[i]["size"] for i in idx), size_required)


def _by_size(objects: Sequence[Mapping[str, Any]], idx: Sequence[int]) -> list[_Unit]:
    return [_unit(objects, [i for i in idx if objects[i]["size"] == s], True)
            for s in SIZES if any(objects[i]["size"] == s for i in idx)]


def relation_candidates(objects: Sequence[Mapping[str, Any]]) -> list[tuple[_Unit, str, _Unit]]:
    """(A, relation, B) for every pair of describable units where the relation holds for all their objects."""
    units: list[_Unit] = []
    for members in _groups(objects, range(len(objects))).values():
        units.append(_unit(objects, members))
        if len({objects[i]["size"] for i in members}) > 1:
            units.extend(_by_size(objects, members))
    out = []
    for a in units:
        for b in units:
            if set(a.objs) & set(b.objs):
                continue
            rels = {relation_between(objects[i], objects[j]) for i in a.objs for j in b.objs}
            if len(rels) == 1 and None not in rels:
                out.append((a, rels.pop(), b))
    return out


def plain_phrase(unit: _Unit) -> list[str]:
    """The plainest words for a unit of :func:`relation_candidates`: "a red circle", "two small blue boxes"."""
    n = len(unit.objs)
    words = [NUMBER_WORDS[n]] if n > 1 else []
    if unit.size_required:
        words.append(unit.sizes[0])
    words.append(unit.color)
    words = ([_an(words[0])] if n == 1 else []) + words
    return [*words, PLURALS[unit.shape] if n > 1 else unit.shape]


_RELATION_WORDS: dict[str, tuple[str, ...]] = {
    "left of": ("to the left of", "to the left of", "left of"),
    "right of": ("to the right of", "to the right of", "right of"),
    "above": ("above",),
    "below": ("below", "below", "under"),
}
_PREFIXES = ("an image with", "a picture of", "a drawing of", "an image showing", "a picture showing")


@dataclass(frozen=True)
class _Scene:
    objects: list[dict[str, Any]]
    background: str
    relations: list[tuple[_Unit, str, _Unit]]


class _Writer:
    """Writes the phrases of one caption; each shape keeps one noun throughout the caption."""

    def __init__(self, scene: _Scene, r: random.Random) -> None:
        self.scene, self.r = scene, r
        self.nouns = {s: r.choices(SHAPE_SYNONYMS[s], weights=(3, 1)[: len(SHAPE_SYNONYMS[s])])[0]
                      for s in SHAPES}

    def phrase(self, u: _Unit, det: str = "any") -> str:
        """'a small red circle', 'one blue box', 'two yellow squares'; det: 'any', 'article' or 'none'."""
        words = []
        if u.size_required or (len(set(u.sizes)) == 1 and self.r.random() < 0.5):
            words.append(self.r.choice(tuple(w for w, s in SIZE_WORDS.items() if s == u.sizes[0])))
        noun = self.nouns[u.shape]
        words += [u.color, PLURALS[noun] if len(u.objs) > 1 else noun]
        if len(u.objs) > 1:
            words.insert(0, NUMBER_WORDS[len(u.objs)])
        elif det != "none":
            words.insert(0, "one" if det == "any" and self.r.random() < 0.15 else _an(words[0]))
        return " ".join(words)

    def units(self, idx: Sequence[int] | None = None) -> list[_Unit]:
        """Units covering the objects ``idx`` (default all), in random order.

        A colour+shape group is one unit ("two red circles") or, when its sizes differ, sometimes
        one unit per size ("a small red circle and a large red circle"). Objects whose group is
        only partly in ``idx`` (the rest named elsewhere) are always split by size, so every
        stated count stays true.
        """
        objects = self.scene.objects
        idx = list(range(len(objects))) if idx is None else list(idx)
        units: list[_Unit] = []
        for key, members in _groups(objects, idx).items():
            whole = len(members) == sum(1 for o in objects if (o["color"], o["shape"]) == key)
            mixed = len({objects[i]["size"] for i in members}) > 1
            if not whole or (mixed and self.r.random() < 0.5):
                units.extend(_by_size(objects, members))
            else:
                units.append(_unit(objects, members))
        self.r.shuffle(units)
        return units

    def listing(self, idx: Sequence[int] | None = None, det: str = "any") -> str:
        """'a red circle, two blue boxes and a small green star'"""
        return _join([self.phrase(u, det) for u in self.units(idx)])

    def background(self, text: str, p: float = 0.3) -> str:
        """``text``, sometimes followed by 'on a grey background'."""
        bg = self.scene.background
        return f"{text} on {_an(bg)} {bg} background" if self.r.random() < p else text


def _there(first: str) -> str:
    """'there are' before a plural first phrase, else 'there is'."""
    return "there are" if first.split()[0] in ("two", "three") else "there is"


def _t_list(w: _Writer) -> str:
    """'a red circle and two blue boxes on a grey background'"""
    return w.background(w.listing())


def _t_there(w: _Writer) -> str:
    """'there is a large blue square and a red star'"""
    listed = w.listing()
    return w.background(f"{_there(listed)} {listed}")


def _t_prefix(w: _Writer) -> str:
    """'a picture of two yellow squares'"""
    return w.background(f"{w.r.choice(_PREFIXES)} {w.listing()}")


def _t_count(w: _Writer) -> str:
    """'three shapes: a red circle, a blue square and a green star' / 'a single small red circle'"""
    n = len(w.scene.objects)
    if n == 1:
        if w.r.random() < 0.4:
            return f"a single {w.phrase(w.units()[0], det='none')}"
        listed = w.listing(det="article")
        return w.r.choice((f"just one shape, {listed}", f"one shape: {listed}", f"only one object: {listed}"))
    listed, noun, number = w.listing(), w.r.choice(("shapes", "shapes", "objects")), NUMBER_WORDS[n]
    return w.r.choice((f"{number} {noun}: {listed}", f"{listed}, {number} {noun} in total",
                       f"an image with {number} {noun}: {listed}", f"there are {number} {noun}, {listed}"))


def _t_relation(w: _Writer) -> str:
    """'a red circle to the left of a green triangle', 'two stars above a small blue box'"""
    a, rel, b = w.r.choice(w.scene.relations)
    text = f"{w.phrase(a)} {w.r.choice(_RELATION_WORDS[rel])} {w.phrase(b)}"
    rest = [i for i in range(len(w.scene.objects)) if i not in a.objs + b.objs]
    if rest and w.r.random() < 0.5:
        others = w.listing(rest, det="article")
        return f"{others}, with {text}" if w.r.random() < 0.5 else f"{text}, and {others}"
    style = w.r.random()
    if style < 0.25:
        return f"{w.r.choice(_PREFIXES[:4])} {text}"
    if style < 0.45:
        return f"{_there(text)} {text}"
    return text


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:] + "."


def make_captions(objects: list[dict[str, Any]], background: str, r: random.Random, n: int = 5) -> list[str]:
    """``n`` different captions of a scene, from a varied mix of templates.

    The first four come from the list, "there is", count and relation templates (a second
    prefix template when no pair has a clear relation), the rest from a random mix.
    """
    scene = _Scene(objects, background, relation_candidates(objects))
    templates = [_t_list, _t_there, _t_count, _t_relation if scene.relations else _t_prefix]
    extra = [_t_list, _t_there, _t_prefix, _t_count] + [_t_relation] * 3 * bool(scene.relations)
    captions: list[str] = []
    for attempt in range(200):
        template = templates[attempt] if attempt < len(templates) else r.choice(extra)
        caption = _sentence(template(_Writer(scene, r)))
        if caption not in captions:
            captions.append(caption)
            if len(captions) == n:
                r.shuffle(captions)
                return captions
    raise RuntimeError(f"could not make {n} different captions for {objects}")  # pragma: no cover


# ----------------------------------------------------------------------------- dataset


def _image_seed(seed: int, split: str, index: int) -> int:
    """A per-image seed, independent of the other images."""
    return int(np.random.SeedSequence([seed, SPLITS.index(split), index]).generate_state(1, np.uint64)[0])


def make_image(split: str, index: int, imgid: int, first_sentid: int, *, image_size: int,
               seed: int) -> tuple[dict[str, Any], Image.Image]:
    """The JSON entry and picture of one image."""
    r = random.Random(_image_seed(seed, split, index))
    objects, background = sample_scene(r)
    captions = make_captions(objects, background, r)
    picture = render(objects, background, image_size, r.getrandbits(63))
    sentids = list(range(first_sentid, first_sentid + len(captions)))
    entry = {
        "filepath": f"images/{split}", "filename": f"{imgid:06d}.jpg", "imgid": imgid, "split": split,
        "sentids": sentids,
        "sentences": [{"raw": raw, "tokens": tokenize(raw), "imgid": imgid, "sentid": sid}
                      for raw, sid in zip(captions, sentids)],
        "objects": objects, "background": background,
    }
    return entry, picture


def _params(n_train: int, n_val: int, n_test: int, image_size: int, seed: int) -> dict[str, Any]:
    return {"n_train": n_train, "n_val": n_val, "n_test": n_test, "image_size": image_size, "seed": seed,
            "version": GENERATOR_VERSION}


def _existing_params(json_path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(json_path.read_text(encoding="utf-8")).get("params")
    except (OSError, ValueError, AttributeError):
        return None


def generate_shapes(out_dir: str | Path, *, n_train: int = 4000, n_val: int = 250, n_test: int = 250,
                    image_size: int = 224, seed: int = 0, progress: bool = True) -> Path:
    """Generate the shapes dataset into ``out_dir``; return the path of its JSON file.

    Writes ``out_dir/images/{split}/NNNNNN.jpg`` and then ``out_dir/dataset_shapes.json``
    (atomically, last). Returns at once when that JSON already exists with the same parameters.
    """
    out_dir = Path(out_dir)
    json_path = out_dir / JSON_NAME
    params = _params(n_train, n_val, n_test, image_size, seed)
    if _existing_params(json_path) == params:
        return json_path
    json_path.unlink(missing_ok=True)  # a stale JSON must not vouch for a half-written new set
    counts = {"train": n_train, "val": n_val, "test": n_test}
    jobs = [(split, i) for split in SPLITS for i in range(counts[split])]
    for split in SPLITS:
        (out_dir / "images" / split).mkdir(parents=True, exist_ok=True)
    images = []
    for imgid, (split, index) in enumerate(tqdm(jobs, desc="shapes", unit="img", disable=not progress)):
        entry, picture = make_image(split, index, imgid, 5 * imgid, image_size=image_size, seed=seed)
        picture.save(out_dir / entry["filepath"] / entry["filename"], quality=90)
        images.append(entry)
    tmp = json_path.with_name(f".{JSON_NAME}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"dataset": "shapes", "params": params, "images": images}), encoding="utf-8")
    os.replace(tmp, json_path)
    return json_path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m preprocess.shapes", description="Generate the synthetic shapes "
                                "captioning dataset (Karpathy-split JSON + JPEGs).")
    p.add_argument("--out", default="data/shapes", help="output folder (default: %(default)s)")
    p.add_argument("--n-train", type=int, default=4000, help="training images (default: %(default)s)")
    p.add_argument("--n-val", type=int, default=250, help="validation images (default: %(default)s)")
    p.add_argument("--n-test", type=int, default=250, help="test images (default: %(default)s)")
    p.add_argument("--image-size", type=int, default=224, help="image side in pixels (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    path = generate_shapes(a.out, n_train=a.n_train, n_val=a.n_val, n_test=a.n_test, image_size=a.image_size,
                           seed=a.seed, progress=not a.no_progress)
    print(f"shapes dataset: {path}")


if __name__ == "__main__":
    main()
