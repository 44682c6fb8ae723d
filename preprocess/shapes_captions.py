"""Captions of a shapes scene: five different English sentences from varied templates.

Part of the built-in shapes dataset (:mod:`preprocess.shapes`): lists, "there is ...",
counts and spatial relations, built from the lexicon of :mod:`nic.shapes_world` so
that every stated count, colour, shape, size and relation is true of the scene. The order
of the random calls is part of the dataset: changing it changes every generated caption.
The lexicon and the noun-phrase units come from :mod:`nic.shapes_world`, shared with the
scorer (:mod:`eval.shapes_metrics`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nic.shapes_world import (
    NUMBER_WORDS,
    PLURALS,
    SHAPE_SYNONYMS,
    SHAPES,
    SIZE_WORDS,
    Unit,
    article,
    by_size,
    groups,
    relation_candidates,
    unit,
)

# ----------------------------------------------------------------------------- captions


def _join(phrases: Sequence[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


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
    relations: list[tuple[Unit, str, Unit]]


class _Writer:
    """Writes the phrases of one caption; each shape keeps one noun throughout the caption."""

    def __init__(self, scene: _Scene, r: random.Random) -> None:
        self.scene, self.r = scene, r
        self.nouns = {s: r.choices(SHAPE_SYNONYMS[s], weights=(3, 1)[: len(SHAPE_SYNONYMS[s])])[0]
                      for s in SHAPES}

    def phrase(self, u: Unit, det: str = "any") -> str:
        """'a small red circle', 'one blue box', 'two yellow squares'; det: 'any', 'article' or 'none'."""
        words = []
        if u.size_required or (len(set(u.sizes)) == 1 and self.r.random() < 0.5):
            words.append(self.r.choice(tuple(w for w, s in SIZE_WORDS.items() if s == u.sizes[0])))
        noun = self.nouns[u.shape]
        words += [u.color, PLURALS[noun] if len(u.objs) > 1 else noun]
        if len(u.objs) > 1:
            words.insert(0, NUMBER_WORDS[len(u.objs)])
        elif det != "none":
            words.insert(0, "one" if det == "any" and self.r.random() < 0.15 else article(words[0]))
        return " ".join(words)

    def units(self, idx: Sequence[int] | None = None) -> list[Unit]:
        """Units covering the objects ``idx`` (default all), in random order.

        A colour+shape group is one unit ("two red circles") or, when its sizes differ, sometimes
        one unit per size ("a small red circle and a large red circle"). Objects whose group is
        only partly in ``idx`` (the rest named elsewhere) are always split by size, so every
        stated count stays true.
        """
        objects = self.scene.objects
        idx = list(range(len(objects))) if idx is None else list(idx)
        units: list[Unit] = []
        for key, members in groups(objects, idx).items():
            whole = len(members) == sum(1 for o in objects if (o["color"], o["shape"]) == key)
            mixed = len({objects[i]["size"] for i in members}) > 1
            if not whole or (mixed and self.r.random() < 0.5):
                units.extend(by_size(objects, members))
            else:
                units.append(unit(objects, members))
        self.r.shuffle(units)
        return units

    def listing(self, idx: Sequence[int] | None = None, det: str = "any") -> str:
        """'a red circle, two blue boxes and a small green star'"""
        return _join([self.phrase(u, det) for u in self.units(idx)])

    def background(self, text: str, p: float = 0.3) -> str:
        """``text``, sometimes followed by 'on a grey background'."""
        bg = self.scene.background
        return f"{text} on {article(bg)} {bg} background" if self.r.random() < p else text


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
