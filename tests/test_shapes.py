"""The synthetic shapes dataset (preprocess/shapes.py) and its caption-correctness scores (eval/shapes_metrics.py)."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eval.shapes_metrics import Mention, parse_caption, score_caption, score_corpus
from nic.vocab import tokenize
from preprocess.karpathy import read_karpathy
from preprocess.shapes import (
    BACKGROUNDS,
    COLORS,
    COUNT_WORDS,
    RELATION_PHRASES,
    RELATIONS,
    SHAPE_WORDS,
    SHAPES,
    SIZE_WORDS,
    SIZES,
    generate_shapes,
    main,
    objects_overlap,
    relation_between,
)


def _images(json_path: Path) -> list[dict]:
    return json.loads(json_path.read_text())["images"]


def _tiny(out: Path, seed: int = 0) -> Path:
    return generate_shapes(out, n_train=6, n_val=2, n_test=2, image_size=64, seed=seed, progress=False)


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    """~200 images at full size, shared by the content tests."""
    return generate_shapes(tmp_path_factory.mktemp("shapes"), n_train=180, n_val=10, n_test=10, progress=False)


# ----------------------------------------------------------------------------- generator


def test_json_structure_and_files(tmp_path):
    path = _tiny(tmp_path)
    assert path == tmp_path / "dataset_shapes.json"
    data = json.loads(path.read_text())
    assert data["dataset"] == "shapes"
    assert {k: data["params"][k] for k in ("n_train", "n_val", "n_test", "image_size", "seed")} == {
        "n_train": 6, "n_val": 2, "n_test": 2, "image_size": 64, "seed": 0}
    images = data["images"]
    assert [e["split"] for e in images] == ["train"] * 6 + ["val"] * 2 + ["test"] * 2
    assert [e["imgid"] for e in images] == list(range(10))
    sentids = [sid for e in images for sid in e["sentids"]]
    assert sentids == list(range(50))
    for e in images:
        assert e["filepath"] == f"images/{e['split']}" and e["filename"] == f"{e['imgid']:06d}.jpg"
        assert len(e["sentences"]) == 5 and len({s["raw"] for s in e["sentences"]}) == 5
        for s, sid in zip(e["sentences"], e["sentids"]):
            assert s["tokens"] == tokenize(s["raw"]) and s["sentid"] == sid and s["imgid"] == e["imgid"]
            assert s["raw"][0].isupper() and s["raw"].endswith(".")
        assert 1 <= len(e["objects"]) <= 3 and e["background"] in BACKGROUNDS
        for o in e["objects"]:
            assert set(o) == {"shape", "color", "size", "cx", "cy", "extent"}
        with Image.open(tmp_path / e["filepath"] / e["filename"]) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == (64, 64)
    records = read_karpathy(path)  # the pipeline reads it like any Karpathy file
    assert len(records) == 10 and records[0].meta["objects"] == images[0]["objects"]
    assert not list(tmp_path.glob(".*.tmp"))


def test_deterministic_and_seeded(tmp_path):
    a, b, c = _tiny(tmp_path / "a"), _tiny(tmp_path / "b"), _tiny(tmp_path / "c", seed=1)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    for e in _images(a):
        rel = Path(e["filepath"]) / e["filename"]
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    pixels = [np.asarray(Image.open(tmp_path / d / "images/train/000000.jpg")) for d in ("a", "c")]
    assert not np.array_equal(*pixels)


def test_existing_dataset_is_reused_and_params_change_regenerates(tmp_path):
    path = _tiny(tmp_path)
    (tmp_path / "images/train/000000.jpg").unlink()  # would be rewritten by a regeneration
    assert _tiny(tmp_path) == path
    assert not (tmp_path / "images/train/000000.jpg").exists()
    path2 = generate_shapes(tmp_path, n_train=3, n_val=1, n_test=1, image_size=64, progress=False)
    assert path2 == path and (tmp_path / "images/train/000000.jpg").exists()
    assert len(_images(path)) == 5 and json.loads(path.read_text())["params"]["n_train"] == 3


def test_cli(tmp_path, capsys):
    main(["--out", str(tmp_path), "--n-train", "2", "--n-val", "1", "--n-test", "1", "--image-size", "32",
          "--seed", "3", "--no-progress"])
    data = json.loads((tmp_path / "dataset_shapes.json").read_text())
    assert len(data["images"]) == 4 and data["params"]["seed"] == 3
    assert "dataset_shapes.json" in capsys.readouterr().out


def test_objects_inside_and_apart(big):
    for e in _images(big):
        objs = e["objects"]
        for o in objs:
            assert o["extent"] <= o["cx"] <= 1 - o["extent"] and o["extent"] <= o["cy"] <= 1 - o["extent"]
        for a, b in itertools.combinations(objs, 2):
            assert not objects_overlap(a, b)
    small = [o["extent"] for e in _images(big) for o in e["objects"] if o["size"] == "small"]
    large = [o["extent"] for e in _images(big) for o in e["objects"] if o["size"] == "large"]
    assert min(large) > 1.5 * max(small)  # two clearly different sizes


def test_everything_occurs(big):
    images = _images(big)
    objs = [o for e in images for o in e["objects"]]
    assert {o["color"] for o in objs} == set(COLORS)
    assert {o["shape"] for o in objs} == set(SHAPES)
    assert {o["size"] for o in objs} == set(SIZES)
    assert {len(e["objects"]) for e in images} == {1, 2, 3}
    assert {e["background"] for e in images} == set(BACKGROUNDS)
    repeats = [e for e in images if len({(o["color"], o["shape"]) for o in e["objects"]}) < len(e["objects"])]
    assert len(repeats) >= 10  # "two red circles" happens
    parsed = [parse_caption(s["tokens"]) for e in images for s in e["sentences"]]
    assert {m.count for p in parsed for m in p.mentions} == {None, 1, 2, 3}
    assert {rel for p in parsed for _, rel, _ in p.relations} == set(RELATIONS)
    words = {t for e in images for s in e["sentences"] for t in s["tokens"]}
    assert set(SHAPE_WORDS) | set(SIZE_WORDS) | set(COLORS) | set(COUNT_WORDS) <= words


def test_drawn_colour_at_centre(big):
    nominal = np.array(list(COLORS.values()), dtype=float)
    names = list(COLORS)
    for e in _images(big)[:60]:
        pixels = np.asarray(Image.open(big.parent / e["filepath"] / e["filename"]), dtype=float)
        assert pixels.shape == (224, 224, 3)
        for o in e["objects"]:
            x, y = int(o["cx"] * 224), int(o["cy"] * 224)
            rgb = pixels[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3).mean(0)
            dist = np.abs(nominal - rgb).max(1)
            assert names[int(dist.argmin())] == o["color"] and dist.min() < 40, (o, rgb)


def test_relation_between_rule():
    at = [{"cx": x, "cy": y} for x, y in [(0.5, 0.5), (0.8, 0.55), (0.45, 0.2), (0.75, 0.75), (0.52, 0.56)]]
    assert relation_between(at[0], at[1]) == "left of" and relation_between(at[1], at[0]) == "right of"
    assert relation_between(at[2], at[0]) == "above" and relation_between(at[0], at[2]) == "below"
    assert relation_between(at[0], at[3]) is None  # diagonal
    assert relation_between(at[0], at[4]) is None  # too close


# ----------------------------------------------------------------------------- metrics


def test_references_score_fully_correct(big):
    images = _images(big)
    for e in images:
        for s in e["sentences"]:
            score = score_caption(s["tokens"], e["objects"])
            assert score["pairs_correct"] is True and score["pairs_recall"] > 0, (s["raw"], e["objects"])
            assert False not in (score["count_correct"], score["size_correct"], score["relation_correct"]), s["raw"]
    tokens = [s["tokens"] for e in images for s in e["sentences"]]
    objects = [e["objects"] for e in images for _ in e["sentences"]]
    corpus = score_corpus(tokens, objects)
    assert {k: corpus[k] for k in ("color_shape", "count", "size", "relation")} == dict.fromkeys(
        ("color_shape", "count", "size", "relation"), 1.0)
    assert corpus["n"] == len(tokens) and min(corpus["count_n"], corpus["size_n"], corpus["relation_n"]) > 50


def test_parse_caption():
    p = parse_caption(tokenize("Two small red circles to the left of a big blue box, and three shapes."))
    assert p.mentions == [Mention(2, "small", "red", "circle"), Mention(None, "large", "blue", "square"),
                          Mention(3, None, None, None)]
    assert p.relations == [(0, "left of", 1)]
    p = parse_caption(tokenize("An image with one purple triangle above a single orange disc on a grey background"))
    assert p.mentions == [(1, None, "purple", "triangle"), (1, None, "orange", "circle")]
    assert p.relations == [(0, "above", 1)]
    p = parse_caption(["red", "is", "a", "star", "left", "of"])  # "is" drops the pending colour
    assert p.mentions == [(None, None, None, "star")] and p.relations == []
    assert all(tokenize(" ".join(phrase)) == list(phrase) for phrase in RELATION_PHRASES)


# A small red circle top-left, a large red circle below it, a large blue square to the right of the first.
OBJECTS = [
    {"shape": "circle", "color": "red", "size": "small", "cx": 0.2, "cy": 0.3, "extent": 0.07},
    {"shape": "circle", "color": "red", "size": "large", "cx": 0.2, "cy": 0.75, "extent": 0.14},
    {"shape": "square", "color": "blue", "size": "large", "cx": 0.7, "cy": 0.35, "extent": 0.15},
]


def _score(text: str) -> tuple:
    s = score_caption(tokenize(text), OBJECTS)
    return s["pairs_correct"], s["pairs_recall"], s["count_correct"], s["size_correct"], s["relation_correct"]


@pytest.mark.parametrize("text, expected", [
    # (pairs_correct, pairs_recall, count_correct, size_correct, relation_correct)
    ("Two red circles and a large blue square.", (True, 1.0, True, True, None)),
    ("Three shapes: two red circles and a blue box.", (True, 1.0, True, None, None)),
    ("A small red circle to the left of a blue square.", (True, 1.0, None, True, True)),
    ("A blue square to the right of a red circle.", (True, 1.0, None, None, True)),
    ("A red circle above a large red disc.", (True, 0.5, None, True, True)),
    ("One big red circle and one blue square.", (True, 1.0, True, True, None)),
    # wrong colour
    ("A green circle to the left of a blue square.", (False, 0.5, None, None, False)),
    # wrong shape
    ("A red star above a red circle.", (False, 0.5, None, None, False)),
    # wrong count
    ("Three red circles and one blue square.", (True, 1.0, False, None, None)),
    ("Two shapes: a red circle and a blue square.", (True, 1.0, False, None, None)),
    ("One red circle.", (True, 0.5, False, None, None)),
    # wrong size
    ("A large red circle and a small blue square.", (True, 1.0, None, False, None)),
    # wrong relation, and left/right swapped
    ("A blue square above a red circle.", (True, 1.0, None, None, False)),
    ("A small red circle to the right of a blue square.", (True, 1.0, None, True, False)),
    ("A large red circle to the left of a blue square.", (True, 1.0, None, True, False)),  # diagonal: unclear
    # nothing named
    ("Three shapes.", (False, 0.0, True, None, None)),
    ("", (False, 0.0, None, None, None)),
])
def test_score_caption(text, expected):
    assert _score(text) == expected


def test_score_caption_keys_and_empty_image():
    assert score_caption(["a", "red", "circle"], []) == {
        "pairs_correct": False, "pairs_recall": None, "count_correct": None, "size_correct": None,
        "relation_correct": None}


def test_score_corpus():
    captions = ["Two red circles and a large blue square.", "A green circle to the left of a blue square.",
                "Three red circles above a blue square.", "A red star."]
    result = score_corpus([tokenize(c) for c in captions], [OBJECTS] * 4)
    assert result == {"color_shape": 0.5, "color_shape_recall": 0.625, "count": 0.5, "count_n": 2,
                      "size": 1.0, "size_n": 1, "relation": 0.0, "relation_n": 2, "n": 4}
    empty = score_corpus([], [])
    assert empty["n"] == 0 and empty["color_shape"] is None and empty["count_n"] == 0
    with pytest.raises(ValueError, match="2 captions but 1 images"):
        score_corpus([["a"], ["b"]], [OBJECTS])
    assert math.isclose(score_corpus([tokenize("a red circle")], [OBJECTS])["color_shape_recall"], 0.5)


def test_relation_contrasts_are_true_and_inverse_by_the_generators_rule():
    from eval.shapes_metrics import relation_contrasts, score_caption

    objects = [
        {"shape": "circle", "color": "red", "size": "small", "cx": 0.2, "cy": 0.5, "extent": 0.07},
        {"shape": "square", "color": "blue", "size": "large", "cx": 0.8, "cy": 0.5, "extent": 0.15},
        {"shape": "square", "color": "blue", "size": "small", "cx": 0.8, "cy": 0.1, "extent": 0.07},
    ]
    contrasts = relation_contrasts(objects)
    texts = {" ".join(t): " ".join(f) for t, f in contrasts}
    assert texts["a red circle to the left of two blue squares"] == "a red circle to the right of two blue squares"
    assert texts["a small blue square above a large blue square"] == "a small blue square below a large blue square"
    assert "a red circle above a large blue square" not in texts  # no clear vertical relation
    for true, false in contrasts:
        assert score_caption(true, objects)["relation_correct"] is True
        assert score_caption(false, objects)["relation_correct"] is False
    assert relation_contrasts(objects[:1]) == []
