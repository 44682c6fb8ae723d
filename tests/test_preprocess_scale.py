"""Preprocessing real datasets at scale: COCO/Flickr/custom readers, every bad-input case,
parallel decoding, kill -9 and resume.

The fixtures are tiny but shaped like the real thing: Karpathy JSON with COCO's
``filepath`` folders (train2014/val2014) and ``restval``, images in every mode Pillow
produces (JPEG, PNG, grey, CMYK, RGBA, palette, 16-bit, EXIF-rotated, one large JPEG for
draft mode), and each kind of bad input next to the good ones.
"""

from __future__ import annotations

import json
import signal
import struct
import subprocess
import sys
import threading
import time
import warnings
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from nic.config import DataConfig, load_config
from nic.images import ImageTooLarge, load_image
from nic.store import SPLITS, StoreReader, check_store
from nic.vocab import Vocabulary, tokenize
from preprocess import __main__ as cli
from preprocess.build import build_stores, prepare
from preprocess.custom import read_custom
from preprocess.karpathy import DatasetFormatError, InputProblem, ProblemLog, read_karpathy, safe_relative_path
from tests.conftest import ROOT

S = 16  # stored image side: small keeps the tests fast
WORDS = ["a", "man", "dog", "red", "ball", "on", "the", "grass", "runs", "with", "two", "cats", "sits", "near"]


# ------------------------------------------------------------------------ fixtures
def bomb_png(path: Path, width: int = 60_000, height: int = 60_000) -> None:
    """A 100-byte PNG whose header declares width x height pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def photo(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth colour gradients plus noise: compresses like a photo, not like a flat fill."""
    y, x = np.mgrid[0:h, 0:w]
    f = rng.uniform(0.05, 0.3, 3)
    img = np.stack([128 + 90 * np.sin(x * f[c] + y * f[(c + 1) % 3] + c) for c in range(3)], -1)
    return (img + rng.normal(0, 10, img.shape)).clip(0, 255).astype(np.uint8)


def save_kind(path: Path, kind: str, rng: np.random.Generator) -> None:
    h, w = int(rng.integers(20, 48)), int(rng.integers(20, 48))
    rgb = Image.fromarray(photo(rng, h, w))
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "jpeg":
        rgb.save(path, quality=90)
    elif kind == "png":
        rgb.save(path)
    elif kind == "grey":
        rgb.convert("L").save(path, quality=90)
    elif kind == "cmyk":
        rgb.convert("CMYK").save(path, quality=90)
    elif kind == "rgba":
        rgba = rgb.convert("RGBA")
        rgba.putalpha(Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)))
        rgba.save(path)
    elif kind == "palette":
        rgb.convert("P").save(path)
    elif kind == "i16":
        Image.fromarray(photo(rng, h, w)[..., 0].astype(np.uint16) * 257).save(path)
    elif kind == "exif":
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 degrees on display
        Image.fromarray(photo(rng, 20, 44)).save(path, quality=90, exif=exif.tobytes())
    elif kind == "large":
        Image.fromarray(photo(rng, 300, 400)).save(path, quality=90)  # draft mode decodes it at 1/8
    else:
        raise ValueError(kind)


def sentences(rng: np.random.Generator, n: int, *, long: bool = False) -> list[dict]:
    out = []
    for _ in range(n):
        words = rng.choice(WORDS, size=int(rng.integers(12, 16) if long else rng.integers(3, 9)))
        out.append({"raw": " ".join(words).capitalize() + ".", "tokens": [str(w) for w in words]})
    return out


GOOD_KINDS = ["jpeg", "png", "grey", "cmyk", "rgba", "palette", "i16", "exif", "large", "jpeg", "jpeg", "png"]


