"""Batches for training and evaluation, read from the HDF5 stores (and feature caches).

Three views of a split:

* :class:`CaptionDataset` — one item per *caption* (training, validation loss): the
  image (uint8 pixels, or cached features) and its encoded caption.
* :class:`ImageCaptionsDataset` — one item per *image* with *all* its captions (training
  when part of the CNN runs every step: each image then goes through it once per epoch,
  not once per caption); batched by :func:`collate_images`.
* :class:`ImageDataset` — one item per *image* (decoding, BLEU): the image or its
  features and its index into the store (references are looked up by index).

Both hold only picklable readers that open HDF5 lazily in each process, so any
``num_workers`` works. A batch is a dict of tensors::

    images    uint8 (B, 3, S, S)        when no feature cache is used
    pooled    float (B, F)              with a feature cache
    grid      float (B, P, F)           with a feature cache that has grid features
    trunk     float (B, P', C)          with a trunk cache (nic.encoders.TrunkView): the
                                        feature map below the encoder's top stages
    captions  int64 (B, T)              <start> ... <end> <pad>..., T = longest in batch
    lengths   int64 (B,)                tokens incl. <start>/<end>
    index     int64 (B,)                image row in the store

:func:`collate_images` batches B images with M captions in all: the image entries are
(B, ...), ``captions`` (M, T) and ``lengths`` (M,), plus ``caption_image`` int64 (M,), the
batch row of each caption's image.
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
        if self.features.trunk_top:
            return {"trunk": self.features.grid_features(index)}
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


class ImageCaptionsDataset(Dataset):
    """One item per image of the split, with all its captions."""

    def __init__(self, store: StoreReader, features: FeatureReader | None = None) -> None:
        self.source = _ImageSource(store, features)
        self.store = store
        caption_image = np.asarray(store.caption_image)
        order = np.argsort(caption_image, kind="stable")  # caption rows grouped by image, in store order
        bounds = np.searchsorted(caption_image[order], np.arange(store.num_images + 1))
        self.rows = [order[bounds[i]:bounds[i + 1]] for i in range(store.num_images)]

    def __len__(self) -> int:
        return self.store.num_images

    def __getitem__(self, i: int) -> dict[str, Any]:
        rows = self.rows[i]
        item = self.source.get(i)
        item["captions"] = torch.from_numpy(np.asarray(self.store.captions[rows], dtype=np.int64))  # (k, L)
        item["lengths"] = torch.from_numpy(np.asarray(self.store.caption_lengths[rows], dtype=np.int64))  # (k,)
        item["index"] = torch.tensor(i)
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


def collate_images(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Batch :class:`ImageCaptionsDataset` items: images stacked, their captions concatenated."""
    counts = torch.tensor([len(it["lengths"]) for it in items])
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0] if k not in ("captions", "lengths")}
    batch["lengths"] = torch.cat([it["lengths"] for it in items])  # (M,)
    batch["captions"] = torch.cat([it["captions"] for it in items])[:, : int(batch["lengths"].max())]  # (M, T)
    batch["caption_image"] = torch.repeat_interleave(torch.arange(len(items)), counts)  # (M,)
    return batch


def make_loader(dataset: Dataset, *, batch_size: int, shuffle: bool, num_workers: int = 0,
                generator: torch.Generator | None = None, sampler: Any = None) -> DataLoader:
    # A private generator, so creating a loader never draws from the global RNG (which
    # would shift dropout masks and break exact resume).
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      num_workers=num_workers, generator=generator,
                      collate_fn=collate_images if isinstance(dataset, ImageCaptionsDataset) else collate,
                      persistent_workers=num_workers > 0, pin_memory=torch.cuda.is_available())
