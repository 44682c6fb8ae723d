"""Hostile and careless input to preprocessing: each test is one input that went wrong before.

Symbolic links out of the dataset, a planted ``.lock`` link, a FIFO named ``x.jpg``, files of
other formats named ``.jpg``, very large photos, unreadable caption files, headers with other
column names, and the bookkeeping of empty and duplicate captions. Every dataset is built
in ``tmp_path``; nothing here needs files outside tests/.
"""

from __future__ import annotations

import fcntl
import json
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image

from nic.images import ImageTooLarge, UnsupportedFormat, load_image
from nic.paths import open_lock
from nic.store import StoreReader
from nic.vocab import Vocabulary, tokenize
from preprocess import __main__ as cli
from preprocess.build import build_stores
from preprocess.custom import read_custom
from preprocess.karpathy import DatasetFormatError, ProblemLog, read_karpathy
from tests.conftest import ROOT, write_karpathy_fixture

S = 16  # stored image side


# ------------------------------------------------------------------------- helpers
def jpeg(path: Path, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 20), colour).save(path, quality=95)


def custom_dataset(root: Path, rows: list[tuple[str, str]], images: dict[str, tuple[int, int, int]]) -> Path:
    """``root/photos/<images>`` and ``root/caps.csv`` with one ``image,caption,train`` row per ``rows`` item."""
    for name, colour in images.items():
        jpeg(root / "photos" / name, colour)
    (root / "photos").mkdir(parents=True, exist_ok=True)
    lines = ["image,caption,split"] + [f'{image},"{caption}",train' for image, caption in rows]
    (root / "caps.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def cli_args(root: Path, *extra: str) -> list[str]:
    return ["--dataset", "custom", "--root", str(root), "--captions", "caps.csv", "--image-dir", "photos",
            "--image-size", str(S), "--min-count", "1", "--workers", "1", "--quiet", *extra]


def report_of(root: Path) -> dict:
    return json.loads((root / "stores" / "report.json").read_text())


def listed(report: dict) -> dict[str, tuple[str, str]]:
    """item -> (kind, reason) of every problem the report lists."""
    return {p["item"]: (p["kind"], p["reason"]) for s in report["splits"].values() for p in s["skipped_items"]}


def big_grey_jpeg(path: Path, width: int = 20_000, height: int = 10_000) -> None:
    """A valid baseline greyscale JPEG of width x height mid-grey pixels in ~0.8 MB, quick to decode.

    Every 8x8 block is one 2-bit code (DC difference 0, then end of block) with one-symbol
    Huffman tables; draft mode decodes it at 1/8 scale (2500 x 1250) in ~0.1 s.
    """
    def segment(marker: int, payload: bytes) -> bytes:
        return b"\xff" + bytes([marker]) + struct.pack(">H", len(payload) + 2) + payload

    one_code = bytes([1] + [0] * 15) + b"\x00"  # one code of length 1 ("0"), for symbol 0
    header = (segment(0xDB, b"\x00" + b"\x01" * 64)  # quantisation table
              + segment(0xC0, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00")  # one component
              + segment(0xC4, b"\x00" + one_code) + segment(0xC4, b"\x10" + one_code)  # DC and AC tables
              + segment(0xDA, b"\x01\x01\x00\x00\x3f\x00"))
    blocks = -(-width // 8) * -(-height // 8)
    path.write_bytes(b"\xff\xd8" + header + b"\x00" * -(-2 * blocks // 8) + b"\xff\xd9")


# ------------------------------------------------------------------ symbolic links
def test_a_symlinked_file_or_folder_leading_out_of_the_dataset_is_never_opened(tmp_path, capsys):
    root = custom_dataset(tmp_path / "data", [("a.jpg", "A red square."), ("evil.jpg", "A secret."),
                                              ("outside/secret.jpg", "A secret."), ("etc/passwd", "Passwords.")],
                          {"a.jpg": (255, 0, 0)})
    jpeg(tmp_path / "private" / "secret.jpg", (0, 0, 255))  # a real image outside the dataset
    (root / "photos" / "evil.jpg").symlink_to(tmp_path / "private" / "secret.jpg")
    (root / "photos" / "outside").symlink_to(tmp_path / "private", target_is_directory=True)
    (root / "photos" / "etc").symlink_to("/etc", target_is_directory=True)
    assert cli.main(cli_args(root, "--workers", "2")) == 0  # checked in the decoding threads
    problems = listed(report_of(root))
    for item in ("evil.jpg", "outside/secret.jpg", "etc/passwd"):
        kind, reason = problems[item]
        assert kind == "unsafe_path" and "symbolic link" in reason, (item, reason)
    assert StoreReader(root / "stores" / "train.h5").filenames() == ["a.jpg"]  # no pixel from outside
    assert report_of(root)["splits"]["train"]["images_skipped"] == 3
    # fatal under --strict, naming the file
    assert cli.main(cli_args(root, "--strict", "--store-dir", str(tmp_path / "strict"))) == 1
    err = capsys.readouterr().err
    assert "evil.jpg" in err and "symbolic link" in err and "--strict" in err


def test_a_symlink_inside_the_dataset_to_a_file_inside_still_works(tmp_path):
    root = custom_dataset(tmp_path, [("a.jpg", "A red square."), ("alias.jpg", "The same square."),
                                     ("linked/b.jpg", "A green square.")],
                          {"a.jpg": (255, 0, 0), "real/b.jpg": (0, 255, 0)})
    (root / "photos" / "alias.jpg").symlink_to("a.jpg")
    (root / "photos" / "linked").symlink_to("real", target_is_directory=True)
    assert cli.main(cli_args(root)) == 0
    assert listed(report_of(root)) == {}
    store = StoreReader(root / "stores" / "train.h5")
    assert store.filenames() == ["a.jpg", "alias.jpg", "linked/b.jpg"]
    np.testing.assert_array_equal(store.image(1), load_image(root / "photos" / "a.jpg", S))
    np.testing.assert_array_equal(store.image(2), load_image(root / "photos" / "real" / "b.jpg", S))


def test_the_lock_file_never_follows_a_symlink_nor_truncates(tmp_path, capsys):
    root = custom_dataset(tmp_path / "data", [("a.jpg", "A red square.")], {"a.jpg": (255, 0, 0)})
    precious = tmp_path / "precious.txt"
    precious.write_bytes(b"do not touch\x00\xff" * 100)
    before = precious.read_bytes()
    stores = root / "stores"
    stores.mkdir()
    (stores / ".lock").symlink_to(precious)
    assert cli.main(cli_args(root)) == 1
    err = capsys.readouterr().err
    assert f"{stores / '.lock'}: the lock file is a symbolic link" in err and "remove it" in err
    assert precious.read_bytes() == before  # byte for byte
    # a dangling link creates nothing at its target
    (stores / ".lock").unlink()
    (stores / ".lock").symlink_to(tmp_path / "created.txt")
    assert cli.main(cli_args(root)) == 1 and not (tmp_path / "created.txt").exists()
    # a regular lock file is used as it is (never truncated), and still keeps a second run out
    (stores / ".lock").unlink()
    (stores / ".lock").write_bytes(b"left by an earlier run")
    assert cli.main(cli_args(root)) == 0
    assert (stores / ".lock").read_bytes() == b"left by an earlier run"
    with open_lock(stores / ".lock") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert cli.main(cli_args(root, "--force")) == 1
        assert "another preprocessing run is writing here" in capsys.readouterr().err


# ------------------------------------------------------------------ what is an image
def test_a_fifo_or_folder_named_jpg_is_reported_not_waited_on(tmp_path):
    root = custom_dataset(tmp_path, [("a.jpg", "A red square."), ("pipe.jpg", "A pipe."), ("dir.jpg", "A folder.")],
                          {"a.jpg": (255, 0, 0)})
    os.mkfifo(root / "photos" / "pipe.jpg")
    (root / "photos" / "dir.jpg").mkdir()
    # in a child process: a regression hangs there and fails here, after the timeout, instead of hanging the suite
    child = subprocess.run([sys.executable, "-m", "preprocess", *cli_args(root)], cwd=ROOT, timeout=120,
                           capture_output=True, text=True)
    assert child.returncode == 0, child.stderr
    problems = listed(report_of(root))
    assert problems["pipe.jpg"][0] == "not_a_file" and "FIFO" in problems["pipe.jpg"][1]
    assert problems["dir.jpg"][0] == "not_a_file" and "folder" in problems["dir.jpg"][1]
    assert StoreReader(root / "stores" / "train.h5").filenames() == ["a.jpg"]


def test_files_of_other_formats_named_jpg_are_refused_by_format(tmp_path, monkeypatch):
    ghostscript = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: ghostscript.append(a) or pytest.fail("gs"))
    root = custom_dataset(tmp_path, [("a.jpg", "A red square."), ("icon.jpg", "An icon."), ("ps.jpg", "A drawing."),
                                     ("doc.jpg", "A document."), ("png.jpg", "A green square.")],
                          {"a.jpg": (255, 0, 0)})
    photos = root / "photos"
    Image.new("RGB", (32, 32), (0, 0, 255)).save(photos / "icon.jpg", format="ICO")  # Pillow decodes ICO
    (photos / "ps.jpg").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n%%EOF\n")
    (photos / "doc.jpg").write_bytes(b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n")
    Image.new("RGB", (20, 20), (0, 255, 0)).save(photos / "png.jpg", format="PNG")  # an allowed format: read
    assert cli.main(cli_args(root)) == 0
    problems = listed(report_of(root))
    for item, fmt in (("icon.jpg", "ICO"), ("ps.jpg", "EPS"), ("doc.jpg", "PDF")):
        kind, reason = problems[item]
        assert kind == "bad_image" and f"in {fmt} format" in reason and "JPEG, PNG, BMP, GIF, TIFF, WEBP" in reason
    assert ghostscript == []  # the EPS file was never handed to Ghostscript
    assert StoreReader(root / "stores" / "train.h5").filenames() == ["a.jpg", "png.jpg"]
    with pytest.raises(UnsupportedFormat, match="icon.jpg is in ICO format"):
        load_image(photos / "icon.jpg", S)


def test_max_pixels_none_really_allows_a_very_large_photo(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after the test
    big = tmp_path / "big.jpg"
    big_grey_jpeg(big)  # 200 megapixels: over twice Pillow's own limit
    with pytest.raises(ImageTooLarge, match="decompression bomb"):  # the default limit is unchanged
        load_image(big, S)
    assert (load_image(big, S, max_pixels=250_000_000) == 128).all()
    assert (load_image(big, S, max_pixels=None) == 128).all()
    with pytest.raises(ImageTooLarge, match="over the limit of 1,000,000"):  # our limit still applies
        load_image(big, S, max_pixels=1_000_000)
    # and through preprocessing: --max-pixels 0 is no limit
    root = custom_dataset(tmp_path / "data", [("a.jpg", "A red square."), ("big.jpg", "A grey field.")],
                          {"a.jpg": (255, 0, 0)})
    big.rename(root / "photos" / "big.jpg")
    assert cli.main(cli_args(root, "--max-pixels", "0")) == 0
    assert StoreReader(root / "stores" / "train.h5").filenames() == ["a.jpg", "big.jpg"]


# --------------------------------------------------------------------- caption files
@pytest.mark.parametrize("name, data, message", [
    ("c.csv", b"image,caption\na.jpg,ok\nb.jpg,caf\xe9 au lait\n", r"c\.csv:3: not UTF-8 .*must be UTF-8"),
    ("c.jsonl", b'{"image": "a.jpg", "caption": "ok"}\n{"image": "b.jpg", "caption": "caf\xe9"}\n',
     r"c\.jsonl:2: not UTF-8 .*must be UTF-8"),
    ("c.csv", b'image,caption\na.jpg,ok\nb.jpg,"never closed ' + b"x" * 200_000 + b"\nc.jpg,ok\n",
     r"c\.csv:3: .*longer than 131,072 characters.*never closed"),
    ("c.jsonl", b'{"image": "a.jpg", "caption": "ok"}\n{"image": "a.jpg", "caption": ' + b"[" * 100_000
     + b"]" * 100_000 + b"}\n", r"c\.jsonl:2: JSON nested too deeply"),
    ("c.jsonl", b'{"image": "a.jpg", "caption": "ok", "n": ' + b"1" * 5000 + b"}\n", r"c\.jsonl:1: malformed JSON"),
], ids=["csv-latin1", "jsonl-latin1", "csv-field-over-limit", "jsonl-deep-nesting", "jsonl-huge-integer"])
def test_unreadable_caption_files_stop_at_file_and_line(tmp_path, name, data, message):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(DatasetFormatError, match=message):
        read_custom(tmp_path / name)


def test_caption_files_that_are_fifos_or_too_deeply_nested_are_errors_naming_them(tmp_path):
    for name, read in (("caps.csv", read_custom), ("dataset_x.json", read_karpathy)):
        os.mkfifo(tmp_path / name)
        outcome: list[BaseException] = []

        def run(read=read, name=name, outcome=outcome) -> None:
            try:
                read(tmp_path / name)
            except BaseException as e:  # noqa: BLE001 - handed to the test thread
                outcome.append(e)

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(30)
        if worker.is_alive():  # a regression: let the blocked reader go (it sees an empty file), then fail
            os.close(os.open(tmp_path / name, os.O_WRONLY | os.O_NONBLOCK))
            pytest.fail(f"reading a FIFO named {name} blocked")
        assert isinstance(outcome[0], DatasetFormatError) and "is a FIFO, not a regular file" in str(outcome[0])
    (tmp_path / "deep.json").write_text('{"images": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(DatasetFormatError, match=r"deep\.json: malformed JSON \(nested too deeply"):
        read_karpathy(tmp_path / "deep.json")


@pytest.mark.parametrize("first_row", ["filename,text", "image,text,split", "path,caption", "0001,dog"])
def test_a_header_with_other_column_names_is_an_error_naming_them(tmp_path, first_row):
    (tmp_path / "c.csv").write_text(f"{first_row}\na.jpg,A dog runs.\n")
    found = ", ".join(repr(c) for c in first_row.split(","))
    with pytest.raises(DatasetFormatError, match=rf"c\.csv:1: the first row \({found}\) looks like a header") as e:
        read_custom(tmp_path / "c.csv")
    assert "image,caption[,split]" in str(e.value)
    # a header that names image and caption (any case, any order) and headerless data still read
    (tmp_path / "c.csv").write_text("Caption,IMAGE\nA dog runs.,a.jpg\n")
    assert [(r.path, r.captions) for r in read_custom(tmp_path / "c.csv")] == [("a.jpg", [["a", "dog", "runs"]])]
    (tmp_path / "c.csv").write_text("a.jpg,A dog runs.\nb,A cat.\n")
    assert [r.path for r in read_custom(tmp_path / "c.csv")] == ["a.jpg", "b"]


# ---------------------------------------------------------------------- bookkeeping
def test_captions_dropped_empty_counts_what_the_report_lists(tmp_path):
    root = custom_dataset(tmp_path, [("a.jpg", "A red square."), ("a.jpg", "  "), ("b.jpg", "!!!"),
                                     ("c.jpg", "A blue square.")],
                          {"a.jpg": (255, 0, 0), "b.jpg": (0, 255, 0), "c.jpg": (0, 0, 255)})
    assert cli.main(cli_args(root)) == 0
    report = report_of(root)
    assert report["splits"]["train"]["captions_dropped_empty"] == 2  # the two listed below
    assert Vocabulary.load(root / "stores" / "vocab.json").stats["captions_dropped_empty"] == 2
    problems = listed(report)
    assert problems["a.jpg"] == ("empty_caption", "1 empty caption(s)")
    assert problems["b.jpg"][0] == "no_captions" and "1 empty caption(s)" in problems["b.jpg"][1]


def test_duplicate_captions_are_counted_stored_once_and_fatal_under_strict(tmp_path, capsys):
    root = custom_dataset(tmp_path, [("a.jpg", "A dog runs."), ("a.jpg", "A dog runs."), ("a.jpg", "a DOG runs"),
                                     ("a.jpg", "A cat sits."), ("b.jpg", "A dog runs.")],
                          {"a.jpg": (255, 0, 0), "b.jpg": (0, 255, 0)})
    assert cli.main(cli_args(root)) == 0
    report = report_of(root)
    assert listed(report)["a.jpg"][0] == "duplicate_caption" and report["problems"]["by_kind"] == {
        "duplicate_caption": 1}  # the same caption of another image is no duplicate
    assert report["splits"]["train"]["captions_dropped_duplicate"] == 2
    assert report["splits"]["train"]["captions"] == 3
    store = StoreReader(root / "stores" / "train.h5")
    assert store.references() == [[tokenize("A dog runs."), tokenize("A cat sits.")], [tokenize("A dog runs.")]]
    assert cli.main(cli_args(root, "--strict", "--store-dir", str(tmp_path / "strict"))) == 1
    assert "a.jpg: 2 duplicate caption(s)" in capsys.readouterr().err


def test_karpathy_duplicates_are_reported_and_stored_once_but_not_fatal(tmp_path):
    path = write_karpathy_fixture(tmp_path, n=4)
    data = json.loads(path.read_text())
    first = data["images"][0]["sentences"][0]["raw"]
    data["images"][0]["sentences"].append({"raw": first})  # Flickr8k has 19 such captions in 40,000
    path.write_text(json.dumps(data))
    log = ProblemLog(strict=True)
    report = build_stores(read_karpathy(path, problems=log), image_dir=tmp_path, store_dir=tmp_path / "stores",
                          dataset="tiny", image_size=S, min_count=1, strict=True, problems=log, progress=False)
    assert [(p["item"], p["kind"]) for p in report["splits"]["train"]["skipped_items"]] == [
        ("imgs/0.jpg", "duplicate_caption")]
    assert report["splits"]["train"]["captions_dropped_duplicate"] == 1
    refs = StoreReader(tmp_path / "stores" / "train.h5").references()
    assert refs[0] == [tokenize(s["raw"]) for s in data["images"][0]["sentences"][:2]]
