"""Shared fixtures: every test builds its own tiny data; nothing needs files outside tests/."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(__file__).parent / "data"


def write_karpathy_fixture(root: Path, n: int = 12, *, seed: int = 0) -> Path:
    """A small Karpathy-style dataset: random images of varied sizes, 2 captions each."""
    rng = np.random.default_rng(seed)
    (root / "imgs").mkdir(parents=True, exist_ok=True)
    words = ["dog", "cat", "red", "ball", "grass", "runs", "sits", "on", "the", "a"]
    images = []
    for i in range(n):
        h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "imgs" / f"{i}.jpg")
        sentences = [{"raw": " ".join(rng.choice(words, size=int(rng.integers(3, 8)))).capitalize() + "."}
                     for _ in range(2)]
        images.append({"filepath": "imgs", "filename": f"{i}.jpg", "imgid": i, "cocoid": 1000 + i,
                       "split": ("train", "train", "val", "test")[i % 4], "sentences": sentences})
    path = root / "dataset_tiny.json"
    path.write_text(json.dumps({"dataset": "tiny", "images": images}))
    return path


@pytest.fixture
def karpathy_fixture(tmp_path: Path) -> Path:
    return write_karpathy_fixture(tmp_path)