def write_coco_like(root: Path, seed: int = 0) -> tuple[Path, dict]:
    """COCO-like Karpathy JSON + train2014/val2014 folders, every bad case included.

    Returns the JSON path and the expected outcome (per-split good entries and skip reasons).
    """
    rng = np.random.default_rng(seed)
    entries, expect = [], {"problems": {}}
    splits = ["train", "restval", "val", "test"]
    imgid = 0

    def add(split: str, kind: str | None, *, name: str | None = None, filepath: str | None = None, n_sent: int = 5,
            long: bool = False, **overrides) -> dict:
        nonlocal imgid
        folder = filepath if filepath is not None else ("train2014" if split in ("train", "restval") else "val2014")
        cocoid = 100_000 + 7 * imgid
        name = name or f"COCO_{folder}_{cocoid:012d}.{'png' if kind in ('png', 'rgba', 'palette', 'i16') else 'jpg'}"
        if kind is not None:
            save_kind(root / folder / name, kind, rng)
        entry = {"filepath": folder, "filename": name, "imgid": imgid, "cocoid": cocoid, "split": split,
                 "sentids": [], "sentences": sentences(rng, n_sent, long=long)}
        entry.update(overrides)
        entries.append(entry)
        imgid += 1
        return entry

    for i, kind in enumerate(GOOD_KINDS * 2):
        add(splits[i % 4], kind, long=(i == 4))
    add("train", "jpeg", n_sent=7)  # COCO has 5-7 captions per image
    # bad images
    problems = expect["problems"]
    e = add("train", None)
    problems[f"train2014/{e['filename']}"] = ("missing_image", "image file not found")
    e = add("val", "jpeg")
    data = (root / "val2014" / e["filename"]).read_bytes()
    (root / "val2014" / e["filename"]).write_bytes(data[: len(data) // 2])  # truncated JPEG
    problems[f"val2014/{e['filename']}"] = ("bad_image", "cannot decode image")
    e = add("train", None, name="garbage.jpg")
    (root / "train2014" / "garbage.jpg").write_bytes(b"this is not an image at all")
    problems["train2014/garbage.jpg"] = ("bad_image", "cannot decode image")
    e = add("test", None, name="bomb.png")
    bomb_png(root / "val2014" / "bomb.png")
    problems["val2014/bomb.png"] = ("image_too_large", "image too large")
    # bad entries
    e = add("train", "jpeg")
    e["sentences"][1] = {"raw": "!!! ..."}
    problems[f"train2014/{e['filename']}"] = ("empty_caption", "1 empty caption(s)")
    e = add("train", "jpeg")
    e["sentences"] = [{"raw": "  "}, {"raw": "?"}]
    problems[f"train2014/{e['filename']}"] = ("no_captions", "no usable caption; image skipped")
    e = add("train", "jpeg")
    del e["sentences"]
    problems[f"train2014/{e['filename']}"] = ("no_captions", "entry has no sentences; image skipped")
    e = add("val", "jpeg", sentences=[])
    problems[f"val2014/{e['filename']}"] = ("no_captions", "entry has no sentences; image skipped")
    save_kind(root / "outside.jpg", "jpeg", rng)
    add("train", None, name="../outside.jpg")
    problems["train2014/../outside.jpg"] = ("unsafe_path", "escapes the image folder")
    add("train", None, name="/etc/hostname", filepath="")
    problems["/etc/hostname"] = ("unsafe_path", "escapes the image folder")
    add("test", None, name="x.jpg", filepath="../../")
    problems["../../x.jpg"] = ("unsafe_path", "escapes the image folder")

    path = root / "dataset_coco.json"
    path.write_text(json.dumps({"dataset": "coco", "images": entries}))
    return path, expect


def record_loads(monkeypatch, *, interrupt_at: int = 0) -> list[str]:
    """Record every path preprocessing decodes; with ``interrupt_at``, raise KeyboardInterrupt at that call."""
    import preprocess.stores as stores

    real, calls = load_image, []  # nic.images.load_image: a second call replaces the first wrapper

    def load(*a, **k):
        calls.append(a[0])
        if len(calls) == interrupt_at:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(stores, "load_image", load)
    return calls


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> tuple[Path, dict]:
    return write_coco_like(tmp_path_factory.mktemp("coco"))


def good_entries(json_path: Path, expect: dict, *, restval: str = "train") -> dict[str, list[dict]]:
    """The entries that must end up in each split's store, in order."""
    out: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for e in json.loads(json_path.read_text())["images"]:
        item = f"{e['filepath'].rstrip('/')}/{e['filename']}" if e["filepath"] else e["filename"]
        kind = expect["problems"].get(item, ("ok",))[0]
        if kind not in ("ok", "empty_caption"):
            continue
        split = e["split"]
        if split == "restval":
            if restval == "drop":
                continue
            split = "train"
        out[split].append(e)
    return out


def assert_roundtrip(store_file: Path, entries: list[dict], image_dir: Path, vocab: Vocabulary, max_len: int,
                     *, per_image: int = 0) -> None:
    """Stored rows are exactly the entries: ids, captions, references, pixels."""
    store = StoreReader(store_file)
    assert store.num_images == len(entries)
    assert store.image_ids.tolist() == [e.get("cocoid", e["imgid"]) for e in entries]
    refs = store.references()
    for i, e in enumerate(entries):
        caps = [tokenize(s["raw"]) for s in e["sentences"]]
        caps = [c for c in caps if c]
        if per_image:
            caps = caps[:per_image]
        assert refs[i] == caps
        rows = np.flatnonzero(store.caption_image == i)
        assert [vocab.decode(store.captions[r][: store.caption_lengths[r]]) for r in rows] == \
            [[w if w in vocab else "<unk>" for w in c[:max_len]] for c in caps]
        rel = f"{e['filepath']}/{e['filename']}" if e["filepath"] else e["filename"]
        np.testing.assert_array_equal(store.image(i), load_image(image_dir / rel, store.image_size))
    assert store.filenames() == [f"{e['filepath']}/{e['filename']}" if e["filepath"] else e["filename"]
                                 for e in entries]
    store.close()


def h5_contents(path: Path) -> dict:
    """Every dataset (values, dtype, chunks) and attribute of an HDF5 file."""
    out = {}
    with h5py.File(path, "r") as f:
        out["attrs"] = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
        for name, ds in f.items():
            out[name] = (ds.dtype.str, ds.shape, ds.chunks, ds[()].tolist())
    return out


def assert_same_stores(a: Path, b: Path) -> None:
    for split in SPLITS:
        assert h5_contents(a / f"{split}.h5") == h5_contents(b / f"{split}.h5"), split
    assert (a / "vocab.json").read_text() == (b / "vocab.json").read_text()
    assert json.loads((a / "report.json").read_text()) == json.loads((b / "report.json").read_text())


# --------------------------------------------------------------------------- COCO
def test_coco_like_dataset_through_the_cli(coco, tmp_path, capsys):
    json_path, expect = coco
    root = json_path.parent
    report_copy = tmp_path / "elsewhere" / "report.json"
    rc = cli.main(["--dataset", "coco", "--root", str(root), "--store-dir", str(tmp_path / "stores"),
                   "--image-size", str(S), "--min-count", "2", "--max-len", "8", "--workers", "2",
                   "--report", str(report_copy), "--quiet"])
    assert rc == 0
    report = json.loads(report_copy.read_text())
    assert report == json.loads((tmp_path / "stores" / "report.json").read_text())
    # every problem is listed once, with its reason, under its split
    listed = {p["item"]: (p["kind"], p["reason"]) for s in report["splits"].values() for p in s["skipped_items"]}
    assert set(listed) == set(expect["problems"])
    for item, (kind, reason) in expect["problems"].items():
        assert listed[item][0] == kind, item
        assert reason in listed[item][1], (item, listed[item])
    assert report["problems"]["total"] == len(expect["problems"])
    assert report["problems"]["by_kind"] == {"bad_image": 2, "empty_caption": 1, "image_too_large": 1,
                                             "missing_image": 1, "no_captions": 3, "unsafe_path": 3}
    good = good_entries(json_path, expect)
    vocab = Vocabulary.load(tmp_path / "stores" / "vocab.json")
    for split, entries in good.items():
        s = report["splits"][split]
        assert s["images"] == len(entries)
        assert s["captions"] == sum(len([x for x in e["sentences"] if tokenize(x["raw"])]) for e in entries)
        assert_roundtrip(tmp_path / "stores" / f"{split}.h5", entries, root, vocab, max_len=8)
        assert check_store(tmp_path / "stores" / f"{split}.h5")["vocab_hash"] == vocab.hash()
    assert report["splits"]["train"]["images_skipped"] == 6  # missing, garbage, 2 no captions, 2 unsafe
    # the vocabulary records its settings and counts
    assert vocab.settings == {"min_count": 2, "max_size": None, "max_len": 8, "long_captions": "truncate",
                              "captions_per_image": 0}
    train_caps = [tokenize(x["raw"]) for e in good["train"] for x in e["sentences"]]
    train_caps = [c for c in train_caps if c]
    assert vocab.stats["captions"] == len(train_caps)
    assert vocab.stats["captions_truncated"] == sum(len(c) > 8 for c in train_caps) > 0
    assert vocab.stats["captions_dropped_empty"] == 3  # 1 + an entry with 2, all empty
    # the summary names the count; a re-run with the same inputs is instant and identical
    rc = cli.main(["--dataset", "coco", "--root", str(root), "--store-dir", str(tmp_path / "stores"),
                   "--image-size", str(S), "--min-count", "2", "--max-len", "8"])
    out = capsys.readouterr().out
    assert rc == 0 and f"problems: {len(expect['problems'])} skipped" in out and "report.json" in out


def test_restval_drop_long_caption_drop_and_captions_per_image(coco, tmp_path):
    json_path, expect = coco
    cfg = DataConfig(dataset="coco", root=str(json_path.parent), store_dir=str(tmp_path / "s"), image_size=S,
                     min_count=1, max_len=10, restval="drop", long_captions="drop", captions_per_image=3,
                     preprocess_workers=1)
    prepare(cfg, progress=False)
    report = json.loads((tmp_path / "s" / "report.json").read_text())
    vocab = Vocabulary.load(tmp_path / "s" / "vocab.json")
    good = good_entries(json_path, expect, restval="drop")
    train = report["splits"]["train"]
    assert train["images"] == len(good["train"]) - 1  # the entry whose captions are all long is skipped
    long_entry = next(e for e in good["train"] if all(len(tokenize(s["raw"])) > 10 for s in e["sentences"]))
    item = f"train2014/{long_entry['filename']}"
    assert any(p["item"] == item and "longer than max_len=10" in p["reason"] for p in train["skipped_items"])
    assert train["captions"] == 3 * train["images"]  # every kept train image has >= 3 short captions
    assert train["captions_dropped_long"] == 5 and train["captions_truncated"] == 0
    assert train["captions_over_limit"] == vocab.stats["captions_over_limit"] > 0
    assert vocab.settings["long_captions"] == "drop" and vocab.settings["captions_per_image"] == 3
    # val/test keep every caption as a reference
    kept = [e for e in good["train"] if e is not long_entry]
    assert_roundtrip(tmp_path / "s" / "train.h5", kept, json_path.parent, vocab, max_len=10, per_image=3)
    assert_roundtrip(tmp_path / "s" / "val.h5", good["val"], json_path.parent, vocab, max_len=10)


def test_strict_makes_the_first_problem_fatal(coco, tmp_path, capsys):
    json_path, _ = coco
    rc = cli.main(["--dataset", "coco", "--root", str(json_path.parent), "--store-dir", str(tmp_path / "s"),
                   "--image-size", str(S), "--strict", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and "--strict" in err
    assert "dataset_coco.json: train2014/COCO_train2014_" in err and "entry has no sentences" in err
    # a decoding problem names the image file
    records = [r for r in read_karpathy(json_path) if r.path == "train2014/garbage.jpg"]
    with pytest.raises(InputProblem, match=r"train2014/garbage\.jpg: cannot decode image"):
        build_stores(records, image_dir=json_path.parent, store_dir=tmp_path / "t", dataset="coco", image_size=S,
                     min_count=1, strict=True, progress=False)
    assert not (tmp_path / "t" / "train.h5").exists()


def test_workers_do_not_change_the_output(coco, tmp_path):
    json_path, _ = coco
    for workers in (1, 2):
        cfg = DataConfig(dataset="coco", root=str(json_path.parent), store_dir=str(tmp_path / f"w{workers}"),
                         image_size=S, min_count=1, preprocess_workers=workers)
        prepare(cfg, progress=False)
    assert_same_stores(tmp_path / "w1", tmp_path / "w2")


def decoding_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("nic-decode")]


def test_decode_images_threads_match_in_process(coco):
    import preprocess.stores as stores

    json_path, _ = coco
    paths = [str(json_path.parent / r.path) for r in read_karpathy(json_path)] + [str(json_path.parent / "no.jpg")]
    filters = list(warnings.filters)
    want = list(stores.decode_images(paths, S, workers=1))
    kinds = {problem[0] for _, problem in want if problem is not None}
    assert kinds == {"missing_image", "bad_image", "image_too_large"}  # garbage, bomb, missing: skips, not errors
    for workers in (2, 3):
        got = list(stores.decode_images(paths, S, workers=workers))
        assert len(got) == len(want)
        for (a, pa), (b, pb) in zip(got, want):
            assert pa == pb
            assert (a is None and b is None) or np.array_equal(a, b)
    assert want[-1] == (None, ("missing_image", "image file not found"))
    assert warnings.filters == filters  # load_image's per-call warning filter neither leaks nor goes missing
    assert not decoding_threads()


def test_decode_images_closed_early_or_interrupted_leaves_no_thread(monkeypatch):
    import preprocess.stores as stores

    it = stores.decode_images(iter(lambda: "nothing.jpg", None), 8, workers=2)  # endless
    assert [next(it) for _ in range(20)][-1] == (None, ("missing_image", "image file not found"))
    assert decoding_threads()
    it.close()
    assert not decoding_threads()
    # an exception that is no image problem (a KeyboardInterrupt raised in a decoding thread) stops the run
    calls = record_loads(monkeypatch, interrupt_at=5)
    with pytest.raises(KeyboardInterrupt):
        list(stores.decode_images([f"{i}.jpg" for i in range(100)], 8, workers=2))
    assert not decoding_threads()
    assert len(calls) < 100  # the queued images were dropped


# ------------------------------------------------------------------- kill and resume
CHILD = """
import sys, time
sys.path.insert(0, {root!r})
import preprocess.stores as stores
decode = stores.load_image
def slow(*args, **kwargs):
    time.sleep(0.04)
    return decode(*args, **kwargs)
stores.load_image = slow
from preprocess.__main__ import main
sys.exit(main({args!r}))
"""


def coco_args(json_path: Path, store_dir: Path) -> list[str]:
    return ["--dataset", "coco", "--root", str(json_path.parent), "--store-dir", str(store_dir),
            "--image-size", str(S), "--min-count", "1", "--checkpoint-every", "3", "--quiet"]


def test_kill_9_half_way_then_resume_gives_the_identical_store(coco, tmp_path, monkeypatch):
    json_path, _ = coco
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert cli.main(coco_args(json_path, reference) + ["--workers", "1"]) == 0
    args = coco_args(json_path, killed) + ["--workers", "2"]  # killed while its decoding threads run
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(root=str(ROOT), args=args)])
    progress = killed / "train.h5.progress.json"
    deadline = time.time() + 60
    done = 0
    while time.time() < deadline and child.poll() is None:
        try:
            done = json.loads(progress.read_text())["records_done"]
        except (OSError, ValueError, KeyError):
            done = 0
        if done >= 6:
            break
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)  # kill -9: no cleanup of any kind
    assert child.wait(30) == -signal.SIGKILL and done >= 6
    assert not (killed / "train.h5").exists() and not (killed / "manifest.json").exists()
    assert (killed / "train.h5.partial").exists()
    # the re-run resumes from the last checkpoint, decoding only what is left
    calls = record_loads(monkeypatch)
    assert cli.main(args) == 0
    n_train = json.loads((reference / "report.json").read_text())["splits"]["train"]
    n_records = n_train["images"] + sum(p["kind"] in ("missing_image", "bad_image") for p in n_train["skipped_items"])
    assert len([c for c in calls if "train2014" in c]) <= n_records - done
    assert_same_stores(reference, killed)
    assert not list(killed.glob("*.partial"))


