"""Schedules over a training run: the learning rate (per optimizer step) and scheduled sampling (per epoch)."""

from __future__ import annotations

import math

import torch

from nic.config import Config


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Config, steps_per_epoch: int
                    ) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-step LambdaLR: warm-up, then constant / step decay by epoch / cosine."""
    t = cfg.train
    total = max(t.epochs * steps_per_epoch, 1)
    if t.lr_schedule not in ("constant", "step", "cosine"):
        raise ValueError(f"train.lr_schedule={t.lr_schedule!r}; valid: constant, step, cosine")

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / t.warmup_steps) if t.warmup_steps > 0 else 1.0
        if t.lr_schedule == "step":
            return warm * t.lr_gamma ** ((step // max(steps_per_epoch, 1)) // max(t.lr_step_epochs, 1))
        if t.lr_schedule == "cosine":
            return warm * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        return warm

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def ss_probability(cfg: Config, epoch: int) -> float:
    t = cfg.train
    if t.ss_max_prob <= 0 or epoch < t.ss_start_epoch:
        return 0.0
    return t.ss_max_prob * min(1.0, (epoch - t.ss_start_epoch + 1) / max(t.ss_ramp_epochs, 1))
