"""Training: per-word negative log-likelihood, validation BLEU from real decoding, checkpoints.

The pieces are small functions (``train_one_epoch``, ``validation_loss``, ``validate``,
``save``); :func:`train` wires them together from a :class:`nic.config.Config`.

A run directory ``<train.out_dir>/<train.name>/`` holds::

    config.yaml      the resolved configuration
    vocab.json       the vocabulary
    metrics.jsonl    one JSON line per epoch (losses, validation BLEU-1..4, lr, time)
    last.pt best.pt  checkpoints (best = highest validation BLEU-4 at train.val_beam)
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from nic.captioner import Captioner
from nic.checkpoint import save_checkpoint
from nic.config import Config, save_config
from nic.data import CaptionDataset, make_loader
from nic.decoders import build_decoder
from nic.encoders import Encoder, build_encoder
from nic.evaluation import decode_split
from nic.features import FeatureReader, cache_features
from nic.store import StoreReader, store_path
from nic.vocab import Vocabulary


@dataclass
class TrainState:
    """Everything about a run's progress that is not a model weight."""

    epoch: int = 0
    step: int = 0
    best_score: float = -1.0
    best_epoch: int = -1
    history: list[dict[str, Any]] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={name!r} but CUDA is not available; use --train.device=cpu")
    return device


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def sequence_nll(logits: torch.Tensor, captions: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Mean per-word negative log-likelihood of ``captions[:, 1:]`` (padding ignored).

    logits (B, T-1, V), captions (B, T) -> scalar.
    """
    targets = captions[:, 1:]  # (B, T-1)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=pad_id)


def batch_features(batch: dict[str, torch.Tensor], encoder: Encoder | None, device: torch.device,
                   uses_grid: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Cached features from the batch, or the encoder run on its images."""
    if "pooled" in batch:
        grid = batch.get("grid")
        return batch["pooled"].to(device), (grid.to(device) if grid is not None else None)
    assert encoder is not None, "a batch of images needs an encoder"
    pooled, grid = encoder(batch["images"].to(device))
    return pooled, (grid if uses_grid else None)


def train_one_epoch(decoder: nn.Module, encoder: Encoder | None, loader, optimizer: torch.optim.Optimizer,
                    cfg: Config, state: TrainState, device: torch.device, *, pad_id: int,
                    progress: bool = True) -> float:
    decoder.train()
    uses_grid = bool(getattr(decoder, "uses_grid", False))
    params = [p for group in optimizer.param_groups for p in group["params"]]
    total, count = 0.0, 0
    bar = tqdm(loader, desc=f"epoch {state.epoch + 1}/{cfg.train.epochs}", unit="batch", disable=not progress,
               leave=False)
    for batch in bar:
        captions = batch["captions"].to(device)  # (B, T)
        pooled, grid = batch_features(batch, encoder, device, uses_grid)
        loss = sequence_nll(decoder(pooled, grid, captions), captions, pad_id)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at step {state.step}; "
                                     "lower train.lr or check the input data")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.train.grad_clip > 0:
            nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
        optimizer.step()
        state.step += 1
        n_words = int((captions[:, 1:] != pad_id).sum())
        total += loss.item() * n_words
        count += n_words
        bar.set_postfix(loss=f"{total / count:.3f}")
    return total / max(count, 1)


@torch.inference_mode()
def validation_loss(decoder: nn.Module, encoder: Encoder | None, loader, device: torch.device,
                    *, pad_id: int) -> float:
    decoder.eval()
    uses_grid = bool(getattr(decoder, "uses_grid", False))
    total, count = 0.0, 0
    for batch in loader:
        captions = batch["captions"].to(device)
        pooled, grid = batch_features(batch, encoder, device, uses_grid)
        logits = decoder(pooled, grid, captions)
        targets = captions[:, 1:]
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                 ignore_index=pad_id, reduction="sum").item()
        count += int((targets != pad_id).sum())
    return total / max(count, 1)


def rng_state() -> dict[str, Any]:
    return {"python": list(random.getstate()[1]), "python_version": random.getstate()[0],
            "python_gauss": random.getstate()[2], "numpy": np.random.get_state()[1].tolist(),
            "numpy_pos": int(np.random.get_state()[2]), "torch": torch.get_rng_state()}


def checkpoint_payload(cfg: Config, vocab: Vocabulary, encoder: Encoder, decoder: nn.Module,
                       optimizer: torch.optim.Optimizer, state: TrainState) -> dict[str, Any]:
    return {
        "config": cfg.to_dict(),
        "vocab": vocab.to_dict(),
        "encoder_name": encoder.name,
        "decoder": decoder.state_dict(),
        "encoder": None if cfg.encoder.freeze else encoder.state_dict(),
        "training": {"epoch": state.epoch, "step": state.step, "best_score": state.best_score,
                     "best_epoch": state.best_epoch, "optimizer": optimizer.state_dict(), "rng": rng_state()},
    }


