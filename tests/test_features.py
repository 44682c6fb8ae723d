"""The frozen-encoder feature cache: values, float16, grid, reuse/invalidation, resume."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from nic.encoders import Encoder, EncoderSpec
from nic.features import FeatureReader, cache_features, encoder_digest, feature_path
from nic.store import StoreReader
from preprocess.build import build_stores
from preprocess.karpathy import read_karpathy
from tests.conftest import write_karpathy_fixture

N_IMAGES = 14  # train images of the fixture: not a multiple of the batch sizes


class TinyBackbone(nn.Module):
    """(B, 3, 16, 16) -> (B, 6, 2, 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, kernel_size=8, stride=8)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


def tiny_encoder(seed: int = 0) -> Encoder:
    torch.manual_seed(seed)
    return Encoder(EncoderSpec(name="tiny", input_size=16, feature_dim=6, grid_side=2), TinyBackbone())


@pytest.fixture
def store(tmp_path):
    fixture = write_karpathy_fixture(tmp_path / "data", n=26)
    build_stores(read_karpathy(fixture), image_dir=fixture.parent, store_dir=tmp_path / "stores", dataset="tiny",
                 image_size=16, min_count=1, progress=False)
    return tmp_path / "stores" / "train.h5"


def reference(encoder: Encoder, store_file) -> tuple[np.ndarray, np.ndarray]:
    images = torch.from_numpy(StoreReader(store_file).images(0, N_IMAGES))
    with torch.inference_mode():
        pooled, grid = encoder.eval()(images)
    return pooled.numpy(), grid.numpy()


def test_pooled_and_grid_values_float32_and_float16(store):
    encoder = tiny_encoder()
    want_pooled, want_grid = reference(encoder, store)
    path = cache_features(encoder, store, grid=True, dtype="float32", batch_size=4, progress=False)
    assert path == feature_path(store, "tiny") and path.exists()
    reader = FeatureReader(path, grid=True)
    assert reader.pooled.shape == (N_IMAGES, 6)
    np.testing.assert_allclose(reader.pooled.numpy(), want_pooled, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(reader.grid_features(5).numpy(), want_grid[5], rtol=1e-5, atol=1e-6)
    assert reader._grid_memory is not None  # small cache: read into RAM once
    lazy = FeatureReader(path, grid=True, grid_in_memory_bytes=0)  # per-item HDF5 reads
    assert lazy._grid_memory is None
    for i in range(N_IMAGES):
        assert torch.equal(lazy.grid_features(i), reader.grid_features(i))
    with h5py.File(path) as f:
        assert f["grid"].shape == (N_IMAGES, 4, 6) and f["grid"].chunks == (1, 4, 6)
        assert f.attrs["encoder_digest"] == encoder_digest(encoder) and f.attrs["dtype"] == "float32"
    half = cache_features(encoder, store, grid=False, dtype="float16", batch_size=5, progress=False)
    with h5py.File(half) as f:
        assert f["pooled"].dtype == np.float16 and "grid" not in f
        np.testing.assert_allclose(f["pooled"][:].astype(np.float32), want_pooled, rtol=2e-3, atol=1e-3)
    with pytest.raises(ValueError, match="no grid features"):
        FeatureReader(half, grid=True)
    with pytest.raises(ValueError, match="dtype must be one of"):
        cache_features(encoder, store, dtype="bfloat16")


def test_reuse_and_invalidation(store):
    encoder = tiny_encoder()
    encoder.train()
    path = cache_features(encoder, store, grid=True, batch_size=4, progress=False)
    assert encoder.training  # restored
    mtime = path.stat().st_mtime_ns
    assert cache_features(encoder, store, grid=False, batch_size=4, progress=False) == path  # grid is a superset
    assert path.stat().st_mtime_ns == mtime
    cache_features(tiny_encoder(seed=1), store, grid=True, batch_size=4, progress=False)  # other weights, same name
    assert path.stat().st_mtime_ns != mtime
    assert not list(path.parent.glob("*.partial")) and not list(path.parent.glob("*.progress.json"))


def test_grid_settings_get_their_own_cache_and_a_stale_grid_is_recomputed(store):
    """Same weights, another encoder.grid_size: another cache file; a grid of the wrong shape is never served."""
    encoder = tiny_encoder()
    path = cache_features(encoder, store, grid=True, batch_size=4, progress=False)
    pooled_1x1 = tiny_encoder()
    pooled_1x1.grid_size = 1
    assert encoder_digest(pooled_1x1) == encoder_digest(encoder) and pooled_1x1.cache_name == "tiny.grid1"
    path_1x1 = cache_features(pooled_1x1, store, grid=True, batch_size=4, progress=False)
    assert path_1x1 == feature_path(store, "tiny.grid1") != path
    with h5py.File(path) as f, h5py.File(path_1x1) as f1:
        assert f["grid"].shape == (N_IMAGES, 4, 6) and f1["grid"].shape == (N_IMAGES, 1, 6)
        np.testing.assert_allclose(f1["grid"][:, 0].astype(np.float32), f1["pooled"][:].astype(np.float32),
                                   rtol=1e-3, atol=1e-3)
    # a cache under the right name whose grid has another shape (e.g. written by an older nic) is stale
    path_1x1.unlink()
    shutil.copy(path, path_1x1)
    with h5py.File(path_1x1, "r+") as f:
        f.attrs["encoder"] = "tiny.grid1"
    cache_features(pooled_1x1, store, grid=True, batch_size=4, progress=False)
    with h5py.File(path_1x1) as f:
        assert f["grid"].shape == (N_IMAGES, 1, 6) and f.attrs["grid_locations"] == 1


def test_interrupted_cache_resumes_and_matches(store, monkeypatch):
    encoder = tiny_encoder()
    full = cache_features(encoder, store, grid=True, dtype="float32", batch_size=3, progress=False)
    with h5py.File(full) as f:
        want = {k: f[k][:] for k in ("pooled", "grid")}
    full.unlink()

    seen: list[int] = []
    forward = Encoder.forward

    def stop_after_three_batches(self, images):
        seen.append(images.shape[0])
        if len(seen) == 4:  # batch 4 of 5: rows 0-8 are checkpointed (every 3 rows)
            raise KeyboardInterrupt
        return forward(self, images)

    monkeypatch.setattr(Encoder, "forward", stop_after_three_batches)
    with pytest.raises(KeyboardInterrupt):
        cache_features(encoder, store, grid=True, dtype="float32", batch_size=3, progress=False, flush_every=3)
    assert not full.exists() and full.with_name(full.name + ".partial").exists()
    seen.clear()
    monkeypatch.setattr(Encoder, "forward", lambda self, images: seen.append(images.shape[0]) or forward(self, images))
    path = cache_features(encoder, store, grid=True, dtype="float32", batch_size=3, progress=False, flush_every=3)
    assert seen == [3, 2]  # only rows 9-13 were computed again
    with h5py.File(path) as f:
        for k, v in want.items():
            np.testing.assert_array_equal(f[k][:], v)
    assert not path.with_name(path.name + ".partial").exists()