def test_ctrl_c_resume_and_a_changed_input_starts_over(coco, tmp_path, monkeypatch):
    json_path, _ = coco
    calls = record_loads(monkeypatch, interrupt_at=10)
    args = coco_args(json_path, tmp_path / "s") + ["--workers", "1", "--checkpoint-every", "4"]
    assert cli.main(args) == 130
    state = json.loads((tmp_path / "s" / "train.h5.progress.json").read_text())
    assert state["records_done"] == 8 and not state["complete"]
    calls = record_loads(monkeypatch)
    assert cli.main(args) == 0
    total = sum(json.loads((tmp_path / "s" / f"{s}.h5.progress.json").read_text())["records"]
                for s in ("train", "val", "test"))
    assert len(calls) == total - 8
    assert cli.main(coco_args(json_path, tmp_path / "ref") + ["--workers", "1"]) == 0
    assert_same_stores(tmp_path / "ref", tmp_path / "s")
    # other caption settings re-caption the stores without decoding the images again ...
    calls.clear()
    recaption = ["--max-len", "5", "--min-count", "2", "--workers", "1"]
    assert cli.main(coco_args(json_path, tmp_path / "s") + recaption) == 0
    assert calls == [] and check_store(tmp_path / "s" / "train.h5")["max_len"] == 5
    assert cli.main(coco_args(json_path, tmp_path / "ref5") + ["--max-len", "5", "--min-count", "2"]) == 0
    assert_same_stores(tmp_path / "ref5", tmp_path / "s")
    # ... while another image size decodes them again
    calls.clear()
    assert cli.main(coco_args(json_path, tmp_path / "s") + ["--image-size", "8", "--workers", "1"]) == 0
    assert len(calls) == total and check_store(tmp_path / "s" / "train.h5")["image_size"] == 8


