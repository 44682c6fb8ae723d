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
"right of", "above" and "below", shared with the scorer. They live with the scenes in
:mod:`preprocess.shapes_scene` (sampling and drawing); the captions are written by
:mod:`preprocess.shapes_captions`; this module generates the dataset and re-exports both.

CLI::

    python -m preprocess.shapes --out data/shapes [--n-train 4000] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from nic.shapes_world import (  # noqa: F401  # noqa: F401 - the lexicon and relation rule, re-exported for callers of this module
    COLOR_WORDS,
    COLORS,
    COUNT_WORDS,
    DETERMINERS,
    GENERIC_NOUNS,
    INVERSE_RELATION,
    NUMBER_WORDS,
    PLURALS,
    RELATION_PHRASES,
    RELATIONS,
    SHAPE_SYNONYMS,
    SHAPE_WORDS,
    SHAPES,
    SIZE_WORDS,
    SIZES,
    plain_phrase,
    relation_between,
    relation_candidates,
)
from nic.store import SPLITS
from nic.vocab import tokenize
from preprocess.shapes_captions import make_captions
from preprocess.shapes_scene import BACKGROUNDS, objects_overlap, render, sample_scene  # noqa: F401

# Bump when the output for given parameters changes, so old datasets are regenerated.
GENERATOR_VERSION = 1
JSON_NAME = "dataset_shapes.json"


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