def prepare_features(cfg: Config, encoder: Encoder, store_dir: Path, device: torch.device, *, grid: bool,
                     progress: bool) -> dict[str, FeatureReader | None]:
    """With a frozen encoder, cache features for every split once; else read images."""
    readers: dict[str, FeatureReader | None] = {}
    for split in ("train", "val", "test"):
        path = store_path(store_dir, split)
        if not cfg.encoder.freeze or not path.exists():
            readers[split] = None
            continue
        cache = cache_features(encoder, path, grid=grid, dtype=cfg.encoder.feature_dtype, device=device,
                               progress=progress)
        readers[split] = FeatureReader(cache, grid=grid)
    return readers


def train(cfg: Config, *, progress: bool = True) -> Path:
    """Train the model ``cfg`` describes; return the run directory (with best.pt)."""
    from preprocess.build import prepare

    set_seed(cfg.train.seed)
    device = resolve_device(cfg.train.device)
    run_dir = Path(cfg.train.out_dir) / cfg.train.name
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")

    store_dir = prepare(cfg.data, progress=progress)
    vocab = Vocabulary.load(store_dir / "vocab.json")
    vocab.save(run_dir / "vocab.json")
    encoder = build_encoder(cfg.encoder.name, weights=cfg.encoder.weights).to(device)
    decoder = build_decoder(cfg.decoder, vocab_size=len(vocab), feature_dim=encoder.feature_dim,
                            pad_id=vocab.pad_id).to(device)
    uses_grid = bool(getattr(decoder, "uses_grid", False))
    features = prepare_features(cfg, encoder, store_dir, device, grid=uses_grid, progress=progress)
    if cfg.encoder.freeze:
        encoder.requires_grad_(False).eval()
        train_encoder = None
    else:
        train_encoder = encoder
    stores = {s: StoreReader(store_path(store_dir, s)) for s in ("train", "val")}
    generator = torch.Generator().manual_seed(cfg.train.seed)
    train_loader = make_loader(CaptionDataset(stores["train"], features["train"]), batch_size=cfg.train.batch_size,
                               shuffle=True, num_workers=cfg.data.num_workers, generator=generator)
    val_loader = make_loader(CaptionDataset(stores["val"], features["val"]), batch_size=cfg.train.batch_size,
                             shuffle=False, num_workers=cfg.data.num_workers)

    params = list(decoder.parameters()) + (list(encoder.parameters()) if train_encoder is not None else [])
    optimizer = torch.optim.Adam(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    captioner = Captioner(encoder, decoder, vocab, config=cfg, device=device)
    state = TrainState()
    metrics_file = run_dir / "metrics.jsonl"
    metrics_file.unlink(missing_ok=True)
    bad_epochs = 0
    print(f"run {run_dir}: {len(stores['train'].captions)} training captions, vocab {len(vocab)}, "
          f"decoder {cfg.decoder.type} ({sum(p.numel() for p in decoder.parameters()) / 1e6:.1f}M params), "
          f"device {device}")
    for _ in range(cfg.train.epochs):
        t0 = time.time()
        train_loss = train_one_epoch(decoder, train_encoder, train_loader, optimizer, cfg, state, device,
                                     pad_id=vocab.pad_id, progress=progress)
        val_loss = validation_loss(decoder, train_encoder, val_loader, device, pad_id=vocab.pad_id)
        decoded = decode_split(captioner, stores["val"], features["val"], limit=cfg.train.val_images,
                               beam_size=cfg.train.val_beam, max_len=cfg.eval.max_len,
                               length_penalty=cfg.eval.length_penalty, batch_size=cfg.eval.batch_size)
        bleu = decoded.bleu()
        state.epoch += 1
        record = {"epoch": state.epoch, "step": state.step, "train_loss": train_loss, "val_loss": val_loss,
                  "val_ppl": math.exp(min(val_loss, 50)), **{f"val_{k}": v for k, v in bleu.as_dict().items()},
                  "lr": optimizer.param_groups[0]["lr"], "epoch_time_s": time.time() - t0}
        improved = bleu.bleu[3] > state.best_score
        if improved:
            state.best_score, state.best_epoch, bad_epochs = bleu.bleu[3], state.epoch, 0
        else:
            bad_epochs += 1
        state.history.append(record)
        with open(metrics_file, "a") as f:
            f.write(json.dumps(record) + "\n")
        payload = checkpoint_payload(cfg, vocab, encoder, decoder, optimizer, state)
        save_checkpoint(run_dir / "last.pt", payload)
        if improved:
            save_checkpoint(run_dir / "best.pt", payload)
        print(f"epoch {state.epoch:3d}  train {train_loss:.3f}  val {val_loss:.3f}  "
              f"val BLEU-4@{cfg.train.val_beam} {bleu.bleu[3]:.4f}{' *' if improved else ''}  "
              f"({record['epoch_time_s']:.0f}s)  e.g. \"{' '.join(decoded.best[0])}\"")
        if cfg.train.patience and bad_epochs >= cfg.train.patience:
            print(f"early stop: no BLEU-4 improvement for {bad_epochs} epochs")
            break
    return run_dir
