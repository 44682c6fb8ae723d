"""Finish a split's HDF5 store (schema: :mod:`nic.store`): captions, metadata, rename into place.

The second phase of writing a store (:mod:`preprocess.stores` decodes the images first):
once the vocabulary is known, :func:`finish_split` writes the per-image and per-caption
datasets into the decoded partial store in blocks, sets the attributes (``fingerprint`` =
:func:`store_fingerprint`, and a ``uid`` derived from it) and renames the file to
``<split>.h5`` (:meth:`nic.h5resume.ResumableH5.commit`); the progress record then says
"complete" and keeps the split's report.

A finished store of the same images whose captions, vocabulary or ``max_len`` changed is
moved back to its partial name and re-captioned: its pixels are not decoded again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from nic.h5resume import ResumableH5, h5_attr
from nic.store import FORMAT, STR_DTYPE, VERSION
from nic.vocab import Vocabulary
from preprocess.karpathy import ImageRecord

CAPTION_BLOCK = 4096  # images per block when the caption datasets are written
PROGRESS_FORMAT = "nic-store-progress"  # the "format" of a store's progress record
PER_IMAGE = ("image_ids", "filenames", "image_meta")
PER_CAPTION = ("captions", "caption_lengths", "caption_image", "references")


def resumable_store(path: str | Path) -> ResumableH5:
    """The partial file and progress record of the store at ``path`` (``<split>.h5``)."""
    return ResumableH5(path, PROGRESS_FORMAT)


def records_digest(records: Sequence[ImageRecord]) -> str:
    """sha256 of everything a store is made from in ``records`` (ids, paths, captions, meta)."""
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps([r.image_id, r.path, r.split, r.captions, r.meta], sort_keys=True,
                            ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def store_fingerprint(records: Sequence[ImageRecord], images_fp: str, vocab: Vocabulary, max_len: int) -> str:
    """What a whole store depends on: its pixels, captions and metadata, vocabulary and max_len."""
    text = json.dumps({"images": images_fp, "records": records_digest(records), "vocab": vocab.hash(),
                       "max_len": max_len}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def kept_indices(state: dict[str, Any]) -> list[int]:
    """Positions of the records whose images were written, in row order."""
    skipped = {p["index"] for p in state["problems"]}
    return [i for i in range(state["records"]) if i not in skipped]


def finish_split(records: Sequence[ImageRecord], path: str | Path, state: dict[str, Any], *, vocab: Vocabulary,
                 max_len: int, dataset: str, split: str, image_size: int) -> dict[str, Any]:
    """Write captions and metadata into the decoded store, then rename it into place.

    ``state``: the progress record :func:`preprocess.stores.decode_split` returned. A
    finished store of the same images whose captions, vocabulary or ``max_len`` changed
    is moved back to its partial name and re-captioned: its pixels are not decoded again.
    Returns the split report: ``images``, ``captions``, ``captions_truncated`` (longer than
    ``max_len``: stored truncated, kept whole in ``references``), ``images_skipped``,
    ``skipped`` (number of problems) and ``skipped_items`` (``{"item", "reason", "kind"}``).
    """
    store = resumable_store(path)
    store_fp = store_fingerprint(records, state["fingerprint"], vocab, max_len)
    if state["complete"] and state.get("store_fingerprint") == store_fp:
        store.finish_rename()  # finished, but killed before the rename
        if h5_attr(store.path, "fingerprint") == store_fp:
            return state["report"]
    if state["complete"]:  # from now on the old report and fingerprint are void
        state.update(complete=False, store_fingerprint=None, report=None)
        store.write_progress(state)
    if not store.partial.exists():
        if h5_attr(store.path, "images_fingerprint") != state["fingerprint"]:
            raise RuntimeError(f"{store.path}: no decoded images to finish; delete {store.progress} and re-run")
        store.reopen()  # re-caption a finished store: keep its pixels
    with h5py.File(store.partial, "r+") as f:
        report = _finish(f, records, state, vocab=vocab, max_len=max_len, dataset=dataset, split=split,
                         image_size=image_size, fingerprint=store_fp)
    state.update(complete=True, store_fingerprint=store_fp, report=report)
    store.commit(state)
    return report


def _finish(f: h5py.File, records: Sequence[ImageRecord], state: dict[str, Any], *, vocab: Vocabulary,
            max_len: int, dataset: str, split: str, image_size: int, fingerprint: str) -> dict[str, Any]:
    """Write the per-image and per-caption datasets and the attributes; return the split report."""
    if "fingerprint" in f.attrs:  # a half-rewritten file must never carry a finished store's fingerprint
        del f.attrs["fingerprint"]
        f.flush()
    kept = kept_indices(state)
    n = len(kept)
    if n != state["rows_written"]:
        raise RuntimeError(f"internal error: {n} images kept but {state['rows_written']} rows written")
    f["images"].resize(n, axis=0)
    m = sum(len(records[i].captions) for i in kept)
    ds = _create_datasets(f, n, m, max_len + 2)
    row = cap = n_trunc = 0
    for start in range(0, n, CAPTION_BLOCK):
        block = [records[i] for i in kept[start: start + CAPTION_BLOCK]]
        ds["image_ids"][row: row + len(block)] = np.array([r.image_id for r in block], dtype=np.int64)
        ds["filenames"][row: row + len(block)] = [r.path for r in block]
        ds["image_meta"][row: row + len(block)] = [json.dumps(r.meta, ensure_ascii=False) for r in block]
        tokens = [(row + j, t) for j, r in enumerate(block) for t in r.captions]
        n_trunc += _write_captions(ds, cap, tokens, vocab, max_len)
        row += len(block)
        cap += len(tokens)
    uid = hashlib.sha256(f"uid:{fingerprint}".encode()).hexdigest()[:32]
    f.attrs.update(format=FORMAT, version=VERSION, dataset=dataset, split=split, image_size=image_size,
                   max_len=max_len, vocab_hash=vocab.hash(), uid=uid, num_images=n, num_captions=m,
                   fingerprint=fingerprint)
    f.flush()
    items = [{"item": p["item"], "reason": p["reason"], "kind": p["kind"]} for p in state["problems"]]
    return {"split": split, "images": n, "captions": m, "captions_truncated": n_trunc,
            "images_skipped": len(records) - n, "skipped": len(items), "skipped_items": items}


def _create_datasets(f: h5py.File, n: int, m: int, width: int) -> dict[str, h5py.Dataset]:
    """The per-image (n rows) and per-caption (m rows of ``width`` token slots) datasets, created afresh."""
    for name in (*PER_IMAGE, *PER_CAPTION):
        if name in f:  # an earlier attempt died while finishing
            del f[name]
    return {
        "image_ids": f.create_dataset("image_ids", (n,), np.int64, track_times=False),
        "filenames": f.create_dataset("filenames", (n,), STR_DTYPE, track_times=False),
        "image_meta": f.create_dataset("image_meta", (n,), STR_DTYPE, track_times=False),
        "captions": f.create_dataset("captions", (m, width), np.int32, chunks=(min(max(m, 1), 8192), width),
                                     track_times=False),
        "caption_lengths": f.create_dataset("caption_lengths", (m,), np.int32, track_times=False),
        "caption_image": f.create_dataset("caption_image", (m,), np.int32, track_times=False),
        "references": f.create_dataset("references", (m,), STR_DTYPE, track_times=False),
    }


def _write_captions(ds: dict[str, h5py.Dataset], cap: int, tokens: list[tuple[int, list[str]]], vocab: Vocabulary,
                    max_len: int) -> int:
    """Write ``tokens`` (image row, caption tokens) from caption row ``cap`` on; return how many were truncated."""
    width = ds["captions"].shape[1]
    ids = np.zeros((len(tokens), width), dtype=np.int32)  # (b, L), <pad> = 0
    lengths = np.zeros(len(tokens), dtype=np.int32)
    n_trunc = 0
    for k, (_, t) in enumerate(tokens):
        n_trunc += len(t) > max_len
        encoded = vocab.encode(t[:max_len])
        ids[k, : len(encoded)] = encoded
        lengths[k] = len(encoded)
    ds["captions"][cap: cap + len(tokens)] = ids
    ds["caption_lengths"][cap: cap + len(tokens)] = lengths
    ds["caption_image"][cap: cap + len(tokens)] = np.array([img for img, _ in tokens], dtype=np.int32)
    ds["references"][cap: cap + len(tokens)] = [" ".join(t) for _, t in tokens]
    return n_trunc
