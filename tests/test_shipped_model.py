"""The model that ships with nic (models/nic_flickr8k/): loads safely, captions real photos, is honest.

CI has no Flickr8k, so these tests check the shipped file itself on the two CC0 photos in
tests/data/ and the model card against the report JSON the recipe wrote beside the model.
"""

from __future__ import annotations

import json
import re

import pytest
import torch

import caption
from nic.captioner import Captioner
from nic.checkpoint import load_checkpoint
from nic.images import load_image
from tests.conftest import DATA, ROOT

MODEL_DIR = ROOT / "models" / "nic_flickr8k"
MODEL = MODEL_DIR / "model.pt"
PHOTOS = [DATA / "cat.jpg", DATA / "espresso.jpg"]


@pytest.fixture(scope="module")
def captioner() -> Captioner:
    return Captioner.from_checkpoint(MODEL)


@pytest.fixture(scope="module")
def captions(captioner):
    return dict(captioner.caption_files(PHOTOS))  # the model's own settings: beam 20, its length penalty


def test_the_file_is_small_and_loads_with_weights_only():
    assert MODEL.stat().st_size <= 25 * 1024 * 1024
    data = torch.load(MODEL, map_location="cpu", weights_only=True)  # raises on any pickled object
    assert data["format"] == "nic-checkpoint"
    assert "training" not in data, "the shipped file holds only what inference needs"
    assert data["encoder"] is None, "the CNN weights come from the efficientnet-lite0 package, not this file"
    assert load_checkpoint(MODEL)["encoder_name"] == "efficientnet_lite0"


def test_it_decodes_with_beam_20_and_the_tuned_length_penalty(captioner):
    settings = captioner.settings
    assert settings.method == "beam" and settings.beam_size == 20
    assert settings.length_penalty == captioner.config.eval.length_penalty


def test_captions_are_fluent(captioner, captions):
    for path in PHOTOS:
        best = captions[path][0]
        assert best.finished, f"{path.name}: the caption ran to the length limit: {best.text!r}"
        assert "<unk>" not in best.words, f"{path.name}: {best.text!r}"
        assert len(best.words) >= 4, f"{path.name}: {best.text!r}"


def test_the_model_looks_at_the_image(captioner, captions):
    cat, espresso = (captions[p][0] for p in PHOTOS)
    assert cat.text != espresso.text
    images = torch.stack([torch.from_numpy(load_image(p, captioner.config.data.image_size)) for p in PHOTOS])
    pooled, grid = captioner.features(images)
    own = captioner.score(pooled, grid, [cat.words, espresso.words])
    swapped = captioner.score(pooled.flip(0), grid.flip(0) if grid is not None else None, [cat.words, espresso.words])
    assert own[0] > swapped[0], "the cat caption is not more likely on the cat photo"
    assert own[1] > swapped[1], "the espresso caption is not more likely on the espresso photo"


def test_caption_py_uses_it_by_default(captions, capsys):
    caption.main(["--img", *map(str, PHOTOS)])
    printed = dict(line.rsplit(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert [printed[str(p)] for p in PHOTOS] == [captions[p][0].text for p in PHOTOS]


def card_rows() -> dict[int, dict[str, float]]:
    """The card's test-score table: beam -> {column: value}."""
    lines = (MODEL_DIR / "MODEL_CARD.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| decoding | BLEU-1"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("| beam"):
            break
        cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
        rows[int(re.match(r"beam (\d+)", cells[0]).group(1))] = {
            h: float(c.rstrip("%")) for h, c in zip(header[1:], cells[1:], strict=True)}
    return rows


def test_the_card_reports_what_the_recipe_measured():
    report = json.loads((MODEL_DIR / "test_report.json").read_text())
    rows = card_rows()
    assert sorted(rows) == sorted(r["beam"] for r in report["results"])
    for r in report["results"]:
        card = rows[r["beam"]]
        for n in range(1, 5):
            assert card[f"BLEU-{n}"] == pytest.approx(round(100 * r["bleu"][f"BLEU-{n}"], 1), abs=1e-9)
        for column, key in (("METEOR", "METEOR"), ("ROUGE-L", "ROUGE-L"), ("CIDEr-D", "CIDEr")):
            assert card[column] == pytest.approx(round(100 * r["scores"][key], 1), abs=1e-9)
        assert card["distinct"] == pytest.approx(round(100 * r["distinct"], 1), abs=1e-9)


def test_attention_map_works_with_it(captioner, captions, tmp_path, capsys):
    from PIL import Image

    assert captioner.uses_grid, "the shipped model attends over the CNN grid"
    out = tmp_path / "att.png"
    caption.main(["--img", str(PHOTOS[1]), "--attention-map", str(out)])
    assert f"attention map: {out}" in capsys.readouterr().out
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 224  # one panel per word, side by side
