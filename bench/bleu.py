"""Benchmark: corpus BLEU-1..4 with eval.bleu against pycocoevalcap and nltk.

    python bench/bleu.py                      # 5,000 images x 5 references, seed 0
    python bench/bleu.py --images 40000 --refs 5 --seed 1 --repeat 5

Generates a random but caption-like corpus (seeded): each image gets a scene (subject, verb,
object, place, drawn from Zipf-weighted lists) and its references describe it in varied words
("A young man riding a wave on the beach.", "a guy on a surfboard"); the hypothesis is one more
description with a few words dropped, replaced or swapped, so scores land near real captioning
models'. It then times, best of ``--repeat`` runs:

* ``eval.bleu.corpus_bleu`` on token lists,
* ``eval.bleu.score_captions`` on the raw strings (including our pure-Python PTB tokenization),
* ``pycocoevalcap.bleu.Bleu(4).compute_score`` on space-joined strings (if installed),
* ``nltk.translate.bleu_score.corpus_bleu`` with the four BLEU-n weightings (if installed),

and prints a table of seconds and BLEU-1..4, plus the largest difference from our scores. It asserts
nothing: the tests (tests/test_bleu.py) check agreement.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import describe as describe_machine  # noqa: E402
from eval import coco_tokenize as tokenize_module  # noqa: E402
from eval.bleu import corpus_bleu, score_captions  # noqa: E402
from eval.coco_tokenize import coco_tokenize  # noqa: E402

SUBJECTS = [["man", "guy", "person"], ["woman", "lady", "girl"], ["dog", "puppy"], ["cat", "kitten"],
            ["boy", "kid", "child"], ["group of people", "crowd"], ["giraffe"], ["elephant"], ["horse"],
            ["bird"], ["train"], ["bus"], ["plane", "airplane", "jet"], ["skier"], ["surfer"], ["player"]]
ADJECTIVES = ["red", "white", "black", "small", "large", "young", "old", "blue", "green", "brown",
              "wooden", "tall", "little", "yellow", "empty"]
VERBS = [["riding", "on"], ["holding", "carrying"], ["sitting on", "sitting in", "laying on"],
         ["standing next to", "standing near", "standing by"], ["walking down", "walking on"], ["eating"],
         ["looking at", "watching"], ["playing with", "playing"], ["parked on", "parked in"], ["flying over"]]
OBJECTS = [["surfboard", "wave"], ["skateboard", "ramp"], ["frisbee"], ["table", "desk"], ["street", "road"],
           ["beach", "shore"], ["bench"], ["pizza", "slice of pizza"], ["kite"], ["field", "grassy field"],
           ["couch", "sofa"], ["bed"], ["umbrella"], ["snow", "slope"], ["plate of food", "plate"],
           ["tennis racket", "racket"], ["laptop", "computer"], ["clock tower", "tower"], ["sandwich"]]
PLACES = ["in a park", "on the beach", "in the kitchen", "on a city street", "in a field", "at night",
          "near the water", "in front of a building", "on a sunny day", "in the snow", "at the zoo"]


def zipf_choice(rng: random.Random, items: list[Any]) -> Any:
    """An item with probability ~ 1/rank (a realistic, skewed vocabulary)."""
    return rng.choices(items, [1.0 / (i + 1) for i in range(len(items))])[0]


def scene(rng: random.Random) -> dict[str, Any]:
    """What an image shows: each caption of it describes this, in its own words."""
    return {"subject": zipf_choice(rng, SUBJECTS), "adjective": zipf_choice(rng, ADJECTIVES),
            "verb": zipf_choice(rng, VERBS), "object": zipf_choice(rng, OBJECTS),
            "object_adjective": zipf_choice(rng, ADJECTIVES), "place": zipf_choice(rng, PLACES)}


def describe(rng: random.Random, s: dict[str, Any]) -> str:
    """One caption-like sentence about scene ``s`` ("A young man riding a wave on the beach.")."""
    words = [rng.choice(["a", "a", "a", "the", "there is a"])]
    if rng.random() < 0.5:
        words.append(s["adjective"])
    words += [rng.choice(s["subject"]), rng.choice(s["verb"]), rng.choice(["a", "a", "the"])]
    if rng.random() < 0.3:
        words.append(s["object_adjective"])
    words.append(rng.choice(s["object"]))
    if rng.random() < 0.5:
        words.append(s["place"] if rng.random() < 0.8 else zipf_choice(rng, PLACES))
    text = " ".join(words)
    return text[0].upper() + text[1:] + rng.choice([".", ".", ".", "", " ."])


def perturb(rng: random.Random, caption: str) -> str:
    """A model-like hypothesis: a caption with some words dropped, replaced or swapped."""
    words = caption.rstrip(" .").lower().split()
    for _ in range(rng.randint(0, 3)):
        i = rng.randrange(len(words))
        op = rng.random()
        if op < 0.3 and len(words) > 3:
            del words[i]
        elif op < 0.7:
            words[i] = zipf_choice(rng, ADJECTIVES + [w for group in OBJECTS for w in group])
        elif i + 1 < len(words):
            words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


def make_corpus(images: int, refs: int, seed: int) -> tuple[dict[int, str], dict[int, list[str]]]:
    """Raw hypothesis and reference strings per image id."""
    rng = random.Random(seed)
    hypotheses, references = {}, {}
    for i in range(images):
        s = scene(rng)
        references[i] = [describe(rng, s) for _ in range(refs)]
        hypotheses[i] = perturb(rng, describe(rng, s))
    return hypotheses, references


def best_of(repeat: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    """Fastest wall time over ``repeat`` runs, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def run(images: int, refs: int, seed: int, repeat: int) -> tuple[list[tuple[str, float, tuple[float, ...]]], int]:
    """Time every available implementation: rows of (name, seconds, BLEU-1..4), and the short-hypothesis count."""
    hyps, refs_raw = make_corpus(images, refs, seed)
    keys = list(hyps)
    hyp_tokens = [coco_tokenize(hyps[k]) for k in keys]
    ref_tokens = [[coco_tokenize(r) for r in refs_raw[k]] for k in keys]
    rows = []
    seconds, result = best_of(repeat, lambda: corpus_bleu(hyp_tokens, ref_tokens))
    rows.append(("eval.bleu.corpus_bleu (token lists)", seconds, result.bleu))

    def from_strings() -> Any:
        tokenize_module._coco_tokenize.cache_clear()  # time the tokenization, not its cache
        return score_captions(hyps, refs_raw)

    seconds, result = best_of(repeat, from_strings)
    rows.append(("eval.bleu.score_captions (raw strings)", seconds, result.bleu))
    try:  # optional comparisons: each runs when its package is installed
        from pycocoevalcap.bleu.bleu import Bleu
    except ImportError:
        print("pycocoevalcap not installed: skipped")
    else:
        gts = {k: [" ".join(r) for r in ref_tokens[i]] for i, k in enumerate(keys)}
        res = {k: [" ".join(hyp_tokens[i])] for i, k in enumerate(keys)}
        seconds, (score, _) = best_of(repeat, lambda: Bleu(4).compute_score(gts, res, verbose=0))
        rows.append(("pycocoevalcap Bleu(4).compute_score", seconds, tuple(score)))
    try:
        from nltk.translate.bleu_score import corpus_bleu as nltk_corpus_bleu
    except ImportError:
        print("nltk not installed: skipped")
    else:
        weights = [(1.0,), (0.5, 0.5), (1 / 3,) * 3, (0.25,) * 4]
        seconds, score = best_of(repeat, lambda: nltk_corpus_bleu(ref_tokens, hyp_tokens, weights=weights))
        rows.append(("nltk corpus_bleu (4 weightings, one pass)", seconds, tuple(score)))
    return rows, sum(len(h) < 4 for h in hyp_tokens)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=5000, help="number of images (default 5000)")
    p.add_argument("--refs", type=int, default=5, help="references per image (default 5)")
    p.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    p.add_argument("--repeat", type=int, default=3, help="runs per implementation; the fastest counts (default 3)")
    a = p.parse_args(argv)
    rows, short = run(a.images, a.refs, a.seed, a.repeat)
    ours = rows[0][2]
    print(f"{a.images} images x {a.refs} references, seed {a.seed}, best of {a.repeat}")
    print(describe_machine() + "\n")
    print(f"| {'implementation':<42} | seconds | BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 | max |diff| vs ours |")
    print(f"|{'-' * 44}|--------:|-------:|-------:|-------:|-------:|-------------------:|")
    for name, seconds, scores in rows:
        diff = max(abs(x - y) for x, y in zip(scores, ours))
        cells = " | ".join(f"{s:.4f}" for s in scores)
        print(f"| {name:<42} | {seconds:7.3f} | {cells} | {diff:18.1e} |")
    if any(name.startswith("nltk") for name, _, _ in rows):
        print(f"\nnltk counts max(1, n-grams) per hypothesis, the toolkit max(0, ...): with {short} hypotheses "
              "shorter than 4 tokens here, its BLEU-n can differ slightly (see tests/test_bleu.py).")


if __name__ == "__main__":
    main()
