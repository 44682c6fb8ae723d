"""The HDF5 caption store: schema, validation and lazy, fork-safe reading.

One file per split, ``<store_dir>/<split>.h5``, next to ``<store_dir>/vocab.json``.
Written by ``python -m preprocess`` (:mod:`preprocess.stores`), read by :mod:`nic.data`.

Datasets (N images, M captions, L = max_len + 2 token slots)::

    images           uint8   (N, 3, S, S)  RGB, resized to S x S; chunked one image per chunk
    image_ids        int64   (N,)          the dataset's image id (cocoid / imgid)
    filenames        str     (N,)          image path relative to the dataset's image folder
    image_meta       str     (N,)          JSON object of extra per-image annotations
                                           (e.g. the shapes generator's "objects"), "{}" if none
    captions         int32   (M, L)        <start> w1 .. wn <end> <pad>..., ids from vocab.json
    caption_lengths  int32   (M,)          tokens used in each row, <start> and <end> included
    caption_image    int32   (M,)          row of ``images`` each caption belongs to
    references       str     (M,)          the full tokenized caption (space-joined, before
                                           truncation and <unk> mapping), used for BLEU

Attributes: ``format`` ("nic-store"), ``version``, ``dataset``, ``split``,
``image_size`` (S), ``max_len``, ``vocab_hash`` (:meth:`Vocabulary.hash`), ``uid`` (a
random id of this file's content, which feature caches record), ``num_images``,
``num_captions``.

The file is written under a temporary name and renamed when complete (resumably:
:mod:`nic.h5resume`), so a file under the final name is always whole; :func:`check_store`
verifies the schema. :data:`SPLITS` names the splits, one store each.
HDF5 handles must not cross ``fork``: :class:`StoreReader` opens the file on first use
in each process, which is what lets ``DataLoader(num_workers > 0)`` work.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

FORMAT = "nic-store"
VERSION = 1
# The splits a dataset is divided into, in the order they are built and reported; one store each.
SPLITS = ("train", "val", "test")

SCHEMA: dict[str, tuple[str, int]] = {
    # name: (dtype kind, ndim)
    "images": ("u1", 4),
    "image_ids": ("i8", 1),
    "filenames": ("str", 1),
    "image_meta": ("str", 1),
    "captions": ("i4", 2),
    "caption_lengths": ("i4", 1),
    "caption_image": ("i4", 1),
    "references": ("str", 1),
}

STR_DTYPE = h5py.string_dtype(encoding="utf-8")


def store_path(store_dir: str | Path, split: str) -> Path:
    return Path(store_dir) / f"{split}.h5"


def check_store(path: str | Path) -> dict[str, Any]:
    """Open ``path``, check it is a complete nic store, and return its attributes."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: store not found; run `python -m preprocess` to build it")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 file ({e}); delete it and re-run preprocessing") from None
    with f:
        attrs = dict(f.attrs)
        if attrs.get("format") != FORMAT:
            raise ValueError(f"{path}: not a nic store (attribute format={attrs.get('format')!r})")
        if int(attrs.get("version", -1)) != VERSION:
            raise ValueError(f"{path}: store version {attrs.get('version')} != {VERSION}; re-run preprocessing")
        for name, (_, ndim) in SCHEMA.items():
            if name not in f:
                raise ValueError(f"{path}: missing dataset {name!r}; re-run preprocessing")
            if f[name].ndim != ndim:
                raise ValueError(f"{path}: dataset {name!r} has {f[name].ndim} dims, expected {ndim}")
        n, m = f["images"].shape[0], f["captions"].shape[0]
        if (n, m) != (int(attrs["num_images"]), int(attrs["num_captions"])):
            raise ValueError(f"{path}: sizes ({n} images, {m} captions) disagree with its attributes")
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in attrs.items()}


class StoreReader:
    """Lazy, per-process reader of one store; small arrays are loaded once into memory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.attrs = check_store(self.path)
        with h5py.File(self.path, "r") as f:
            self.image_ids = f["image_ids"][:]
            self.captions = f["captions"][:]
            self.caption_lengths = f["caption_lengths"][:]
            self.caption_image = f["caption_image"][:]
        self._file: h5py.File | None = None
        self._pid: int | None = None

    @property
    def num_images(self) -> int:
        return int(self.attrs["num_images"])

    @property
    def num_captions(self) -> int:
        return int(self.attrs["num_captions"])

    @property
    def image_size(self) -> int:
        return int(self.attrs["image_size"])

    def _h5(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def image(self, index: int) -> np.ndarray:
        """uint8 (3, S, S)."""
        return self._h5()["images"][index]

    def images(self, start: int, stop: int) -> np.ndarray:
        """uint8 (stop - start, 3, S, S), a contiguous slice (fast: one HDF5 read)."""
        return self._h5()["images"][start:stop]

    def filenames(self) -> list[str]:
        return [s.decode("utf-8") if isinstance(s, bytes) else s for s in self._h5()["filenames"][:]]

    def image_meta(self) -> list[dict[str, Any]]:
        return [json.loads(s) for s in self._h5()["image_meta"].asstr()[:]]

    def references(self) -> list[list[list[str]]]:
        """Every reference caption of every image, tokenized: ``refs[i]`` is a list of token lists."""
        refs: list[list[list[str]]] = [[] for _ in range(self.num_images)]
        for text, img in zip(self._h5()["references"].asstr()[:], self.caption_image):
            refs[int(img)].append(text.split())
        return refs

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"], state["_pid"] = None, None
        return state
