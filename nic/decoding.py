"""Decoding settings: the ONE owner of how captions are decoded.

A checkpoint's ``eval`` section says how its model was scored (beam size, length penalty,
maximum length). :class:`DecodeSettings` is made from that section, and every caller
(validation, the BLEU report, ``caption.py``, the benches) starts from it and overrides
fields explicitly, so the captions a user gets are the captions that were scored::

    settings = DecodeSettings.from_eval(cfg.eval)            # the checkpoint's
    settings = settings.replace(beam_size=3)                 # validation at train.val_beam
    settings = settings.replace(**{"length_penalty": None})  # None keeps the checkpoint's value
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

METHODS = ("beam", "greedy", "sample")


@dataclass(frozen=True)
class DecodeSettings:
    # "beam" (batched beam search), "greedy" or "sample".
    method: str = "beam"
    # Beam width k (the paper: 20); used by method "beam" only.
    beam_size: int = 20
    # Longest caption in words (without <start>/<end>); a caption stopped here is unfinished.
    max_len: int = 20
    # Hypothesis score = logprob / length ** length_penalty (0: plain log-probability).
    length_penalty: float = 0.0
    # Captions returned per image (beam only; at most beam_size).
    n_best: int = 1
    # Sampling temperature and top-k (0: the whole vocabulary); method "sample" only.
    temperature: float = 1.0
    top_k: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"decoding method {self.method!r}: valid methods are {', '.join(METHODS)}")
        if self.beam_size < 1:
            raise ValueError(f"beam size {self.beam_size}: must be at least 1")
        if self.max_len < 0:
            raise ValueError(f"max length {self.max_len}: must be 0 or more")
        if self.n_best < 1 or (self.method == "beam" and self.n_best > self.beam_size):
            raise ValueError(f"n-best {self.n_best}: must be between 1 and the beam size ({self.beam_size})")
        if not self.temperature > 0:
            raise ValueError(f"temperature {self.temperature}: must be positive")
        if self.top_k < 0:
            raise ValueError(f"top-k {self.top_k}: must be 0 (whole vocabulary) or more")

    @classmethod
    def from_eval(cls, eval_cfg: Any) -> DecodeSettings:
        """The settings a model was scored with: its config's ``eval`` section.

        The beam size is the largest of ``eval.beam_sizes`` (the headline figure, k = 20).
        """
        beams = list(getattr(eval_cfg, "beam_sizes", None) or [cls.beam_size])
        return cls(beam_size=max(beams), max_len=eval_cfg.max_len, length_penalty=eval_cfg.length_penalty)

    def replace(self, **overrides: Any) -> DecodeSettings:
        """A copy with the given fields changed; a ``None`` value keeps the current one."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"unknown decoding setting(s) {unknown}")
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        if self.method == "beam":
            return f"beam {self.beam_size}, length penalty {self.length_penalty:g}, max length {self.max_len}"
        if self.method == "sample":
            return f"sampling at temperature {self.temperature:g}, max length {self.max_len}"
        return f"greedy, max length {self.max_len}"
