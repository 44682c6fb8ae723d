"""Shapes scenes: sampling and drawing (the lexicon and the relation rule: :mod:`nic.shapes_world`).

Part of the built-in shapes dataset (:mod:`preprocess.shapes` generates it;
:mod:`preprocess.shapes_captions` describes the scenes drawn here). A scene is 1-3 objects,
each a dict ``{"shape", "color", "size", "cx", "cy", "extent"}`` in image-size units
(``(cx, cy)`` is the centre, y grows downwards, the whole shape lies inside the disc of
radius ``extent``), on a named background. Everything here is deterministic in the
``random.Random`` (or seed) it is given, and the order of its random calls is part of the
dataset: changing it changes every generated image.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from nic.shapes_world import COLOR_WORDS, COLORS, SHAPES, SIZES

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
COLOR_JITTER = 12  # +- per channel
NOISE = 10  # +- per pixel and channel
SUPERSAMPLE = 4


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