# ------------------------------------------------------------------ the command line
def test_cli_overrides_reach_the_data_config(tmp_path):
    args, data = cli.parse_args(["--data.image_size=32", "--data.min_count=2", "--data.root=x", "--data.strict=true",
                                 "--data.val_fraction=0.1", "--data.karpathy_json=k.json"])
    assert data == DataConfig(image_size=32, min_count=2, root="x", strict=True, val_fraction=0.1,
                              karpathy_json="k.json")
    assert not (args.force or args.quiet) and args.report is None and args.checkpoint_every is None
    assert cli.parse_args([])[1] == DataConfig()
    # the short flags are the same overrides, applied in command-line order (the last one wins)
    short = ["--image-size", "32", "--min-count=2", "--root", "x", "--strict", "--val-fraction", "0.1",
             "--karpathy-json", "k.json"]
    assert cli.parse_args(short)[1] == data
    assert cli.parse_args(["--min-count", "3", "--data.min_count=4"])[1].min_count == 4
    assert cli.parse_args(["--data.min_count=4", "--min-count", "3"])[1].min_count == 3
    assert cli.parse_args(["--workers", "3"])[1].preprocess_workers == 3
    # a text setting keeps its text, whatever YAML would make of it
    quoted = cli.parse_args(["--root", "yes", "--dataset", "0123", "--image-dir", "", "--store-dir", "a: b #c"])[1]
    assert (quoted.root, quoted.dataset, quoted.image_dir, quoted.store_dir) == ("yes", "0123", "", "a: b #c")
    # --config: that config's data section (what train.py would build), overrides on top
    assert cli.parse_args(["--config", str(ROOT / "configs" / "default.yaml")])[1] == \
        load_config(ROOT / "configs" / "default.yaml").data
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  dataset: coco\n  image_size: 299\ntrain:\n  epochs: 3\n")
    args, data = cli.parse_args(["--config", str(config), "--data.image_size=64", "--quiet", "--force",
                                 "--checkpoint-every", "7", "--report", "r.json"])
    assert (data.dataset, data.image_size) == ("coco", 64)
    assert (args.quiet, args.force, args.checkpoint_every, args.report) == (True, True, 7, "r.json")


