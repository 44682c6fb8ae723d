"""Hostile and careless input to the evaluation report: file names leaving --image-root, an oversized image,
empty captions and empty references."""

from __future__ import annotations

import json
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eval import bleu_report
from eval.results import write_results
from eval.scoring import ReportError

CAPTIONS = {1: "a dog runs on the grass", 2: "a cat sits on a mat", 3: "a red ball", 4: "a man rides a bike",
            5: "two birds in a tree"}


def png_header(width: int, height: int) -> bytes:
    """The start of a PNG declaring ``width`` x ``height`` pixels: enough for Pillow to read its size, no more."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def dataset(tmp_path: Path, files: dict[int, str], refs: dict[int, list[str]] | None = None) -> tuple[Path, Path]:
    """A Karpathy references file naming ``files`` (image id -> file name) and a results file for its images."""
    refs = refs or {i: [c.capitalize() + ".", "Something else entirely."] for i, c in CAPTIONS.items()}
    images = [{"imgid": i, "cocoid": i, "split": "test", "filename": files.get(i, f"{i}.jpg"),
               "sentences": [{"raw": r} for r in refs[i]]} for i in refs]
    references = tmp_path / "dataset_x.json"
    references.write_text(json.dumps({"images": images}))
    results = write_results(tmp_path / "results.json", list(CAPTIONS), list(CAPTIONS.values()))
    return references, results


def jpeg(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(path)
    return path


def test_html_report_never_embeds_files_outside_the_image_root(tmp_path, capsys):
    root = tmp_path / "dataset" / "images"
    for i in (1, 2):
        jpeg(root / f"{i}.jpg", i)
    secret = jpeg(tmp_path / "secret.jpg", 9)  # outside the root, named three ways
    (root / "link.jpg").symlink_to(secret)
    files = {3: str(secret), 4: "../../secret.jpg", 5: "link.jpg"}
    references, results = dataset(tmp_path, files)
    html, out = tmp_path / "r.html", tmp_path / "r.json"
    bleu_report.main(["--results", str(results), "--references", str(references), "--metrics", "bleu",
                      "--html", str(html), "--image-root", str(root), "--out", str(out)])
    page = html.read_text(encoding="utf-8")
    assert page.count('class="card"') == 5 and page.count("data:image/jpeg;base64,") == 2  # 1.jpg and 2.jpg only
    assert page.count("leads outside --image-root") == 3
    assert "3 image file name(s) leading outside --image-root" in page
    assert "3 image file name(s) leading outside --image-root" in capsys.readouterr().out
    assert json.loads(out.read_text())["image_root"]["outside"] == {"count": 3, "ids": [3, 4, 5], "truncated": False}


def test_html_report_survives_an_oversized_image(tmp_path):
    root = tmp_path / "images"
    for i in (1, 2, 3, 4):
        jpeg(root / f"{i}.jpg", i)
    (root / "5.jpg").write_bytes(png_header(20_000, 20_000))  # 400 megapixels: Pillow itself refuses it
    references, results = dataset(tmp_path, {})
    html = tmp_path / "r.html"
    bleu_report.main(["--results", str(results), "--references", str(references), "--metrics", "bleu",
                      "--html", str(html), "--image-root", str(root)])
    page = html.read_text(encoding="utf-8")
    assert page.count('class="card"') == 5 and page.count("data:image/jpeg;base64,") == 4
    note = re.search(r'<div class="noimg">([^<]*)</div>', page).group(1)
    assert note.startswith("image not shown: ImageTooLarge")


def test_empty_captions_and_empty_references_are_counted(tmp_path, capsys):
    refs = {1: ["A dog runs on the grass.", "A dog on grass."], 2: ["A cat sits on a mat.", "", "..."],
            3: ["", " . . . "], 4: ["A man rides a bike.", "A man on a bike."], 5: ["Two birds in a tree.", "Birds."]}
    references, _ = dataset(tmp_path, {}, refs)
    results = write_results(tmp_path / "results.json", [1, 2, 3, 4, 5],
                            ["a dog runs on the grass", "", "a red ball", "...", "two birds in a tree"])
    out = tmp_path / "r.json"
    bleu_report.main(["--results", str(results), "--references", str(references), "--metrics", "bleu",
                      "--out", str(out)])
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    m, row = report["matching"], report["results"][0]
    # image 3's references are all empty: not scored (no references), counted and listed
    assert m["scored"] == 4 and m["references_empty"] == {"count": 1, "ids": [3], "truncated": False}
    assert m["empty_reference_captions"] == 4 and report["references"]["captions"] == 7
    assert row["images"] == 4 and row["image_ids"] == [1, 2, 4, 5]
    # empty hypotheses are scored as they are (never dropped: that would flatter the captioner), and counted
    assert row["empty_captions"] == {"count": 2, "ids": [2, 4], "truncated": False}
    assert "1 image(s) whose references are all empty after tokenization, not scored: 3" in printed
    assert "4 empty reference caption(s)" in printed and "2 empty caption(s) in results" in printed
    # the empty references were dropped, not scored as length-0 references: the same as leaving them out
    clean = {k: [r for r in v if r.strip(".?! ")] for k, v in refs.items() if k != 3}
    (tmp_path / "clean").mkdir()
    references2, _ = dataset(tmp_path / "clean", {}, clean)
    again = bleu_report.evaluate_results(results, references2, metrics=["bleu"])
    assert again["results"][0]["bleu"] == row["bleu"]
    with pytest.raises(ReportError, match=r"--strict: 1 image\(s\) whose references are all empty"):
        bleu_report.evaluate_results(results, references, metrics=["bleu"], strict=True)
