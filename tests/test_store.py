"""Preprocessing into HDF5 stores: counts, round trips, atomicity, lazy per-worker reading."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from nic.data import CaptionDataset, ImageDataset, make_loader
from nic.images import load_image
from nic.store import SCHEMA, StoreReader, check_store
from nic.vocab import Vocabulary, tokenize
from preprocess.build import build_stores
from preprocess.karpathy import DatasetFormatError, read_karpathy


def build(fixture, tmp_path, **kw):
    records = read_karpathy(fixture)
    return records, build_stores(records, image_dir=fixture.parent, store_dir=tmp_path / "stores", dataset="tiny",
                                 image_size=kw.pop("image_size", 32), min_count=1, progress=False, **kw)


def test_store_schema_and_roundtrip(karpathy_fixture, tmp_path):
    records, report = build(karpathy_fixture, tmp_path, max_len=5)
    vocab = Vocabulary.load(tmp_path / "stores" / "vocab.json")
    train = [r for r in records if r.split == "train"]
    assert report["splits"]["train"]["images"] == len(train) == 6
    assert report["vocab"]["size"] == len(vocab)
    store = StoreReader(tmp_path / "stores" / "train.h5")
    with h5py.File(store.path) as f:
        assert set(SCHEMA) <= set(f)
        assert f["images"].dtype == np.uint8 and f["images"].shape == (6, 3, 32, 32)
        assert f["images"].chunks == (1, 3, 32, 32)
        assert f["captions"].shape == (12, 5 + 2)
    # every reference caption is kept, untruncated; captions decode to the (truncated) tokens
    data = json.loads(karpathy_fixture.read_text())["images"]
    by_id = {d["cocoid"]: d for d in data}
    refs = store.references()
    truncated = 0
    for i, image_id in enumerate(store.image_ids):
        expected = [tokenize(s["raw"]) for s in by_id[int(image_id)]["sentences"]]
        assert refs[i] == expected
    for row, length, img in zip(store.captions, store.caption_lengths, store.caption_image):
        tokens = vocab.decode(row[:length])
        full = [tokenize(s["raw"]) for s in by_id[int(store.image_ids[img])]["sentences"]]
        assert tokens in [t[:5] for t in full]
        assert row[0] == vocab.start_id and row[length - 1] == vocab.end_id and (row[length:] == 0).all()
        truncated += max(len(t) > 5 for t in full if t[:5] == tokens)
    assert report["splits"]["train"]["captions_truncated"] == truncated
    # pixels equal the reference decode + resize
    first = by_id[int(store.image_ids[0])]
    np.testing.assert_array_equal(store.image(0), load_image(karpathy_fixture.parent / "imgs" / first["filename"], 32))
    assert check_store(store.path)["vocab_hash"] == vocab.hash()


def test_skips_are_counted_and_listed(karpathy_fixture, tmp_path):
    data = json.loads(karpathy_fixture.read_text())
    data["images"][0]["filename"] = "missing.jpg"
    (karpathy_fixture.parent / "imgs" / "1.jpg").write_bytes(b"not a jpeg")
    data["images"][4]["sentences"] = [{"raw": "!!!"}, {"raw": "a dog"}]
    karpathy_fixture.write_text(json.dumps(data))
    _, report = build(karpathy_fixture, tmp_path)
    reasons = {s["item"]: s["reason"] for s in report["splits"]["train"]["skipped_items"]}
    assert reasons["imgs/missing.jpg"] == "image file not found"
    assert reasons["imgs/1.jpg"].startswith("cannot decode image")
    assert reasons["imgs/4.jpg"] == "1 empty caption(s)"
    assert report["splits"]["train"]["images"] == 4
    assert json.loads((tmp_path / "stores" / "report.json").read_text())["splits"]["train"]["skipped"] == 3


def test_malformed_json_names_the_file(tmp_path):
    bad = tmp_path / "dataset_x.json"
    bad.write_text("{")
    with pytest.raises(DatasetFormatError, match="dataset_x.json: malformed JSON"):
        read_karpathy(bad)
    bad.write_text('{"pictures": []}')
    with pytest.raises(DatasetFormatError, match="'images' list"):
        read_karpathy(bad)
    bad.write_text('{"images": [{"filename": "a.jpg", "split": "dev", "sentences": []}]}')
    with pytest.raises(DatasetFormatError, match=r"images\[0\]: unknown split 'dev'"):
        read_karpathy(bad)


def test_rebuild_is_skipped_when_complete_and_partial_files_never_count(karpathy_fixture, tmp_path):
    build(karpathy_fixture, tmp_path)
    store = tmp_path / "stores" / "train.h5"
    mtime = store.stat().st_mtime_ns
    build(karpathy_fixture, tmp_path)
    assert store.stat().st_mtime_ns == mtime  # manifest says complete: nothing rewritten
    build(karpathy_fixture, tmp_path, max_len=3)  # other settings: rebuilt
    assert store.stat().st_mtime_ns != mtime
    assert not list((tmp_path / "stores").glob("*.partial-*"))
    with h5py.File(store, "r+") as f:
        f.attrs["num_images"] = 99
    with pytest.raises(ValueError, match="disagree"):
        check_store(store)


def test_write_failure_leaves_no_store(karpathy_fixture, tmp_path, monkeypatch):
    import preprocess.stores as stores

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(stores, "load_image", boom)
    with pytest.raises(KeyboardInterrupt):
        build(karpathy_fixture, tmp_path)
    assert not (tmp_path / "stores" / "train.h5").exists()
    assert not (tmp_path / "stores" / "manifest.json").exists()
    assert not list((tmp_path / "stores").glob("*.partial-*"))


def test_loaders_with_workers_open_hdf5_lazily(karpathy_fixture, tmp_path):
    build(karpathy_fixture, tmp_path)
    store = StoreReader(tmp_path / "stores" / "train.h5")
    store.image(0)  # open in the parent too: workers must not reuse this handle
    loader = make_loader(CaptionDataset(store), batch_size=4, shuffle=False, num_workers=2)
    batches = list(loader)
    assert sum(len(b["captions"]) for b in batches) == store.num_captions
    b = batches[0]
    assert b["images"].dtype == torch.uint8 and b["images"].shape[1:] == (3, 32, 32)
    assert b["captions"].shape[1] == int(b["lengths"].max())
    np.testing.assert_array_equal(b["images"][0].numpy(), store.image(int(store.caption_image[0])))
    images = list(make_loader(ImageDataset(store, limit=5), batch_size=2, shuffle=False, num_workers=2))
    assert torch.cat([x["index"] for x in images]).tolist() == [0, 1, 2, 3, 4]


def test_image_modes_convert_to_rgb(tmp_path):
    from PIL import Image

    rgba = Image.new("RGBA", (20, 10), (255, 0, 0, 0))
    rgba.save(tmp_path / "a.png")
    Image.new("L", (10, 20), 128).save(tmp_path / "g.jpg")
    Image.new("CMYK", (12, 12), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    Image.new("P", (12, 12)).save(tmp_path / "p.png")
    Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16)).save(tmp_path / "i16.png")
    for name in ("a.png", "g.jpg", "c.jpg", "p.png", "i16.png"):
        arr = load_image(tmp_path / name, 16)
        assert arr.shape == (3, 16, 16) and arr.dtype == np.uint8, name
    assert (load_image(tmp_path / "a.png", 16) == 255).all()  # fully transparent -> white background
    assert (np.abs(load_image(tmp_path / "g.jpg", 16).astype(int) - 128) <= 2).all()
    assert load_image(tmp_path / "i16.png", 16).min() == 255
