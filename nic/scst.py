"""Self-critical sequence training (Rennie et al. 2017): a policy gradient on the captions' CIDEr-D.

Cross-entropy training copies the next reference word; captions are judged whole. SCST samples
K captions per image from the model, scores each with its CIDEr-D against the image's
references (plus an optional BLEU-4 term), and follows

    grad = - sum_{i,k} (R_ik - b_ik) * grad log p(c_ik | image_i)   /  (sampled words, all processes)

with the baseline ``b_ik`` the mean reward of the image's *other* samples (Luo 2020, "a better
variant of SCST"; ``scst.baseline: mean``) or the reward of the greedy caption (the original
paper; ``scst.baseline: greedy``).

How the pieces fit (one optimizer step, :meth:`ScstObjective.__call__`):

1. **Sampling** goes through :func:`nic.search.sample`, the one decoding module, on the
   decoder's step API. Its random numbers are drawn per *image* from (train.seed, epoch, store
   row) (:func:`image_uniforms`) and turned into tokens by inverse-CDF sampling: an image's
   samples do not depend on which other images share its batch or its process, so a run under
   ``torchrun`` samples exactly what one process samples, and a resumed run what it would have.
2. **Rewards**: :class:`nic.cider.CiderD` with document frequencies from the *training*
   references (computed once per run; each image's reference vectors cached on first use).
   A caption that hit ``eval.max_len`` words without ``<end>`` is scored as it is, and counted.
3. **Loss**: the sampled captions are scored again with gradients by the decoder's teacher-forced
   ``forward`` (the same function the step API computes, checked by the decoder contract
   tests). A caption's ``<end>`` counts as a sampled word, except when it was forced at the
   length limit. By default the decoder runs in eval mode throughout (no dropout): the samples
   come from the policy that is deployed, and their gradient is that policy's. With
   ``scst.dropout`` it runs in train mode for both (as self-critical.pytorch does): a
   regulariser, and the samples then depend on the batch's dropout draws (the greedy baseline
   is still decoded without dropout).

The training loop (:func:`nic.training.train_one_epoch`) is shared with cross-entropy; it
averages the loss over the sampled words of all processes, as it does for reference words.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from nic import search
from nic.bleu import sentence_bleu
from nic.cider import CiderD
from nic.decoders import StepDecoderBase
from nic.vocab import Vocabulary, bad_ending

__all__ = ["ScstObjective", "describe", "image_uniforms"]

def image_uniforms(seed: int, epoch: int, rows: Sequence[int], samples: int, steps: int) -> Tensor:
    """Uniform numbers (len(rows) * samples, steps) in [0, 1): image ``rows[i]``'s come from its own generator."""
    out = []
    for row in rows:
        key = ((seed * 1_000_003 + epoch) * 2_000_029 + int(row)) % (2**63 - 1)
        out.append(torch.rand(samples, steps, generator=torch.Generator().manual_seed(key)))
    return torch.cat(out) if out else torch.empty(0, steps)


