"""Caption decoders, all behind one step API that search code relies on.

Every decoder implements::

    init_state(pooled (B, F), grid (B, P, F) | None) -> state     # dict of batch-first tensors
    step(tokens (B,), state) -> (log_probs (B, V), state)
    reorder_state(state, index (B',)) -> state                      # select/duplicate rows
    forward(pooled, grid, captions (B, T)) -> logits (B, T - 1, V)  # teacher forcing

``forward`` scores ``captions[:, 1:]`` given ``captions[:, :-1]`` (captions start with
``<start>``), i.e. position t of the logits predicts token t + 1. Greedy, sampling and beam
search (:mod:`nic.search`) use only ``init_state``/``step``/``reorder_state``, so they work
for every decoder without copies.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

State = dict[str, Tensor]


class StepDecoderBase(nn.Module):
    """Shared parts of the decoders: the training loss and the state reordering of beam search."""

    vocab_size: int
    pad_id: int = 0
    uses_grid: bool = False  # True when the decoder needs grid features (attention)

    def reorder_state(self, state: State, index: Tensor) -> State:
        return {k: v.index_select(0, index) for k, v in state.items()}

    def loss(self, pooled: Tensor, grid: Tensor | None, captions: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Training objective on a batch: mean per-word NLL of ``captions[:, 1:]`` (padding ignored).

        Returns the loss to minimise and a dict of its named parts (for logging). Decoders
        with extra terms (e.g. attention's doubly stochastic regulariser) override this.
        """
        nll = sequence_nll(self(pooled, grid, captions), captions, self.pad_id)
        return nll, {"nll": float(nll.detach())}


def sequence_nll(logits: Tensor, captions: Tensor, pad_id: int, reduction: str = "mean") -> Tensor:
    """Per-word negative log-likelihood of ``captions[:, 1:]``, padding ignored.

    logits (B, T-1, V), captions (B, T) -> scalar (mean over words, or their sum).
    """
    targets = captions[:, 1:]  # (B, T-1)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=pad_id,
                           reduction=reduction)


class ShowAndTellDecoder(StepDecoderBase):
    """The NIC decoder (Vinyals et al. 2015): an LSTM that sees the image once, at t = -1.

    The pooled CNN feature is projected into the word-embedding space and fed as the
    LSTM's input at t = -1 (from a zero state); then ``<start>`` and the words follow. The
    image is never fed again, so it reaches later steps only through the LSTM memory.
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        feature_dim: int,
        embed_dim: int = 512,
        hidden_dim: int = 512,
        num_layers: int = 1,
        dropout: float = 0.5,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        self.vocab_size, self.pad_id = vocab_size, pad_id
        self.image_embed = nn.Linear(feature_dim, embed_dim)  # W_I: CNN feature -> x_{-1}
        self.word_embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)  # W_e
        self.lstm = nn.LSTM(embed_dim, hidden_dim, num_layers=num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_dim, vocab_size)

    def forward(self, pooled: Tensor, grid: Tensor | None, captions: Tensor) -> Tensor:
        """Teacher forcing over whole sequences with one ``nn.LSTM`` call.

        pooled (B, F); captions (B, T) = <start> w1 .. wn <end> <pad>...; -> logits (B, T-1, V).
        """
        x_image = self.image_embed(pooled).unsqueeze(1)  # (B, 1, E): the input at t = -1
        x_words = self.word_embed(captions[:, :-1])  # (B, T-1, E): <start> w1 .. (no last token)
        x = self.dropout(torch.cat([x_image, x_words], dim=1))  # (B, T, E)
        out, _ = self.lstm(x)  # (B, T, H)
        return self.out(self.dropout(out[:, 1:]))  # (B, T-1, V): drop the t = -1 output

    def init_state(self, pooled: Tensor, grid: Tensor | None = None) -> State:
        x_image = self.image_embed(pooled).unsqueeze(1)  # (B, 1, E)
        _, (h, c) = self.lstm(x_image)  # (L, B, H) each, from a zero state
        return {"h": h.transpose(0, 1), "c": c.transpose(0, 1)}  # batch-first: (B, L, H)

    def step(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        x = self.word_embed(tokens).unsqueeze(1)  # (B, 1, E)
        hc = (state["h"].transpose(0, 1).contiguous(), state["c"].transpose(0, 1).contiguous())  # (L, B, H)
        out, (h, c) = self.lstm(x, hc)  # out (B, 1, H)
        log_probs = F.log_softmax(self.out(out[:, 0]), dim=-1)  # (B, V)
        return log_probs, {"h": h.transpose(0, 1), "c": c.transpose(0, 1)}


def _show_attend_tell(**kwargs) -> StepDecoderBase:
    from nic.attention import ShowAttendTellDecoder  # imported here: nic.attention imports this module

    return ShowAttendTellDecoder(**kwargs)


DECODERS: dict[str, Callable[..., StepDecoderBase]] = {
    "nic": ShowAndTellDecoder,
    "attention": _show_attend_tell,  # nic.attention.ShowAttendTellDecoder
}


def build_decoder(cfg, *, vocab_size: int, feature_dim: int, grid_dim: int | None = None,
                  pad_id: int = 0) -> StepDecoderBase:
    """Build the decoder a :class:`nic.config.DecoderConfig` describes.

    ``feature_dim``: F of the pooled vector; ``grid_dim``: channels of a grid location
    (attention only; default ``feature_dim``).
    """
    if cfg.type not in DECODERS:
        raise ValueError(f"unknown decoder type {cfg.type!r}; valid types: {sorted(DECODERS)}")
    common = dict(vocab_size=vocab_size, feature_dim=feature_dim, embed_dim=cfg.embed_dim,
                  hidden_dim=cfg.hidden_dim, dropout=cfg.dropout, pad_id=pad_id)
    if cfg.type == "attention":
        if cfg.num_layers != 1:
            raise ValueError(f"decoder.num_layers={cfg.num_layers}: the attention decoder has one LSTM layer; "
                             "set decoder.num_layers: 1")
        return DECODERS[cfg.type](**common, grid_dim=grid_dim, attention_dim=cfg.attention_dim,
                                 alpha_c=cfg.alpha_c, grid_coords=cfg.grid_coords,
                                 attention_query=cfg.attention_query, deep_output=cfg.deep_output,
                                 grid_coords_scale=cfg.grid_coords_scale, grid_coords_gated=cfg.grid_coords_gated)
    return DECODERS[cfg.type](**common, num_layers=cfg.num_layers)
