"""Cache of frozen-encoder features, so training does not rerun the CNN every epoch.

One HDF5 file per (split store, encoder): ``<store_dir>/features/<split>.<encoder>.h5``, where
``<encoder>`` is the registry name plus the grid setting (``Encoder.cache_name``, e.g.
``efficientnet_lite0.below3.grid7``)::

    pooled  float16|float32  (N, F)       global-average-pooled features
    grid    float16|float32  (N, P, C)    spatial features (only when asked for), one chunk per image;
                                          C = F unless the grid comes from lower in the CNN

A cache of an encoder's frozen trunk (:class:`nic.encoders.TrunkView`, named
``<encoder>.trunk<k>``) has the same layout: ``grid`` is the trunk's feature map entering the
top k stages, flattened to (N, h * w, C), and the attribute ``trunk_top`` = k.

Attributes: ``encoder`` (the cache name above), ``encoder_digest`` (a hash of its weights: other
weights under the same name invalidate the cache), ``store_uid`` (the ``uid`` of the image
store it was computed from: a rebuilt store invalidates the cache), ``has_grid``,
``grid_locations`` (P; a grid of another size, e.g. after changing ``encoder.grid_size``,
invalidates the cache), ``dtype``, ``num_images``.

Computing it scales like the stores: images are read from the store in batches (the next
batch is read by a background thread while the encoder runs on this one), with a progress
bar, written with the resumable scheme of :mod:`nic.h5resume`: into ``<cache>.partial``
whose datasets are allocated up front; every ``flush_every`` images the file is flushed and
``<cache>.progress.json`` records how many rows are done. A killed run resumes from there
when called again with the same encoder, store and settings; the finished file is renamed
into place, so a cache under its final name is always complete.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from tqdm import tqdm

from nic.encoders import Encoder
from nic.h5resume import ResumableH5
from nic.store import StoreReader

DTYPES = {"float16": np.float16, "float32": np.float32}
TORCH_DTYPES = {"float16": torch.float16, "float32": torch.float32}
FLUSH_EVERY = 1024  # images between progress checkpoints
PROGRESS_FORMAT = "nic-features-progress"


def feature_path(store_file: str | Path, encoder_name: str) -> Path:
    store_file = Path(store_file)
    return store_file.parent / "features" / f"{store_file.stem}.{encoder_name}.h5"


def encoder_digest(encoder: torch.nn.Module) -> str:
    """A short hash of the encoder's weights (its state dict)."""
    h = hashlib.sha256()
    for name, tensor in encoder.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{tuple(tensor.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def cache_is_valid(path: Path, store: StoreReader, encoder_name: str, grid: bool, *, dtype: str | None = None,
                   digest: str | None = None, grid_shape: tuple[int, int] | None = None) -> bool:
    """True when ``path`` holds this store's features for this encoder (and dtype/weights/grid shape when given).

    ``grid_shape``: the (P, C) of the encoder's grid now; a cached grid of another shape is stale.
    """
    if not path.exists():
        return False
    try:
        with h5py.File(path, "r") as f:
            a = f.attrs
            return (a.get("encoder") == encoder_name and a.get("store_uid") == store.attrs["uid"]
                    and (bool(a.get("has_grid")) or not grid) and f["pooled"].shape[0] == store.num_images
                    and (dtype is None or a.get("dtype") == dtype)
                    and (digest is None or a.get("encoder_digest") == digest)
                    and (not grid or grid_shape is None or tuple(f["grid"].shape[1:]) == tuple(grid_shape)))
    except (OSError, KeyError):
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
    flush_every: int = FLUSH_EVERY,
) -> Path:
    """Compute (or reuse, or finish) the feature cache of ``store_file`` for ``encoder``; return its path."""
    if dtype not in DTYPES:
        raise ValueError(f"feature dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    store = StoreReader(store_file)
    name = getattr(encoder, "cache_name", encoder.name)  # the registry name plus any grid setting
    out = feature_path(store_file, name)
    digest = encoder_digest(encoder)
    grid_shape = _grid_shape(encoder, store, device) if grid else None
    if cache_is_valid(out, store, name, grid, dtype=dtype, digest=digest, grid_shape=grid_shape):
        return out
    n, f_dim = store.num_images, encoder.feature_dim
    attrs = {"encoder": name, "encoder_digest": digest, "store_uid": store.attrs["uid"], "has_grid": grid,
             "dtype": dtype, "num_images": n, "grid_locations": grid_shape[0] if grid_shape else 0,
             **getattr(encoder, "cache_attrs", {})}
    fingerprint = hashlib.sha256(json.dumps(attrs, sort_keys=True).encode()).hexdigest()
    cache = ResumableH5(out, PROGRESS_FORMAT)
    was_training = encoder.training
    encoder.eval().to(device)
    try:
        done = _resume_point(cache, fingerprint, n)
        if done is None:
            done = 0
            cache.create(_datasets(n, f_dim, grid_shape, dtype), {"fingerprint": fingerprint})
            cache.write_progress(cache.new_record(fingerprint, rows_done=0))
        with h5py.File(cache.partial, "r+") as f:
            _compute(f, encoder, store, cache, fingerprint, start=done, grid=grid, dtype=dtype,
                     batch_size=batch_size, device=device, flush_every=flush_every,
                     desc=f"features {out.stem}", progress=progress)
            f.attrs.update(attrs)
        cache.commit()
    finally:
        store.close()
        encoder.train(was_training)
    return out


def _grid_shape(encoder: Encoder, store: StoreReader, device: str | torch.device) -> tuple[int, int]:
    """(P, C): the grid locations and channels the encoder returns."""
    side = getattr(encoder, "grid_side", None)
    channels = getattr(encoder, "grid_dim", encoder.feature_dim)
    if isinstance(side, int) and side > 0:
        return side * side, channels
    if not store.num_images:
        return 0, channels
    return tuple(encoder(torch.from_numpy(store.images(0, 1)).to(device))[1].shape[1:])


def _datasets(n: int, f_dim: int, grid_shape: tuple[int, int] | None, dtype: str) -> dict[str, dict[str, Any]]:
    """The cache's datasets, as :meth:`ResumableH5.create` allocates them up front (kill-safe)."""
    datasets = {"pooled": {"shape": (n, f_dim), "dtype": DTYPES[dtype], "chunks": (max(1, min(n, 1024)), f_dim)}}
    if grid_shape is not None:
        datasets["grid"] = {"shape": (n, *grid_shape), "dtype": DTYPES[dtype], "chunks": (1, *grid_shape)}
    return datasets


def _resume_point(cache: ResumableH5, fingerprint: str, n: int) -> int | None:
    """Rows already computed in a partial cache of these inputs, or None to start over."""
    state = cache.read_progress(fingerprint)
    if state is None or not cache.partial_matches("fingerprint", fingerprint, "pooled", n):
        return None
    done = state.get("rows_done")
    return done if isinstance(done, int) and 0 <= done <= n else None


def _compute(f: h5py.File, encoder: Encoder, store: StoreReader, cache: ResumableH5, fingerprint: str, *, start: int,
             grid: bool, dtype: str, batch_size: int, device: str | torch.device, flush_every: int, desc: str,
             progress: bool) -> None:
    n = store.num_images
    pooled_ds, grid_ds = f["pooled"], (f["grid"] if grid else None)
    to = TORCH_DTYPES[dtype]
    starts = list(range(start, n, batch_size))
    last = start
    with ThreadPoolExecutor(max_workers=1) as reader, \
            tqdm(total=n, initial=start, desc=desc, unit="img", disable=not progress) as bar:
        pending = reader.submit(store.images, starts[0], min(starts[0] + batch_size, n)) if starts else None
        for k, s in enumerate(starts):
            stop = min(s + batch_size, n)
            batch = pending.result()  # (B, 3, S, S) uint8
            if k + 1 < len(starts):  # read the next batch while the encoder runs
                pending = reader.submit(store.images, starts[k + 1], min(starts[k + 1] + batch_size, n))
            pooled, grid_feats = encoder(torch.from_numpy(batch).to(device))  # (B, F), (B, P, C)
            pooled_ds[s:stop] = pooled.to(to).cpu().numpy()
            if grid_ds is not None:
                grid_ds[s:stop] = grid_feats.to(to).cpu().numpy()
            bar.update(stop - s)
            if stop - last >= flush_every or stop == n:
                f.flush()
                cache.checkpoint(f, cache.new_record(fingerprint, rows_done=stop))
                last = stop


GRID_IN_MEMORY_BYTES = 4 * 2**30  # grid caches up to this size are read into RAM once


class FeatureReader:
    """Reads a feature cache: pooled features in memory; grid features in memory when they fit
    in ``grid_in_memory_bytes`` (as stored, e.g. float16), else lazily per item and process.

    Reading a whole small grid cache once is much faster than one HDF5 read per training item.
    """

    def __init__(self, path: str | Path, *, grid: bool = False,
                 grid_in_memory_bytes: int = GRID_IN_MEMORY_BYTES) -> None:
        self.path = Path(path)
        self._grid_memory: torch.Tensor | None = None
        with h5py.File(self.path, "r") as f:
            if grid and "grid" not in f:
                raise ValueError(f"{self.path}: has no grid features; delete it to recompute with grid=True")
            self.pooled = torch.from_numpy(f["pooled"][:].astype(np.float32))  # (N, F)
            if grid and f["grid"].size * f["grid"].dtype.itemsize <= grid_in_memory_bytes:
                self._grid_memory = torch.from_numpy(f["grid"][:])  # (N, P, F), stored dtype
            self.attrs: dict[str, Any] = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
        self.grid = grid
        # a trunk cache: grid holds the feature map entering the encoder's top `trunk_top` stages
        self.trunk_top: int = int(self.attrs.get("trunk_top", 0))
        if self.trunk_top and not grid:
            raise ValueError(f"{self.path}: a trunk cache must be read with grid=True")
        self._file: h5py.File | None = None
        self._pid: int | None = None

    def grid_features(self, index: int) -> torch.Tensor:
        """float32 (P, F) for one image."""
        if self._grid_memory is not None:
            return self._grid_memory[index].float()
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
        return torch.from_numpy(self._file["grid"][index].astype(np.float32))

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_file"], state["_pid"] = None, None
        return state