class ScstObjective:
    """The SCST loss of a batch of images (a callable the training loop uses in place of the NLL).

    Args:
        references: every training image's reference captions (token lists), by store row.
        vocab: the model's vocabulary.
        settings: the ``scst`` config section (samples, baseline, cider_weight, bleu_weight, temperature,
            dropout).
        max_len: the longest caption sampled (``eval.max_len``).
        seed: ``train.seed``, for the per-image random numbers.
    """

    def __init__(self, references: Sequence[Sequence[Sequence[str]]], vocab: Vocabulary, settings: Any, *,
                 max_len: int, seed: int) -> None:
        self.references, self.vocab, self.settings = references, vocab, settings
        self.max_len, self.seed = max_len, seed
        self.cider = CiderD(references)  # document frequencies from the training references, once

    def reward(self, words: Sequence[str], row: int) -> float:
        refs = self.references[row]
        value = 0.0
        if self.settings.cider_weight:
            value += self.settings.cider_weight * self.cider.score(words, refs, key=row)
        if self.settings.bleu_weight:
            value += self.settings.bleu_weight * sentence_bleu(words, refs)[3]
        return value

    def _ids(self) -> dict[str, int]:
        v = self.vocab
        return {"start_id": v.start_id, "end_id": v.end_id, "pad_id": v.pad_id}

    def _repeat(self, x: Tensor | None) -> Tensor | None:
        """Per-image rows -> K rows each, image-major (row i*K + k is sample k of image i)."""
        return x.repeat_interleave(self.settings.samples, 0) if x is not None else None

    def sample(self, decoder: StepDecoderBase, pooled: Tensor, grid: Tensor | None, rows: Sequence[int],
               epoch: int) -> list[search.Hypothesis]:
        """K captions per image (image-major: row i*K + k is sample k of image i)."""
        return self._sample(decoder, self._repeat(pooled), self._repeat(grid), rows, epoch)

    def _sample(self, decoder: StepDecoderBase, pooled_k: Tensor, grid_k: Tensor | None, rows: Sequence[int],
                epoch: int) -> list[search.Hypothesis]:
        """:meth:`sample` on features already repeated K times per image."""
        uniforms = image_uniforms(self.seed, epoch, rows, self.settings.samples, self.max_len + 1)
        return search.sample(decoder, pooled_k, grid_k, max_len=self.max_len, temperature=self.settings.temperature,
                             uniforms=uniforms.to(pooled_k.device), **self._ids())

    def baselines(self, decoder: StepDecoderBase, pooled: Tensor, grid: Tensor | None, rows: Sequence[int],
                  rewards: Tensor) -> Tensor:
        """rewards (B, K) -> baselines (B, K)."""
        K = rewards.size(1)
        if self.settings.baseline == "mean":
            return (rewards.sum(dim=1, keepdim=True) - rewards) / (K - 1)
        mode = decoder.training
        decoder.eval()  # the deployed policy's caption
        greedy = search.greedy_search(decoder, pooled, grid, max_len=self.max_len, **self._ids())
        decoder.train(mode)
        values = [self.reward(self.vocab.decode(h.tokens), row) for h, row in zip(greedy, rows, strict=True)]
        return torch.tensor(values, dtype=torch.float64).unsqueeze(1).expand(-1, K)

    def captions(self, hyps: Sequence[search.Hypothesis], device: torch.device) -> tuple[Tensor, Tensor]:
        """Sampled captions as teacher-forcing input (N, T) and the mask of their sampled tokens (N, T-1)."""
        v = self.vocab
        T = 2 + max((len(h.tokens) for h in hyps), default=0)
        captions = torch.full((len(hyps), T), v.pad_id, dtype=torch.long)
        mask = torch.zeros(len(hyps), T - 1, dtype=torch.bool)
        for i, h in enumerate(hyps):
            n = len(h.tokens)
            captions[i, 0] = v.start_id
            captions[i, 1:n + 1] = torch.tensor(h.tokens, dtype=torch.long)
            captions[i, n + 1] = v.end_id
            chose_end = h.finished and n < self.max_len  # at the limit <end> was the only legal token
            mask[i, :n + chose_end] = True
        return captions.to(device), mask.to(device)

    def __call__(self, decoder: StepDecoderBase, pooled: Tensor, grid: Tensor | None, rows: Sequence[int],
                 epoch: int) -> tuple[Tensor, int, dict[str, float]]:
        """(loss: mean over this process's sampled words, the number of those words, sums for the log)."""
        decoder.train(self.settings.dropout)
        rows = [int(r) for r in rows]
        pooled_k, grid_k = self._repeat(pooled), self._repeat(grid)  # once, for sampling and for the gradient
        hyps = self._sample(decoder, pooled_k, grid_k, rows, epoch)
        K = self.settings.samples
        words = [self.vocab.decode(h.tokens) for h in hyps]
        rewards = torch.tensor([self.reward(w, rows[i // K]) for i, w in enumerate(words)],
                               dtype=torch.float64).view(len(rows), K)  # (B, K)
        with torch.no_grad():
            base = self.baselines(decoder, pooled, grid, rows, rewards)  # (B, K)
        advantage = (rewards - base).view(-1).to(pooled.device, torch.float32)  # (N,)
        captions, mask = self.captions(hyps, pooled.device)  # (N, T), (N, T-1)
        log_probs = F.log_softmax(decoder(pooled_k, grid_k, captions).float(), dim=-1)  # (N, T-1, V)
        token_lp = log_probs.gather(2, captions[:, 1:].unsqueeze(2)).squeeze(2)  # (N, T-1)
        n_words = int(mask.sum())
        loss = -(advantage.unsqueeze(1) * token_lp * mask).sum() / max(n_words, 1)
        with torch.no_grad():
            entropy = -(log_probs.exp() * log_probs).sum(-1)  # (N, T-1)
        stats = {"reward": float(rewards.sum()), "baseline": float(base.sum()), "samples": float(len(hyps)),
                 "entropy": float((entropy * mask).sum()), "truncated": float(sum(len(h.tokens) >= self.max_len
                                                                                  for h in hyps)),
                 "bad_endings": float(sum(bad_ending(w) for w in words))}
        return loss, n_words, stats


def describe(sums: dict[str, float], words: float) -> dict[str, float]:
    """Per-sample means (reward, baseline, truncated and bad-ending shares) and the per-word entropy."""
    n = max(sums.get("samples", 0.0), 1.0)
    out = {k: sums.get(k, 0.0) / n for k in ("reward", "baseline", "truncated", "bad_endings")}
    out["entropy"] = sums.get("entropy", 0.0) / max(words, 1.0)
    return out
