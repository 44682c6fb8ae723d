"""The synthetic shapes world: its words and the geometry of its spatial relations.

Shared by the generator (:mod:`preprocess.shapes`, which draws and describes scenes) and its
correctness metrics (:mod:`eval.shapes_metrics`, which parses captions back into objects and
relations), so both sides speak exactly the same language. A scene's objects are dicts
``{"shape", "color", "size", "cx", "cy", "extent"}`` in image-size units (y grows downwards).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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

# ----------------------------------------------------------------------------- relations
RELATION_MIN_OFFSET = 0.1  # centres at least this far apart along the stated axis ...
RELATION_RATIO = 1.5  # ... and this many times farther than along the other axis


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


# ----------------------------------------------------------------------------- noun-phrase units
@dataclass(frozen=True)
class Unit:
    """Objects described by one noun phrase: all of a colour+shape, or those of one size."""

    color: str
    shape: str
    objs: tuple[int, ...]  # indices into the scene's objects
    sizes: tuple[str, ...]  # their sizes
    size_required: bool = False  # the phrase must state the size (it picks out one size class)


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def groups(objects: Sequence[Mapping[str, Any]], idx: Sequence[int]) -> dict[tuple[str, str], list[int]]:
    """The given objects grouped by (colour, shape), in order of first appearance."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i in idx:
        groups.setdefault((objects[i]["color"], objects[i]["shape"]), []).append(i)
    return groups


def unit(objects: Sequence[Mapping[str, Any]], idx: Sequence[int], size_required: bool = False) -> Unit:
    o = objects[idx[0]]
    return Unit(o["color"], o["shape"], tuple(idx), tuple(objects[i]["size"] for i in idx), size_required)


def by_size(objects: Sequence[Mapping[str, Any]], idx: Sequence[int]) -> list[Unit]:
    return [unit(objects, [i for i in idx if objects[i]["size"] == s], True)
            for s in SIZES if any(objects[i]["size"] == s for i in idx)]


def relation_candidates(objects: Sequence[Mapping[str, Any]]) -> list[tuple[Unit, str, Unit]]:
    """(A, relation, B) for every pair of describable units where the relation holds for all their objects."""
    units: list[Unit] = []
    for members in groups(objects, range(len(objects))).values():
        units.append(unit(objects, members))
        if len({objects[i]["size"] for i in members}) > 1:
            units.extend(by_size(objects, members))
    out = []
    for a in units:
        for b in units:
            if set(a.objs) & set(b.objs):
                continue
            rels = {relation_between(objects[i], objects[j]) for i in a.objs for j in b.objs}
            if len(rels) == 1 and None not in rels:
                out.append((a, rels.pop(), b))
    return out


def plain_phrase(unit: Unit) -> list[str]:
    """The plainest words for a unit of :func:`relation_candidates`: "a red circle", "two small blue boxes"."""
    n = len(unit.objs)
    words = [NUMBER_WORDS[n]] if n > 1 else []
    if unit.size_required:
        words.append(unit.sizes[0])
    words.append(unit.color)
    words = ([article(words[0])] if n == 1 else []) + words
    return [*words, PLURALS[unit.shape] if n > 1 else unit.shape]
