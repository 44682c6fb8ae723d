"""An ensemble of trained decoders behind the one step API, so every search decodes with it.

    python -m eval.bleu_report --checkpoint runs/a runs/b --split val --beam 20
    python caption.py --img photo.jpg --checkpoint runs/a runs/b

At each step the members' word distributions are averaged (the mixture
``log mean_m p_m(w | ...)``, computed as a log-sum-exp), and beam search ranks hypotheses by
the mixture's log-probability. Every member keeps its own recurrent state; the one batched
search reorders all of them together, so an ensemble of M models costs M decoder steps per
search step and one search.

Members must share what the search and the features depend on: the vocabulary (word for
word), the encoder and its input (name, image size, grid size; no fine-tuned CNN weights,
since one encoder computes the features every member reads). Decoder types may differ: a
Show and Tell member ignores the grid an attention member reads. The first checkpoint's
config supplies the decoding settings (beam size, length penalty, maximum length).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from nic.decoders.base import State, StepDecoderBase

__all__ = ["EnsembleDecoder"]


class EnsembleDecoder(StepDecoderBase):
    """Averages the next-word distributions of ``members`` (decoders over one vocabulary).

    The state holds every member's state under ``"<m>/<key>"``; ``alpha`` (when any member
    attends) is the mean of the attending members' weights, for attention maps.
    """

    def __init__(self, members: Sequence[StepDecoderBase]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one decoder")
        sizes = {m.vocab_size for m in members}
        if len(sizes) != 1:
            raise ValueError(f"ensemble members must share one vocabulary, got vocabulary sizes {sorted(sizes)}")
        self.members = nn.ModuleList(members)
        self.vocab_size, self.pad_id = members[0].vocab_size, members[0].pad_id
        self.uses_grid = any(m.uses_grid for m in members)
        self._log_m = math.log(len(members))

    def init_state(self, pooled: Tensor, grid: Tensor | None = None) -> State:
        state: State = {}
        for i, m in enumerate(self.members):
            sub = m.init_state(pooled, grid if m.uses_grid else None)
            state.update({f"{i}/{k}": v for k, v in sub.items()})
        return state

    def _member_state(self, state: State, i: int) -> State:
        prefix = f"{i}/"
        return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}

    def step(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        """tokens (B,) -> (log of the members' mean distribution (B, V), the next state)."""
        new_state: State = {}
        log_probs, alphas = [], []
        for i, m in enumerate(self.members):
            lp, sub = m.step(tokens, self._member_state(state, i))  # (B, V) log-probs
            log_probs.append(lp)
            if "alpha" in sub:
                alphas.append(sub["alpha"])
            new_state.update({f"{i}/{k}": v for k, v in sub.items()})
        mixed = torch.logsumexp(torch.stack(log_probs), dim=0) - self._log_m  # (M, B, V) -> (B, V)
        if alphas and len({a.shape for a in alphas}) == 1:
            new_state["alpha"] = torch.stack(alphas).mean(0)  # (B, P)
        return mixed, new_state

    def reorder_state(self, state: State, index: Tensor) -> State:
        """Each member reorders its own state (keeping its own shortcuts, e.g. an unmoved grid)."""
        out: State = {}
        for i, m in enumerate(self.members):
            out.update({f"{i}/{k}": v for k, v in m.reorder_state(self._member_state(state, i), index).items()})
        if "alpha" in state:
            out["alpha"] = state["alpha"].index_select(0, index)
        return out

    def forward(self, pooled: Tensor, grid: Tensor | None, captions: Tensor) -> Tensor:
        """Teacher forcing: the log of the members' mean distribution (B, T-1, V), as log-probs."""
        per_member = [m(pooled, grid if m.uses_grid else None, captions).log_softmax(-1) for m in self.members]
        return torch.logsumexp(torch.stack(per_member), dim=0) - self._log_m
