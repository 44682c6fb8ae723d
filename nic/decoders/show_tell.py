"""Show and Tell (Vinyals et al. 2015): the NIC decoder, ``decoder.type: nic``; it has no options section."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nic.decoders.base import CommonSettings, State, StepDecoderBase, packed_nll, register_decoder


@contextlib.contextmanager
def _aten_lstm() -> Iterator[None]:
    """Run ``nn.LSTM`` with ATen's CPU kernel instead of oneDNN's (the same function; rounding may differ).

    For one step on a search batch (e.g. 1,000 rows) oneDNN's LSTM took 1.3-3x ATen's time on
    the reference CPU (docs/benchmarks.md, Beam search); over whole sequences (training) it is
    the faster one, so only :meth:`ShowAndTellDecoder.step` uses this.
    """
    enabled = torch._C._get_mkldnn_enabled()  # torch.backends.mkldnn.flags() would warn about TF32 each call
    torch._C._set_mkldnn_enabled(False)
    try:
        yield
    finally:
        torch._C._set_mkldnn_enabled(enabled)


@register_decoder("nic")
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

    @classmethod
    def from_config(cls, cfg: CommonSettings, options: None, *, vocab_size: int, feature_dim: int,
                    grid_dim: int | None = None, pad_id: int = 0) -> ShowAndTellDecoder:
        return cls(vocab_size=vocab_size, feature_dim=feature_dim, embed_dim=cfg.embed_dim, hidden_dim=cfg.hidden_dim,
                   num_layers=cfg.num_layers, dropout=cfg.dropout, pad_id=pad_id)

    def forward(self, pooled: Tensor, grid: Tensor | None, captions: Tensor) -> Tensor:
        """Teacher forcing over whole sequences with one ``nn.LSTM`` call.

        pooled (B, F); captions (B, T) = <start> w1 .. wn <end> <pad>...; -> logits (B, T-1, V).
        """
        return self.out(self._hidden(pooled, captions))  # (B, T-1, V)

    def _hidden(self, pooled: Tensor, captions: Tensor) -> Tensor:
        """The output layer's input at every position: captions (B, T) -> dropout(h) (B, T-1, H)."""
        x_image = self.image_embed(pooled).unsqueeze(1)  # (B, 1, E): the input at t = -1
        x_words = self.word_embed(captions[:, :-1])  # (B, T-1, E): <start> w1 .. (no last token)
        x = self.dropout(torch.cat([x_image, x_words], dim=1))  # (B, T, E)
        out, _ = self.lstm(x)  # (B, T, H)
        return self.dropout(out[:, 1:])  # (B, T-1, H): drop the t = -1 output

    def loss(self, pooled: Tensor, grid: Tensor | None, captions: Tensor) -> tuple[Tensor, dict[str, float]]:
        """The mean per-word NLL, as the base class defines it, with the output layer on real words only.

        The same dropout masks as :meth:`forward` (drawn on the padded tensors), so the same
        function and the same random numbers; padded positions skip the (N, V) work.
        """
        nll = packed_nll(self._hidden(pooled, captions), self.out, captions, self.pad_id)
        return nll, {"nll": float(nll.detach())}

    def init_state(self, pooled: Tensor, grid: Tensor | None = None) -> State:
        x_image = self.image_embed(pooled).unsqueeze(1)  # (B, 1, E)
        _, (h, c) = self.lstm(x_image)  # (L, B, H) each, from a zero state
        return {"h": h.transpose(0, 1), "c": c.transpose(0, 1)}  # batch-first: (B, L, H)

    def step(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        x = self.word_embed(tokens).unsqueeze(1)  # (B, 1, E)
        hc = (state["h"].transpose(0, 1).contiguous(), state["c"].transpose(0, 1).contiguous())  # (L, B, H)
        with _aten_lstm():  # one step: ATen's LSTM runs near the matmul rate, oneDNN's well under it
            out, (h, c) = self.lstm(x, hc)  # out (B, 1, H)
        log_probs = F.log_softmax(self.out(out[:, 0]), dim=-1)  # (B, V)
        return log_probs, {"h": h.transpose(0, 1), "c": c.transpose(0, 1)}
