"""Correctness of captions for the synthetic shapes dataset, against the generator's ground truth.

BLEU says how much a caption sounds like the references; these scores say whether it is
true of the image. A caption is parsed with the generator's own lexicon
(:mod:`nic.shapes_world`) into noun-phrase *mentions* — ``(count, size, colour, shape)``,
e.g. "two small red circles" -> ``(2, "small", "red", "circle")``, "three shapes" ->
``(3, None, None, None)`` — and *relations* between consecutive mentions ("a red circle to
the left of a blue square" -> ``(0, "left of", 1)``). Each is then checked against the
image's ``objects``:

* ``pairs_correct``: the caption names at least one colour+shape pair, and every named pair
  is in the image;
* ``pairs_recall``: the share of the image's distinct colour+shape pairs that are named;
* ``count_correct``: every explicit count ("one", "a single", "two", "three") equals the
  number of objects matching the rest of its mention (None when no count is stated);
* ``size_correct``: every mention with a size matches some object (None when no size is stated);
* ``relation_correct``: every stated relation holds, by :func:`nic.shapes_world.relation_between`
  (the generator's rule), between two different objects matching its two mentions
  (None when no relation is stated).

A model that never *states* a relation leaves ``relation_correct`` unmeasured, so
:func:`relation_contrasts` also gives a forced-choice test of spatial knowledge: for each
relation the generator could state about an image ("a red circle to the left of a blue
square"), the same caption with the inverse relation ("... to the right of ..."); a model
knows the relation when it gives the true caption the higher probability (chance: 50%).

Only recognised words count: anything else (determiners, "there is", "background", ...)
is skipped, and a word that is neither a modifier nor a noun drops any modifiers pending
before it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from nic.shapes_world import (
    COLOR_WORDS,
    COUNT_WORDS,
    DETERMINERS,
    GENERIC_NOUNS,
    INVERSE_RELATION,
    RELATION_PHRASES,
    SHAPE_WORDS,
    SIZE_WORDS,
    plain_phrase,
    relation_between,
    relation_candidates,
)

_MAX_PHRASE = max(len(p) for p in RELATION_PHRASES)


class Mention(NamedTuple):
    """One noun phrase; ``shape`` is None for a generic noun ("shapes", "object")."""

    count: int | None
    size: str | None
    color: str | None
    shape: str | None


@dataclass
class ParsedCaption:
    """What a caption states: its mentions, and relations ``(mention_a, relation, mention_b)`` between them."""

    mentions: list[Mention] = field(default_factory=list)
    relations: list[tuple[int, str, int]] = field(default_factory=list)


def _relation_at(tokens: Sequence[str], i: int) -> tuple[str | None, int]:
    """The relation phrase starting at ``tokens[i]`` (longest match) and its length, or (None, 0)."""
    for n in range(_MAX_PHRASE, 0, -1):
        phrase = tuple(tokens[i:i + n])
        if len(phrase) == n and phrase in RELATION_PHRASES:
            return RELATION_PHRASES[phrase], n
    return None, 0


def parse_caption(tokens: Sequence[str]) -> ParsedCaption:
    """Parse a tokenized (lower-case) caption into mentions and relations."""
    parsed = ParsedCaption()
    mods: dict[str, Any] = {}
    pending: tuple[int, str] | None = None  # (mention index, relation) awaiting its second mention
    i = 0
    while i < len(tokens):
        rel, n = _relation_at(tokens, i)
        if rel is not None:
            pending = (len(parsed.mentions) - 1, rel) if parsed.mentions else None
            mods, i = {}, i + n
            continue
        t = tokens[i]
        if t in COUNT_WORDS:
            mods["count"] = COUNT_WORDS[t]
        elif t in SIZE_WORDS:
            mods["size"] = SIZE_WORDS[t]
        elif t in COLOR_WORDS:
            mods["color"] = t
        elif t in SHAPE_WORDS or t in GENERIC_NOUNS:
            parsed.mentions.append(Mention(mods.get("count"), mods.get("size"), mods.get("color"),
                                           SHAPE_WORDS.get(t)))
            if pending is not None:
                parsed.relations.append((pending[0], pending[1], len(parsed.mentions) - 1))
                pending = None
            mods = {}
        elif t not in DETERMINERS:
            mods = {}
        i += 1
    return parsed


def _matches(obj: Mapping[str, Any], m: Mention) -> bool:
    return ((m.shape is None or obj["shape"] == m.shape) and (m.color is None or obj["color"] == m.color)
            and (m.size is None or obj["size"] == m.size))


def _matching(objects: Sequence[Mapping[str, Any]], m: Mention) -> list[int]:
    return [i for i, o in enumerate(objects) if _matches(o, m)]


def _all_or_none(checks: list[bool]) -> bool | None:
    return all(checks) if checks else None


def score_caption(tokens: Sequence[str], objects: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Score one tokenized caption against one image's ground-truth objects (see the module docstring)."""
    parsed = parse_caption(tokens)
    ms = parsed.mentions
    truth = {(o["color"], o["shape"]) for o in objects}
    named = {(m.color, m.shape) for m in ms if m.color is not None and m.shape is not None}
    relations = []
    for a, rel, b in parsed.relations:
        relations.append(any(relation_between(objects[i], objects[j]) == rel
                             for i in _matching(objects, ms[a]) for j in _matching(objects, ms[b]) if i != j))
    return {
        "pairs_correct": bool(named) and named <= truth,
        "pairs_recall": len(named & truth) / len(truth) if truth else None,
        "count_correct": _all_or_none([m.count == len(_matching(objects, m)) for m in ms if m.count is not None]),
        "size_correct": _all_or_none([bool(_matching(objects, m)) for m in ms if m.size is not None]),
        "relation_correct": _all_or_none(relations),
    }


