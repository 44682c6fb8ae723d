"""Cache of frozen-encoder features, so training does not rerun the CNN every epoch.

One HDF5 file per (split store, encoder): ``<store_dir>/features/<split>.<encoder>.h5``::

    pooled  float16|float32  (N, F)       global-average-pooled features
    grid    float16|float32  (N, P, F)    spatial features (only when asked for)

Attributes: ``encoder`` (registry name), ``store_uid`` (the ``uid`` of the image store it
was computed from: a rebuilt store invalidates the cache), ``has_grid``, ``dtype``.
Written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm import tqdm

from nic.encoders import Encoder
from nic.io import atomic_path
from nic.store import StoreReader

DTYPES = {"float16": np.float16, "float32": np.float32}


def feature_path(store_file: str | Path, encoder_name: str) -> Path:
    store_file = Path(store_file)
    return store_file.parent / "features" / f"{store_file.stem}.{encoder_name}.h5"


def cache_is_valid(path: Path, store: StoreReader, encoder_name: str, grid: bool) -> bool:
    if not path.exists():
        return False
    try:
        with h5py.File(path, "r") as f:
            a = f.attrs
            return (a.get("encoder") == encoder_name and a.get("store_uid") == store.attrs["uid"]
                    and (bool(a.get("has_grid")) or not grid) and f["pooled"].shape[0] == store.num_images)
    except OSError:
        return False


@torch.inference_mode()
def cache_features(
    encoder: Encoder,
    store_file: str | Path,
    *,
    grid: bool = False,
    dtype: str = "float16",
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> Path:
    """Compute (or reuse) the feature cache of ``store_file`` for ``encoder``; return its path."""
    if dtype not in DTYPES:
        raise ValueError(f"feature dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    store = StoreReader(store_file)
    out = feature_path(store_file, encoder.name)
    if cache_is_valid(out, store, encoder.name, grid):
        return out
    was_training = encoder.training
    encoder.eval().to(device)
    n, f_dim = store.num_images, encoder.feature_dim
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
        pooled_ds = f.create_dataset("pooled", (n, f_dim), DTYPES[dtype])
        grid_ds = None
        for start in tqdm(range(0, n, batch_size), desc=f"features {out.stem}", unit="batch", disable=not progress):
            stop = min(start + batch_size, n)
            images = torch.from_numpy(store.images(start, stop)).to(device)  # (B, 3, S, S) uint8
            pooled, grid_feats = encoder(images)  # (B, F), (B, P, F)
            pooled_ds[start:stop] = pooled.float().cpu().numpy()
            if grid:
                if grid_ds is None:
                    p = grid_feats.shape[1]
                    grid_ds = f.create_dataset("grid", (n, p, f_dim), DTYPES[dtype], chunks=(1, p, f_dim))
                grid_ds[start:stop] = grid_feats.float().cpu().numpy()
        f.attrs.update(encoder=encoder.name, store_uid=store.attrs["uid"], has_grid=grid, dtype=dtype)
    store.close()
    encoder.train(was_training)
    return out


class FeatureReader:
    """Reads a feature cache: pooled features in memory, grid features lazily per process."""

    def __init__(self, path: str | Path, *, grid: bool = False) -> None:
        self.path = Path(path)
        with h5py.File(self.path, "r") as f:
            if grid and "grid" not in f:
                raise ValueError(f"{self.path}: has no grid features; delete it to recompute with grid=True")
            self.pooled = torch.from_numpy(f["pooled"][:].astype(np.float32))  # (N, F)
        self.grid = grid
        self._file: h5py.File | None = None
        self._pid: int | None = None

    def grid_features(self, index: int) -> torch.Tensor:
        """float32 (P, F) for one image."""
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
        return torch.from_numpy(self._file["grid"][index].astype(np.float32))

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_file"], state["_pid"] = None, None
        return state
