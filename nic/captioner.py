"""A trained captioner: encoder + decoder + vocabulary, and the ONE decoding function.

``caption.py``, the BLEU report and validation during training all decode through
:meth:`Captioner.decode`, so the numbers reported during training are the numbers a user
gets (never teacher-forced outputs).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from nic import search
from nic.checkpoint import load_checkpoint
from nic.config import Config, config_from_dict
from nic.decoders import StepDecoderBase, build_decoder
from nic.encoders import Encoder, build_encoder
from nic.images import load_image
from nic.vocab import Vocabulary

METHODS = ("beam", "greedy", "sample")


@dataclass
class Caption:
    """One decoded caption."""

    words: list[str]
    logprob: float
    score: float
    finished: bool
    alphas: Tensor | None = None  # (steps, P) attention weights, when the decoder has them

    @property
    def text(self) -> str:
        return " ".join(self.words)


class Captioner:
    def __init__(self, encoder: Encoder, decoder: StepDecoderBase, vocab: Vocabulary, *,
                 config: Config | None = None, device: str | torch.device = "cpu",
                 encoder_trained: bool = False) -> None:
        self.device = torch.device(device)
        self.encoder_trained = encoder_trained  # the checkpoint carried CNN weights (fine-tuned)
        self.encoder = encoder.to(self.device).eval()
        self.decoder = decoder.to(self.device).eval()
        self.vocab = vocab
        self.config = config or Config()

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, device: str | torch.device = "cpu",
                        encoder_weights: str | None = None) -> Captioner:
        ckpt = load_checkpoint(path)
        cfg = config_from_dict(ckpt["config"], source=f"{path} (config)")
        vocab = Vocabulary.from_dict(ckpt["vocab"], source=f"{path} (vocab)")
        trained_encoder = ckpt.get("encoder") is not None
        encoder = build_encoder(ckpt["encoder_name"], weights=encoder_weights or cfg.encoder.weights,
                                pretrained=not trained_encoder, grid_size=cfg.encoder.grid_size,
                                grid_below_top=cfg.encoder.grid_below_top)
        if trained_encoder:
            encoder.load_state_dict(ckpt["encoder"])
        decoder = build_decoder(cfg.decoder, vocab_size=len(vocab), feature_dim=encoder.feature_dim,
                                grid_dim=encoder.grid_dim, pad_id=vocab.pad_id)
        decoder.load_state_dict(ckpt["decoder"])
        return cls(encoder, decoder, vocab, config=cfg, device=device, encoder_trained=trained_encoder)

    # ------------------------------------------------------------------ decoding
    @torch.inference_mode()
    def decode(self, pooled: Tensor, grid: Tensor | None = None, *, method: str = "beam", beam_size: int = 20,
               max_len: int | None = None, length_penalty: float = 0.0, n_best: int = 1,
               temperature: float = 1.0, top_k: int = 0, generator: torch.Generator | None = None
               ) -> list[list[Caption]]:
        """Decode features (pooled (B, F), grid (B, P, F) | None) into ``n_best`` captions per image."""
        if method not in METHODS:
            raise ValueError(f"unknown decoding method {method!r}; valid: {METHODS}")
        was_training = self.decoder.training
        self.decoder.eval()
        pooled = pooled.to(self.device, torch.float32)
        grid = grid.to(self.device, torch.float32) if grid is not None else None
        ids = {"start_id": self.vocab.start_id, "end_id": self.vocab.end_id, "pad_id": self.vocab.pad_id,
               "max_len": max_len or self.config.eval.max_len}
        if method == "beam":
            hyps = search.beam_search(self.decoder, pooled, grid, beam_size=beam_size,
                                      length_penalty=length_penalty, n_best=n_best, **ids)
        elif method == "greedy":
            hyps = [[h] for h in search.greedy_search(self.decoder, pooled, grid, **ids)]
        else:
            hyps = [[h] for h in search.sample(self.decoder, pooled, grid, temperature=temperature,
                                               top_k=top_k, generator=generator, **ids)]
        self.decoder.train(was_training)
        return [[self._caption(h) for h in per_image] for per_image in hyps]

    @torch.inference_mode()
    def score(self, pooled: Tensor, grid: Tensor | None, captions: Sequence[Sequence[str]]) -> Tensor:
        """log P(caption | image) of given captions (B,), <end> included: caption b of image b.

        Teacher-forced through the decoder step API (so every decoder can be scored); words
        outside the vocabulary count as ``<unk>``. For re-ranking and forced-choice tests.
        """
        was_training = self.decoder.training
        self.decoder.eval()
        ids = [self.vocab.encode(list(c)) for c in captions]
        tokens = torch.full((len(ids), max(map(len, ids))), self.vocab.pad_id, dtype=torch.long)
        for b, row in enumerate(ids):
            tokens[b, : len(row)] = torch.tensor(row)
        tokens = tokens.to(self.device)
        grid = grid.to(self.device, torch.float32) if grid is not None and self.uses_grid else None
        state = self.decoder.init_state(pooled.to(self.device, torch.float32), grid)
        total = torch.zeros(len(ids), device=self.device)
        for t in range(tokens.shape[1] - 1):
            log_probs, state = self.decoder.step(tokens[:, t], state)  # (B, V)
            target = tokens[:, t + 1]
            total += log_probs.gather(1, target[:, None]).squeeze(1) * (target != self.vocab.pad_id)
        self.decoder.train(was_training)
        return total.cpu()

    def _caption(self, h: search.Hypothesis) -> Caption:
        return Caption(words=self.vocab.decode(h.tokens), logprob=h.logprob, score=h.score,
                       finished=h.finished, alphas=h.alphas)

    @torch.inference_mode()
    def features(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """uint8 images (B, 3, H, W) -> (pooled (B, F), grid (B, P, F))."""
        return self.encoder(images.to(self.device))

    @torch.inference_mode()
    def features_from_trunk(self, trunk: Tensor, top: int) -> tuple[Tensor, Tensor]:
        """A cached trunk grid (B, P', C) below the top ``top`` stages -> (pooled (B, F), grid (B, P, F))."""
        return self.encoder.forward_cached_trunk(trunk.to(self.device), top)

    def caption_images(self, images: Tensor, **kwargs: Any) -> list[list[Caption]]:
        pooled, grid = self.features(images)
        return self.decode(pooled, grid if self.uses_grid else None, **kwargs)

    def caption_files(self, paths: Sequence[str | Path], *, batch_size: int = 16,
                      **kwargs: Any) -> Iterable[tuple[Path, list[Caption]]]:
        """Caption image files of any size/mode (decoded and resized like the stores)."""
        size = self.config.data.image_size
        for start in range(0, len(paths), batch_size):
            chunk = [Path(p) for p in paths[start:start + batch_size]]
            images = torch.stack([torch.from_numpy(load_image(p, size)) for p in chunk])  # (B, 3, S, S)
            yield from zip(chunk, self.caption_images(images, **kwargs))

    @property
    def uses_grid(self) -> bool:
        return bool(getattr(self.decoder, "uses_grid", False))