def _rate(values: list[Any]) -> tuple[float | None, int]:
    """Mean of the values that are not None (booleans count as 0/1), and how many there were."""
    known = [float(v) for v in values if v is not None]
    return (sum(known) / len(known) if known else None), len(known)


def score_corpus(token_lists: Sequence[Sequence[str]],
                 objects_per_image: Sequence[Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    """Accuracies over captions (one per image), each among the captions it applies to.

    Returns ``{"color_shape", "color_shape_recall", "count", "size", "relation"}`` (a share in
    [0, 1], or None when no caption applies), ``count_n``/``size_n``/``relation_n`` (how many
    captions state a count/size/relation) and ``n`` (captions scored).
    """
    if len(token_lists) != len(objects_per_image):
        raise ValueError(f"{len(token_lists)} captions but {len(objects_per_image)} images")
    scores = [score_caption(t, o) for t, o in zip(token_lists, objects_per_image)]
    out: dict[str, Any] = {}
    for name, key in (("color_shape", "pairs_correct"), ("color_shape_recall", "pairs_recall"),
                      ("count", "count_correct"), ("size", "size_correct"), ("relation", "relation_correct")):
        out[name], applies = _rate([s[key] for s in scores])
        if name in ("count", "size", "relation"):
            out[f"{name}_n"] = applies
    out["n"] = len(scores)
    return out


_RELATION_TEXT = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}


def relation_contrasts(objects: Sequence[Mapping[str, Any]]) -> list[tuple[list[str], list[str]]]:
    """(true caption, the same with the inverse relation) for every relation true of the scene.

    Captions are in the plainest wording ("a red circle to the left of two blue squares").
    """
    out = []
    for a, rel, b in relation_candidates(objects):
        first, second = plain_phrase(a), plain_phrase(b)
        out.append(([*first, *_RELATION_TEXT[rel].split(), *second],
                    [*first, *_RELATION_TEXT[INVERSE_RELATION[rel]].split(), *second]))
    return out
