"""The decoder step API, the shared training loss, and the registry of decoders.

Every decoder implements::

    init_state(pooled (B, F), grid (B, P, F) | None) -> state     # dict of batch-first tensors
    step(tokens (B,), state) -> (log_probs (B, V), state)
    reorder_state(state, index (B',)) -> state                      # select/duplicate rows
    forward(pooled, grid, captions (B, T)) -> logits (B, T - 1, V)  # teacher forcing
    loss(pooled, grid, captions) -> (loss, {"nll": ...})            # the training objective

``forward`` scores ``captions[:, 1:]`` given ``captions[:, :-1]`` (captions start with
``<start>``), i.e. position t of the logits predicts token t + 1. Greedy, sampling and beam
search (:mod:`nic.search`) use only ``init_state``/``step``/``reorder_state``, so they work
for every decoder without copies.

A decoder is a plug-in: one module with a :class:`StepDecoderBase` subclass decorated with
``@register_decoder("name")``. The class declares its options dataclass as ``Options`` (or
``None``); ``decoder.<name>`` in a config holds them (:class:`nic.config.DecoderConfig`), and
its ``from_config`` classmethod builds it (and checks what it needs). :func:`build_decoder`
looks the class up by ``decoder.type``. This module imports no decoder (they import it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, Protocol, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nic.typed import ConfigError, build_dataclass

State = dict[str, Tensor]


class CommonSettings(Protocol):
    """What every decoder reads from the config: the common fields of :class:`nic.config.DecoderConfig`."""

    type: str
    embed_dim: int
    hidden_dim: int
    num_layers: int
    dropout: float


class StepDecoderBase(nn.Module):
    """Base of the decoders: the step API, the training loss and the state reordering of beam search."""

    vocab_size: int
    pad_id: int = 0
    uses_grid: bool = False  # True when the decoder needs grid features (attention)
    # The decoder's options (a dataclass: its section of the config, decoder.<name>), or None.
    Options: ClassVar[type | None] = None

    @classmethod
    def from_config(cls, cfg: CommonSettings, options: Any, *, vocab_size: int, feature_dim: int,
                    grid_dim: int | None = None, pad_id: int = 0) -> StepDecoderBase:
        """Build from the common config fields and an instance of :attr:`Options` (None without).

        ``feature_dim``: F of the pooled vector; ``grid_dim``: channels of a grid location
        (None: F). Raise ``ValueError`` on settings the decoder cannot honour.
        """
        raise NotImplementedError(f"{cls.__qualname__} must define the classmethod from_config")

    def init_state(self, pooled: Tensor, grid: Tensor | None = None) -> State:
        """pooled (B, F), grid (B, P, C) | None -> the state after the image has been fed."""
        raise NotImplementedError

    def step(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        """tokens (B,) -> (log_probs (B, V), the next state)."""
        raise NotImplementedError

    def forward(self, pooled: Tensor, grid: Tensor | None, captions: Tensor) -> Tensor:
        """Teacher forcing: captions (B, T) -> logits (B, T-1, V) of ``captions[:, 1:]``."""
        raise NotImplementedError

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


class _LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of ``x @ weight.T + bias`` against ``targets``, with one (N, V) buffer.

    Forward keeps only the log-softmax (N, V); backward turns it into the softmax in place,
    subtracts the one-hot targets and scales the small (N, D) / (V, D) results instead of the
    (N, V) matrix. The gradient is ``F.cross_entropy``'s (same function, float rounding aside),
    without its zero-filled one-hot, its separate log-softmax backward or a logits tensor kept.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor) -> Tensor:
        logits = torch.addmm(bias, x, weight.t()) if bias is not None else x @ weight.t()  # (N, V)
        log_probs = torch.log_softmax(logits.float(), dim=1)  # (N, V)
        del logits
        ctx.save_for_backward(x, weight, targets, log_probs)
        ctx.has_bias, ctx.spent = bias is not None, False
        return -log_probs.gather(1, targets.unsqueeze(1)).sum()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss: Tensor) -> tuple[Tensor | None, ...]:
        if ctx.spent:
            raise RuntimeError("linear_cross_entropy: backward twice through the same graph (retain_graph) is "
                               "not supported; recompute the loss")
        ctx.spent = True
        x, weight, targets, grad = ctx.saved_tensors
        grad.exp_()  # (N, V): the softmax, in place of the log-softmax
        grad.scatter_add_(1, targets.unsqueeze(1), grad.new_full((targets.shape[0], 1), -1.0))  # softmax - onehot
        g = grad_loss.to(grad.dtype)
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = (grad @ weight.to(grad.dtype)).mul_(g).to(x.dtype)  # (N, D)
        if ctx.needs_input_grad[1]:
            dw = (grad.t() @ x.to(grad.dtype)).mul_(g).to(weight.dtype)  # (V, D)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = grad.sum(dim=0).mul_(g).to(weight.dtype)  # (V,)
        return dx, dw, db, None


def linear_cross_entropy(x: Tensor, linear: nn.Linear, targets: Tensor) -> Tensor:
    """Summed cross-entropy of ``linear(x)`` against ``targets``: x (N, D), targets (N,) -> scalar.

    Equals ``F.cross_entropy(linear(x), targets, reduction="sum")`` (float rounding aside) at less
    memory traffic; see :class:`_LinearCrossEntropy`.
    """
    return _LinearCrossEntropy.apply(x, linear.weight, linear.bias, targets)


def packed_nll(features: Tensor, linear: nn.Linear, captions: Tensor, pad_id: int) -> Tensor:
    """The mean per-word NLL of ``captions[:, 1:]`` from the output layer's input, on real words only.

    features (B, T-1, D): what ``linear`` maps to the logits of each position (as ``forward``
    would, dropout applied); captions (B, T). Equals ``sequence_nll(linear(features), captions,
    pad_id)``, but neither the output layer nor the loss runs on padded positions.
    """
    targets = captions[:, 1:]  # (B, T-1)
    real = targets != pad_id  # (B, T-1)
    return linear_cross_entropy(features[real], linear, targets[real]) / real.sum()  # (N, D), (N,) -> scalar


# ---------------------------------------------------------------------------- registry
DECODERS: dict[str, type[StepDecoderBase]] = {}

D = TypeVar("D", bound=type)


def register_decoder(name: str) -> Callable[[D], D]:
    """Class decorator: make a :class:`StepDecoderBase` subclass ``decoder.type: <name>``."""
    if not name.isidentifier():
        raise ValueError(f"decoder name {name!r}: use an identifier (it is a config key)")

    def register(cls: D) -> D:
        if not (isinstance(cls, type) and issubclass(cls, StepDecoderBase)):
            raise TypeError(f"register_decoder({name!r}): {cls!r} is not a StepDecoderBase subclass")
        if cls.from_config.__func__ is StepDecoderBase.from_config.__func__:
            raise TypeError(f"register_decoder({name!r}): {cls.__qualname__} does not define from_config")
        if cls.Options is not None and not dataclasses.is_dataclass(cls.Options):
            raise TypeError(f"register_decoder({name!r}): {cls.__qualname__}.Options must be a dataclass or None")
        old = DECODERS.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"decoder type {name!r} is already registered ({old.__module__}.{old.__qualname__})")
        DECODERS[name] = cls
        return cls

    return register


def decoder_class(name: str) -> type[StepDecoderBase]:
    """The registered class of ``decoder.type: <name>``; an unknown name lists the valid ones."""
    if name not in DECODERS:
        raise ValueError(f"unknown decoder type {name!r}; valid types: {sorted(DECODERS)}")
    return DECODERS[name]


def decoder_options(name: str, raw: dict[str, Any] | None = None, *, source: str = "decoder config",
                    path: str | None = None) -> Any:
    """The ``Options`` of decoder ``name`` from its raw section (None: all defaults), checked key by key.

    Returns None for a decoder without options; giving such a decoder a section is an error.
    """
    cls = decoder_class(name)
    path = path or f"decoder.{name}"
    if cls.Options is None:
        if raw is not None:
            raise ConfigError(f"{source}: {path}: the {name!r} decoder takes no options")
        return None
    return build_dataclass(cls.Options, {} if raw is None else raw, source, path)


def build_decoder(cfg: CommonSettings, *, vocab_size: int, feature_dim: int, grid_dim: int | None = None,
                  pad_id: int = 0) -> StepDecoderBase:
    """Build the decoder a :class:`nic.config.DecoderConfig` describes (``cfg.type``, its section).

    ``feature_dim``: F of the pooled vector; ``grid_dim``: channels of a grid location
    (decoders that attend; default ``feature_dim``).
    """
    cls = decoder_class(cfg.type)
    options = decoder_options(cfg.type, getattr(cfg, "options", {}).get(cfg.type))
    return cls.from_config(cfg, options, vocab_size=vocab_size, feature_dim=feature_dim, grid_dim=grid_dim,
                           pad_id=pad_id)
