"""Decode a whole split and score it: what validation and the BLEU report share."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from tqdm import tqdm

from nic.bleu import BleuResult, corpus_bleu
from nic.captioner import Caption, Captioner
from nic.data import ImageDataset, make_loader
from nic.decoding import DecodeSettings
from nic.features import FeatureReader
from nic.store import StoreReader


@dataclass
class SplitCaptions:
    """Captions decoded for the first ``len(captions)`` images of a store."""

    captions: list[list[Caption]]  # per image, n-best
    references: list[list[list[str]]]  # per image, tokenized references

    @property
    def best(self) -> list[list[str]]:
        return [c[0].words for c in self.captions]

    def bleu(self) -> BleuResult:
        return corpus_bleu(self.best, self.references)


def decode_split(
    captioner: Captioner,
    store: StoreReader,
    features: FeatureReader | None = None,
    settings: DecodeSettings | None = None,
    *,
    limit: int = 0,
    batch_size: int = 50,
    num_workers: int = 0,
    progress: bool = False,
    desc: str = "decode",
) -> SplitCaptions:
    """Decode every image of ``store`` (or the first ``limit``) with ``captioner.decode``.

    ``settings``: how to decode (default: the captioner's own, from its checkpoint). With a
    feature cache the encoder is skipped (with a trunk cache only its top stages run);
    otherwise images are encoded on the fly.
    """
    captions: list[list[Caption]] = []
    for _, pooled, grid in split_features(captioner, store, features, limit=limit, batch_size=batch_size,
                                          num_workers=num_workers, progress=progress, desc=desc):
        captions.extend(captioner.decode(pooled, grid, settings))
    references = store.references()[: len(captions)]
    return SplitCaptions(captions=captions, references=references)


def split_features(captioner: Captioner, store: StoreReader, features: FeatureReader | None = None, *,
                   limit: int = 0, batch_size: int = 50, num_workers: int = 0, progress: bool = False,
                   desc: str = "encode") -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """(store rows (B,), pooled (B, F), grid (B, P, F) or None) for the split's images, in order.

    From the feature cache when given (with a trunk cache, the encoder's top stages run),
    else by encoding the images; ``grid`` is None when the decoder does not use it.
    """
    dataset = ImageDataset(store, features, limit=limit)
    loader = make_loader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    trunk_top = features.trunk_top if features is not None else 0
    for batch in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
        pooled, grid = captioner.features(batch, trunk_top)
        yield batch["index"], pooled, grid
