"""A training job's objects: :class:`Run` (what :mod:`nic.training`'s steps act on) and its progress.

Kept apart from the steps so that a training objective (:mod:`nic.scst`) can use a run
without depending on the loop that drives it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from nic.config import Config
from nic.data import CaptionDataset, ImageCaptionsDataset, ImageDataset
from nic.decoders import StepDecoderBase
from nic.distributed import DistInfo, EpochSampler
from nic.encoders import Encoder
from nic.features import FeatureReader
from nic.model import CaptionModel
from nic.runlog import RunLog
from nic.scst import ScstObjective
from nic.store import StoreReader
from nic.vocab import Vocabulary

__all__ = ["Run", "TrainState"]


@dataclass
class TrainState:
    """Everything about a run's progress that is not a tensor."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps so far
    batch_in_epoch: int = 0  # batches of the current epoch already trained (for mid-epoch resume)
    epoch_nll: float = 0.0  # summed per-word NLL of the current epoch so far (all processes)
    epoch_words: float = 0.0  # words it was summed over
    best_score: float = -1.0
    best_epoch: int = -1
    bad_epochs: int = 0
    finetuning: bool = False
    epoch_sums: dict[str, float] = field(default_factory=dict)  # SCST: summed rewards etc. of the epoch so far


@dataclass
class Run:
    """One training job's objects (built by :func:`setup`)."""

    cfg: Config
    dist: DistInfo
    device: torch.device
    run_dir: Path
    vocab: Vocabulary
    model: CaptionModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    stores: dict[str, StoreReader]
    features: dict[str, FeatureReader | None]  # what batches read now (None: images)
    sampler: EpochSampler
    per_rank_batch: int  # items (captions, or images with all their captions) per process and step
    state: TrainState = field(default_factory=TrainState)
    ddp: nn.Module | None = None
    log: RunLog = field(default_factory=lambda: RunLog(Path("."), enabled=False))
    # the trunk caches fine-tuning switches to (encoder.cache_trunk); None: no trunk split
    trunk_features: dict[str, FeatureReader | None] | None = None
    # train.objective: scst: the loss of a batch of images (None: cross-entropy)
    scst: ScstObjective | None = None
    # train.init_from held fine-tuned CNN weights: every checkpoint keeps them, though this run's CNN is frozen
    encoder_from_init: bool = False

    @property
    def encoder(self) -> Encoder:
        return self.model.encoder

    @property
    def trunk_top(self) -> int:
        """> 0: the feature caches hold the trunk below the encoder's top ``trunk_top`` stages."""
        return self.model.trunk_top

    def dataset(self, split: str) -> CaptionDataset | ImageCaptionsDataset | ImageDataset:
        """What training (and the validation loss) iterate: per caption, or per image (train.group_captions,
        and SCST training, which samples its own captions)."""
        if split == "train" and self.scst is not None:
            return ImageDataset(self.stores[split], self.features[split])
        kind = ImageCaptionsDataset if self.cfg.train.group_captions else CaptionDataset
        return kind(self.stores[split], self.features[split])

    @property
    def decoder(self) -> StepDecoderBase:
        return self.model.decoder

    @property
    def amp_dtype(self) -> torch.dtype | None:
        if self.device.type != "cuda" or not self.cfg.train.amp:
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def autocast(self) -> contextlib.AbstractContextManager:
        dtype = self.amp_dtype
        return torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()
