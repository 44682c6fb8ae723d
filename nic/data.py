"""Batches for training and evaluation, read from the HDF5 stores (and feature caches).

Two views of a split:

* :class:`CaptionDataset` — one item per *caption* (training, validation loss): the
  image (uint8 pixels, or cached features) and its encoded caption.
* :class:`ImageDataset` — one item per *image* (decoding, BLEU): the image or its
  features and its index into the store (references are looked up by index).

Both hold only picklable readers that open HDF5 lazily in each process, so any
``num_workers`` works. A batch is a dict of tensors::

    images    uint8 (B, 3, S, S)        when no feature cache is used
    pooled    float (B, F)              with a feature cache
    grid      float (B, P, F)           with a feature cache that has grid features
    captions  int64 (B, T)              <start> ... <end> <pad>..., T = longest in batch
    lengths   int64 (B,)                tokens incl. <start>/<end>
    index     int64 (B,)                image row in the store
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from nic.features import FeatureReader
from nic.store import StoreReader


class _ImageSource:
    """What an item's image is: pixels from the store, or cached features."""

    def __init__(self, store: StoreReader, features: FeatureReader | None) -> None:
        if features is not None and features.pooled.shape[0] != store.num_images:
            raise ValueError(f"{features.path}: {features.pooled.shape[0]} rows for {store.num_images} images "
                             f"in {store.path}; delete the feature cache to recompute it")
        self.store, self.features = store, features

    def get(self, index: int) -> dict[str, torch.Tensor]:
        if self.features is None:
            return {"images": torch.from_numpy(self.store.image(index))}
        item = {"pooled": self.features.pooled[index]}
        if self.features.grid:
            item["grid"] = self.features.grid_features(index)
        return item


class CaptionDataset(Dataset):
    """One item per caption of the split."""

    def __init__(self, store: StoreReader, features: FeatureReader | None = None) -> None:
        self.source = _ImageSource(store, features)
        self.store = store

    def __len__(self) -> int:
        return self.store.num_captions

    def __getitem__(self, i: int) -> dict[str, Any]:
        index = int(self.store.caption_image[i])
        item = self.source.get(index)
        item["captions"] = torch.from_numpy(self.store.captions[i].astype(np.int64))
        item["lengths"] = torch.tensor(int(self.store.caption_lengths[i]))
        item["index"] = torch.tensor(index)
        return item


class ImageDataset(Dataset):
    """One item per image of the split (the first ``limit`` images when given)."""

    def __init__(self, store: StoreReader, features: FeatureReader | None = None, limit: int = 0) -> None:
        self.source = _ImageSource(store, features)
        self.size = min(limit, store.num_images) if limit else store.num_images

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.source.get(i)
        item["index"] = torch.tensor(i)
        return item


def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack items; captions are trimmed to the longest one in the batch."""
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    if "captions" in batch:
        batch["captions"] = batch["captions"][:, : int(batch["lengths"].max())]  # (B, T)
    return batch


def make_loader(dataset: Dataset, *, batch_size: int, shuffle: bool, num_workers: int = 0,
                generator: torch.Generator | None = None, sampler: Any = None) -> DataLoader:
    # A private generator, so creating a loader never draws from the global RNG (which
    # would shift dropout masks and break exact resume).
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      num_workers=num_workers, collate_fn=collate, generator=generator,
                      persistent_workers=num_workers > 0, pin_memory=torch.cuda.is_available())