@pytest.mark.parametrize("argv, named", [
    (["--data.image_sise=32"], "['image_sise']"),
    (["--image-sise", "32"], "--image-sise"),
    (["--data.min_count=abc"], "data.min_count: expected int"),
    (["--min-count"], "argument --min-count: expected one argument"),
    (["--restval", "bogus"], "data.restval: invalid choice: 'bogus'"),
    (["--data.long_captions=cut"], "data.long_captions: invalid choice: 'cut'"),
    (["--config", "nothere.yaml"], "nothere.yaml: config file not found"),
])
def test_cli_unknown_key_or_bad_value_is_an_error_naming_it(argv, named, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2 and named in capsys.readouterr().err


def test_cli_config_file_and_overrides_build_the_same_stores_as_the_short_flags(coco, tmp_path):
    json_path, _ = coco
    config = tmp_path / "c.yaml"
    config.write_text(f"data:\n  dataset: coco\n  root: {json.dumps(str(json_path.parent))}\n  image_size: {S}\n"
                      "  min_count: 5\n  preprocess_workers: 1\n")
    assert cli.main(["--config", str(config), f"--data.store_dir={tmp_path / 'long'}", "--data.min_count=2",
                     "--data.max_len=8", "--quiet"]) == 0
    assert cli.main(["--dataset", "coco", "--root", str(json_path.parent), "--store-dir", str(tmp_path / "short"),
                     "--image-size", str(S), "--min-count", "2", "--max-len", "8", "--workers", "1", "--quiet"]) == 0
    assert_same_stores(tmp_path / "long", tmp_path / "short")
    assert check_store(tmp_path / "long" / "train.h5")["max_len"] == 8


# --------------------------------------------------------------------- Flickr, custom
def test_flickr_like_single_folder(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    folder = tmp_path / "Flicker8k_Dataset"
    entries = []
    for i in range(10):
        name = f"{1000 + i}_{i:04x}.jpg"
        save_kind(folder / name, ["jpeg", "grey", "exif"][i % 3], rng)
        entries.append({"filename": name, "imgid": i, "sentids": list(range(5 * i, 5 * i + 5)),
                        "split": ["train", "train", "train", "val", "test"][i % 5], "sentences": sentences(rng, 5)})
    (tmp_path / "dataset_flickr8k.json").write_text(json.dumps({"dataset": "flickr8k", "images": entries}))
    cfg = DataConfig(dataset="flickr8k", root=str(tmp_path), image_dir="Flicker8k_Dataset", image_size=S,
                     min_count=1, preprocess_workers=1)
    store_dir = prepare(cfg, progress=False)
    vocab = Vocabulary.load(store_dir / "vocab.json")
    for split in SPLITS:
        want = [e for e in entries if e["split"] == split]
        for e in want:
            e["filepath"] = ""
        assert_roundtrip(store_dir / f"{split}.h5", want, folder, vocab, max_len=20)
    # the CLI's spelling of the same inputs finds the finished build without reading the JSON again
    import preprocess.build as build

    monkeypatch.setattr(build, "read_records", lambda *a, **k: pytest.fail("inputs read again"))
    assert cli.main(["--dataset", "flickr8k", "--root", str(tmp_path), "--karpathy-json",
                     str(tmp_path / "dataset_flickr8k.json"), "--image-dir", "Flicker8k_Dataset/",
                     "--image-size", str(S), "--min-count", "1", "--quiet"]) == 0
    monkeypatch.undo()
    # a wrong image folder fails at once, naming what it looked for
    cfg.image_dir, cfg.store_dir = "images", str(tmp_path / "other")
    with pytest.raises(DatasetFormatError, match="image folder .*images not found"):
        prepare(cfg, progress=False)
    cfg.image_dir = ""
    with pytest.raises(DatasetFormatError, match="none of 10 sampled images exists"):
        prepare(cfg, progress=False)


def write_custom_images(folder: Path, names: list[str]) -> None:
    rng = np.random.default_rng(2)
    for name in names:
        save_kind(folder / name, "jpeg", rng)


def test_custom_csv_with_splits(tmp_path):
    write_custom_images(tmp_path / "photos", ["a.jpg", "b.jpg", "c.jpg", "sub/d.jpg"])
    (tmp_path / "caps.csv").write_text(
        "split,image,caption,photographer\n"
        'train,a.jpg,"A dog, a ball and grass.",me\n'
        "train,a.jpg,The dog runs.,me\n"
        "train,b.jpg,Two cats sit.,you\n"
        "train,b.jpg,  ,you\n"
        "val,c.jpg,A red ball.,me\n"
        "test,sub/d.jpg,A man sits near the dog.,me\n"
        "train,../x.jpg,Escaping.,me\n"
        "train,missing.jpg,Nobody.,me\n", encoding="utf-8")
    rc = cli.main(["--dataset", "custom", "--root", str(tmp_path), "--captions", "caps.csv", "--image-dir", "photos",
                   "--image-size", str(S), "--min-count", "1", "--workers", "1", "--quiet"])
    assert rc == 0
    report = json.loads((tmp_path / "stores" / "report.json").read_text())
    assert {p["item"]: p["kind"] for s in report["splits"].values() for p in s["skipped_items"]} == {
        "b.jpg": "empty_caption", "../x.jpg": "unsafe_path", "missing.jpg": "missing_image"}
    train = StoreReader(tmp_path / "stores" / "train.h5")
    assert train.filenames() == ["a.jpg", "b.jpg"] and train.image_ids.tolist() == [0, 1]
    assert train.references() == [[tokenize("A dog, a ball and grass."), tokenize("The dog runs.")],
                                  [tokenize("Two cats sit.")]]
    np.testing.assert_array_equal(train.image(1), load_image(tmp_path / "photos" / "b.jpg", S))
    assert StoreReader(tmp_path / "stores" / "test.h5").filenames() == ["sub/d.jpg"]
    # headerless CSV and TSV read the same
    (tmp_path / "caps.tsv").write_text("a.jpg\tA dog.\ttrain\nc.jpg\tA ball.\tval\n")
    assert [(r.path, r.split) for r in read_custom(tmp_path / "caps.tsv")] == [("a.jpg", "train"), ("c.jpg", "val")]


def test_custom_jsonl_random_split_is_seeded(tmp_path):
    names = [f"{i:03d}.jpg" for i in range(40)]
    lines = [json.dumps({"image": n, "caption": f"a dog number {i}"}) for i, n in enumerate(names)]
    lines += [json.dumps({"image": n, "caption": "another red ball"}) for n in names[:5]]
    (tmp_path / "caps.jsonl").write_text("\n".join(lines) + "\n\n")
    records = read_custom(tmp_path / "caps.jsonl", val_fraction=0.1, test_fraction=0.2, seed=3)
    splits = {r.path: r.split for r in records}
    assert sorted(splits.values()).count("val") == 4 and sorted(splits.values()).count("test") == 8
    assert splits == {r.path: r.split for r in read_custom(tmp_path / "caps.jsonl", val_fraction=0.1,
                                                           test_fraction=0.2, seed=3)}
    assert splits != {r.path: r.split for r in read_custom(tmp_path / "caps.jsonl", val_fraction=0.1,
                                                           test_fraction=0.2, seed=4)}
    assert [len(r.captions) for r in records[:6]] == [2, 2, 2, 2, 2, 1]
    assert [r.image_id for r in records] == list(range(40))


@pytest.mark.parametrize("name, text, message", [
    ("c.jsonl", '{"image": "a.jpg", "caption": "ok"}\n{"image": "b.jpg", "caption": \n', r"c\.jsonl:2: malformed JSON"),
    ("c.jsonl", '{"picture": "a.jpg", "caption": "ok"}\n', r"c\.jsonl:1: expected an object with string fields"),
    ("c.csv", "image,caption,split\na.jpg,ok,train\na.jpg,ok,val\n", r"c\.csv:3: image 'a\.jpg' is in split 'val'"),
    ("c.csv", "image,caption,split\na.jpg,ok,dev\n", r"c\.csv:2: unknown split 'dev'"),
    ("c.csv", "a.jpg\n", r"c\.csv:1: expected a header row"),
    ("c.txt", "a.jpg,ok\n", r"c\.txt: unknown captions file type"),
])
def test_custom_format_errors_name_file_and_line(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(DatasetFormatError, match=message):
        read_custom(tmp_path / name)


# ----------------------------------------------------------------- readers and images
def test_karpathy_layout_errors(tmp_path):
    bad = tmp_path / "captions_train2014.json"
    bad.write_text(json.dumps({"info": {}, "images": [{"file_name": "x.jpg", "id": 1}], "annotations": []}))
    with pytest.raises(DatasetFormatError, match="COCO annotations file.*dataset_coco.json"):
        read_karpathy(bad)
    bad.write_text(json.dumps({"images": [{"file_name": "x.jpg", "id": 1}]}))
    with pytest.raises(DatasetFormatError, match=r"images\[0\]: expected an object with 'filename'"):
        read_karpathy(bad)
    bad.write_text(json.dumps({"images": [{"filename": "x.jpg", "split": "train", "sentences": [{"text": "a"}]}]}))
    with pytest.raises(DatasetFormatError, match="needs 'raw'"):
        read_karpathy(bad)
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        read_karpathy(tmp_path / "nothere.json")
    log = ProblemLog()
    bad.write_text(json.dumps({"images": [{"filename": "x.jpg", "split": "restval", "cocoid": 5,
                                           "sentences": [{"tokens": ["A", "Dog"]}]}]}))
    records = read_karpathy(bad, problems=log)
    assert [(r.split, r.image_id, r.captions) for r in records] == [("train", 5, [["a", "dog"]])]
    assert read_karpathy(bad, restval="drop") == [] and not log.items


@pytest.mark.parametrize("parts, expected", [
    (("train2014", "a.jpg"), "train2014/a.jpg"), (("", "a.jpg"), "a.jpg"), (("./x/", "./b/c.png"), "x/b/c.png"),
    (("..", "a.jpg"), None), (("", "a/../../b.jpg"), None), (("", "/etc/passwd"), None),
    (("C:\\data", "a.jpg"), None), (("", "\\\\server\\share\\a.jpg"), None), (("", ""), None),
])
def test_safe_relative_path(parts, expected):
    assert safe_relative_path(*parts) == expected


def test_load_image_modes_exif_draft_and_pixel_limit(tmp_path):
    rng = np.random.default_rng(5)
    names = {"grey": "grey.jpg", "cmyk": "cmyk.jpg", "rgba": "rgba.png", "palette": "p.png", "i16": "i16.png"}
    for kind, name in names.items():
        save_kind(tmp_path / name, kind, rng)
        arr = load_image(tmp_path / name, S)
        assert arr.shape == (3, S, S) and arr.dtype == np.uint8, kind
    grey = load_image(tmp_path / "grey.jpg", S)
    assert (grey[0] == grey[1]).all() and (grey[1] == grey[2]).all()
    # EXIF orientation 6: a landscape file shows as portrait; the top rows are the file's left columns
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(tmp_path / "rot.jpg", quality=95, exif=exif.tobytes())
    rot = load_image(tmp_path / "rot.jpg", 20).astype(int)
    assert rot[0, :8].mean() > 200 and rot[0, 12:].mean() < 60  # red on top after rotation
    # a large JPEG is decoded at reduced size (draft) and still matches a full decode closely
    Image.fromarray(photo(rng, 480, 640)).save(tmp_path / "big.jpg", quality=90)
    with Image.open(tmp_path / "big.jpg") as im:
        full = np.asarray(im.convert("RGB").resize((S, S), Image.BICUBIC)).transpose(2, 0, 1).astype(int)
    assert np.abs(load_image(tmp_path / "big.jpg", S).astype(int) - full).mean() < 6
    # decompression bombs are refused before decoding
    bomb_png(tmp_path / "bomb.png")
    with pytest.raises(ImageTooLarge, match="decompression bomb"):
        load_image(tmp_path / "bomb.png", S)
    with pytest.raises(ImageTooLarge, match="640x480 = 307,200 pixels is over the limit of 1,000"):
        load_image(tmp_path / "big.jpg", S, max_pixels=1000)
    data = (tmp_path / "big.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(OSError):
        load_image(tmp_path / "cut.jpg", S)


def test_max_pixels_setting_skips_and_reports(coco, tmp_path):
    json_path, _ = coco
    cfg = DataConfig(dataset="coco", root=str(json_path.parent), store_dir=str(tmp_path / "s"), image_size=S,
                     min_count=1, max_pixels=2000, preprocess_workers=1)
    prepare(cfg, progress=False)
    report = json.loads((tmp_path / "s" / "report.json").read_text())
    too_large = [p for s in report["splits"].values() for p in s["skipped_items"] if p["kind"] == "image_too_large"]
    assert any("over the limit of 2,000" in p["reason"] for p in too_large)
    assert len(too_large) >= 2
