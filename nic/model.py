"""The captioning model: encoder + decoder built from a config, features of a batch, the cache policy.

One place answers three questions that training, :class:`nic.captioner.Captioner`, the
BLEU report and the benches all ask:

* :func:`build_model` — which encoder and decoder a :class:`nic.config.Config` describes
  (built in that order, so parameter initialisation is the same everywhere);
* :func:`batch_features` — what ``(pooled, grid)`` a batch stands for, whichever of images,
  cached features or a cached trunk it carries (:mod:`nic.data`);
* :func:`feature_source` / :func:`split_feature_reader` — what a split's feature cache
  holds for a config (the frozen encoder's final features, or the frozen trunk below
  fine-tuned top stages), computed once and reused.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nic.config import Config
from nic.decoders import StepDecoderBase, build_decoder
from nic.encoders import Encoder, TrunkView, build_encoder

if TYPE_CHECKING:
    from nic.features import FeatureReader


class CaptionModel(nn.Module):
    """Encoder + decoder as one module (what DDP wraps); ``forward`` returns the training loss.

    ``trunk_top`` > 0: batches carry the cached trunk output (``trunk``) and the encoder's
    top ``trunk_top`` stages run here (with gradients once they are unfrozen).
    """

    def __init__(self, encoder: Encoder, decoder: StepDecoderBase, *, trunk_top: int = 0) -> None:
        super().__init__()
        self.encoder, self.decoder, self.trunk_top = encoder, decoder, trunk_top

    def features(self, batch: dict[str, Tensor], device: torch.device) -> tuple[Tensor, Tensor | None]:
        return batch_features(self.encoder, batch, device=device, trunk_top=self.trunk_top,
                              with_grid=self.decoder.uses_grid)

    def forward(self, batch: dict[str, Tensor], ss_prob: float = 0.0) -> tuple[Tensor, dict[str, float]]:
        device = next(self.decoder.parameters()).device
        captions = batch["captions"].to(device)  # (M, T)
        pooled, grid = self.features(batch, device)
        if "caption_image" in batch:  # image-major batch: each image's features once per caption
            idx = batch["caption_image"].to(device)  # (M,)
            pooled = pooled.index_select(0, idx)
            grid = grid.index_select(0, idx) if grid is not None else None
        if ss_prob > 0:
            return scheduled_sampling_loss(self.decoder, pooled, grid, captions, ss_prob)
        return self.decoder.loss(pooled, grid, captions)


def build_model(cfg: Config, vocab_size: int, *, pad_id: int = 0, encoder_name: str | None = None,
                encoder_weights: str | Path | None = None, pretrained: bool = True, trunk_top: int = 0
                ) -> CaptionModel:
    """The encoder and decoder ``cfg`` describes (encoder first: the same RNG use everywhere).

    ``encoder_name`` overrides ``cfg.encoder.name`` (a checkpoint records the name it was
    trained with); ``pretrained=False`` skips loading ImageNet weights (a checkpoint carries
    fine-tuned ones); ``trunk_top``: see :class:`CaptionModel`.
    """
    encoder = build_encoder(encoder_name or cfg.encoder.name, weights=encoder_weights or cfg.encoder.weights,
                            pretrained=pretrained, grid_size=cfg.encoder.grid_size,
                            grid_below_top=cfg.encoder.grid_below_top)
    decoder = build_decoder(cfg.decoder, vocab_size=vocab_size, feature_dim=encoder.feature_dim,
                            grid_dim=encoder.grid_dim, pad_id=pad_id)
    return CaptionModel(encoder, decoder, trunk_top=trunk_top)


def batch_features(encoder: Encoder, batch: dict[str, Tensor], *, device: str | torch.device, trunk_top: int = 0,
                   with_grid: bool = True) -> tuple[Tensor, Tensor | None]:
    """Per-image ``(pooled (B, F), grid (B, P, C) | None)`` from whatever the batch carries.

    Cached features are used as they are; a cached trunk runs the encoder's top ``trunk_top``
    stages; images run the whole encoder. ``with_grid=False`` (a decoder that does not
    attend) drops the grid.
    """
    if "pooled" in batch:
        grid = batch.get("grid")
        pooled, grid = batch["pooled"].to(device), (grid.to(device) if grid is not None else None)
    elif "trunk" in batch:
        pooled, grid = encoder.forward_cached_trunk(batch["trunk"].to(device), trunk_top)
    else:
        pooled, grid = encoder(batch["images"].to(device))
    return pooled, (grid if with_grid else None)


def scheduled_sampling_loss(decoder: StepDecoderBase, pooled: Tensor, grid: Tensor | None, captions: Tensor,
                            prob: float) -> tuple[Tensor, dict[str, float]]:
    """Per-word NLL where each input word is, with probability ``prob``, the model's own sample.

    Bengio et al. 2015. Runs step by step through the decoder step API, so it works for
    every decoder (the attention regulariser is not added here).
    """
    state = decoder.init_state(pooled, grid)
    tokens = captions[:, 0]  # (B,) <start>
    log_probs = []
    for t in range(captions.shape[1] - 1):
        lp, state = decoder.step(tokens, state)  # (B, V)
        log_probs.append(lp)
        sampled = torch.multinomial(lp.detach().exp(), 1).squeeze(1)  # (B,)
        use_model = torch.rand(tokens.shape[0], device=tokens.device) < prob
        tokens = torch.where(use_model, sampled, captions[:, t + 1])
    lp = torch.stack(log_probs, dim=1)  # (B, T-1, V)
    nll = F.nll_loss(lp.reshape(-1, lp.shape[-1]), captions[:, 1:].reshape(-1), ignore_index=decoder.pad_id)
    return nll, {"nll": float(nll.detach())}


# ------------------------------------------------------------ the feature-cache policy
def trunk_split(cfg: Config, encoder: Encoder) -> int:
    """How many top encoder stages run on a cached trunk (0: none; see EncoderConfig.cache_trunk)."""
    e = cfg.encoder
    if not -1 <= e.finetune_blocks <= encoder.num_blocks:  # fail now, not after finetune_after epochs
        raise ValueError(f"encoder.finetune_blocks={e.finetune_blocks}: {encoder.name} has {encoder.num_blocks} "
                         f"stages; use 1..{encoder.num_blocks}, -1 (all) or 0 (no fine-tuning)")
    if not (e.freeze and e.cache_trunk and e.finetune_after > 0 and e.finetune_blocks > 0):
        return 0
    if e.finetune_blocks >= encoder.num_blocks or not encoder.spec.sequence:
        return 0  # the whole CNN (or an unsplittable one) is fine-tuned on images
    if encoder.grid_below_top > e.finetune_blocks:
        raise ValueError(f"encoder.grid_below_top={encoder.grid_below_top} takes the grid from inside the frozen "
                         f"trunk that encoder.finetune_blocks={e.finetune_blocks} caches; fine-tune at least "
                         f"{encoder.grid_below_top} blocks, or set encoder.cache_trunk: false")
    return e.finetune_blocks


def feature_source(cfg: Config, encoder: Encoder, uses_grid: bool, *,
                   finetuned: bool) -> tuple[Encoder | TrunkView, bool]:
    """What the feature cache holds for this config: (the module to cache, with grid features?).

    Once the top stages are fine-tuned on a cached trunk (``finetuned``), the frozen trunk
    (always as a grid); before that, and without a trunk split, the encoder's own final
    features (a grid only for decoders that attend over one): while the CNN is frozen its
    head's output never changes, so it is cached too instead of recomputed every step.
    """
    top = trunk_split(cfg, encoder) if finetuned else 0
    return (TrunkView(encoder, top), True) if top else (encoder, uses_grid)


def split_feature_reader(cfg: Config, encoder: Encoder, store_file: Path, *, uses_grid: bool, finetuned: bool,
                         device: str | torch.device, progress: bool = True) -> FeatureReader | None:
    """The feature cache of one split's store for ``cfg`` (None: the CNN runs on images).

    Computed first when missing, stale or interrupted (:func:`nic.features.cache_features`);
    a config whose encoder is not frozen, or a split without a store, has none.
    """
    if not cfg.encoder.freeze or not Path(store_file).exists():
        return None
    source, grid = feature_source(cfg, encoder, uses_grid, finetuned=finetuned)
    from nic.features import FeatureReader, cache_features  # h5py: not on caption.py's path

    path = cache_features(source, store_file, grid=grid, dtype=cfg.encoder.feature_dtype, device=device,
                          progress=progress)
    return FeatureReader(path, grid=grid)
