"""Decoding settings: the ONE owner of how captions are decoded.

A checkpoint's ``eval`` section says how its model was scored (beam size, length penalty,
maximum length). :class:`DecodeSettings` is made from that section, and every caller
(validation, the BLEU report, ``caption.py``, the benches) starts from it and overrides
fields explicitly, so the captions a user gets are the captions that were scored::

    settings = DecodeSettings.from_eval(cfg.eval)            # the checkpoint's
    settings = settings.replace(beam_size=3)                 # validation at train.val_beam
    settings = settings.replace(**{"length_penalty": None})  # None keeps the checkpoint's value

Every field is checked in one place, whichever way the settings are made (constructor,
:meth:`DecodeSettings.replace`, :meth:`DecodeSettings.from_eval`): a value of the wrong type or
out of its range (:attr:`DecodeSettings.RANGES`) is a ``ValueError`` naming the setting and
the value. ``max_len`` 0 is legal and means what it says (only the empty caption, closed
with ``<end>``; see :mod:`nic.search`): it is never replaced by a default.

Whether a search fits the machine is decided here too, before :mod:`nic.search` allocates
anything: :func:`search_memory_bytes` estimates the working set of a beam search (it grows
as images x beam x vocabulary) and :func:`check_search_memory` refuses one that would need
more than :data:`MEMORY_SHARE` of :func:`available_memory_bytes`.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nic.typed import at_least, greater_than, one_of, value_problem

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

    # Legal values of each field (nic.typed); a float must also be finite. An error reads
    # "<label> <value>: <problem> (<field>)", e.g. "beam size 0: must be 1 or more (beam_size)".
    RANGES = {"method": one_of(*METHODS), "beam_size": at_least(1), "max_len": at_least(0),
              "length_penalty": at_least(0.0), "n_best": at_least(1), "temperature": greater_than(0.0),
              "top_k": at_least(0)}
    LABELS = {"method": "decoding method", "beam_size": "beam size", "max_len": "max length",
              "length_penalty": "length penalty", "n_best": "n-best", "temperature": "temperature", "top_k": "top-k"}

    def __post_init__(self) -> None:
        hints = _hints()
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            problem = value_problem(value, hints[f.name], self.RANGES[f.name])
            if problem:
                raise ValueError(f"{self.LABELS[f.name]} {value!r}: {problem} ({f.name})")
        if self.method == "beam" and self.n_best > self.beam_size:
            raise ValueError(f"n-best {self.n_best}: must be between 1 and the beam size ({self.beam_size}) (n_best)")

    @classmethod
    def from_eval(cls, eval_cfg: Any) -> DecodeSettings:
        """The settings a model was scored with: its config's ``eval`` section.

        The beam size is the largest of ``eval.beam_sizes`` (the headline figure, k = 20); a
        section without the key gets the default, an empty list is an error (never a silent 20).
        """
        beams = getattr(eval_cfg, "beam_sizes", None)
        beams = [cls.beam_size] if beams is None else list(beams)
        if not beams:
            raise ValueError("eval.beam_sizes is empty: give at least one beam size, e.g. [20]")
        bad = [k for k in beams if value_problem(k, int, cls.RANGES["beam_size"])]
        if bad:
            raise ValueError(f"eval.beam_sizes={beams}: every beam size must be an integer, 1 or more (got {bad[0]!r})")
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


@functools.cache
def _hints() -> dict[str, Any]:
    """The field types of :class:`DecodeSettings`, resolved once (annotations are strings in this module)."""
    return typing.get_type_hints(DecodeSettings)


# ---------------------------------------------------------------------------- the memory a beam search needs
# Bytes per candidate score (one of the B*K*V of a step) alive at a step's peak, measured on CPU
# with LSTM decoders (peak RSS / (B*K*V*4 bytes) = 4.4 to 6.0): the decoder's log-probs, their
# masked float32 copy or the candidate sums, and topk's working copy of the (B, K*V) rows with
# int64 indices: about six float32 values.
CANDIDATE_BYTES = 24
# A search is refused when its estimate exceeds this share of the memory available.
MEMORY_SHARE = 0.5


def search_memory_bytes(batch: int, beam: int, vocab: int, *, max_len: int = 20, state_bytes_per_row: int = 0,
                        attention_locations: int = 0) -> int:
    """Estimated peak working memory of :func:`nic.search.beam_search` in bytes (nothing is allocated).

    ``batch * beam`` rows each score ``vocab`` candidates a step (:data:`CANDIDATE_BYTES` each);
    the decoder state (``state_bytes_per_row``, as ``init_state`` makes it) is expanded to every
    row and each step makes a new one (x2); the token (int64) and attention (float32,
    ``attention_locations`` a step) histories grow to ``max_len + 1`` steps and are copied when
    reordered (x2).
    """
    rows = batch * beam
    history = 2 * rows * (max_len + 1) * (8 + 4 * attention_locations)
    return rows * vocab * CANDIDATE_BYTES + 2 * rows * state_bytes_per_row + history


def available_memory_bytes(device: Any) -> int | None:
    """Bytes a search may still allocate on ``device`` (a ``torch.device`` or its name); None where unknown.

    CUDA: the free device memory plus what PyTorch's caching allocator holds unused. CPU
    (Linux): ``MemAvailable`` of /proc/meminfo, capped by the cgroup's memory limit.
    """
    kind = str(device).split(":")[0]
    if kind == "cuda":
        import torch  # only here: this module is otherwise free of torch

        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if kind != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            available = int(dict(line.split(":", 1) for line in f)["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError, IndexError):
        return None
    cgroup = Path("/sys/fs/cgroup")
    for limit, usage in (("memory.max", "memory.current"), ("memory/memory.limit_in_bytes",
                                                          "memory/memory.usage_in_bytes")):
        try:
            return max(0, min(available, int((cgroup / limit).read_text()) - int((cgroup / usage).read_text())))
        except (OSError, ValueError):  # no such cgroup file, or "max" (no limit)
            continue
    return available


def check_search_memory(batch: int, beam: int, vocab: Any, device: Any, *, max_len: int = 20,
                        state: dict[str, Any] | None = None) -> None:
    """Raise ``ValueError``, before anything is allocated, when a beam search of ``beam`` over ``vocab``
    words for ``batch`` images (from a decoder ``state`` of ``batch`` rows, when given) would need more
    than :data:`MEMORY_SHARE` of the memory available on ``device``. ``vocab`` None: nothing to check."""
    if not isinstance(vocab, int) or isinstance(vocab, bool):
        return
    sizes = _state_sizes(state) if state is not None else {}
    need = search_memory_bytes(batch, beam, vocab, max_len=max_len, **sizes)
    available = available_memory_bytes(device)
    if available is None or need <= MEMORY_SHARE * available:
        return
    raise ValueError(
        f"beam search at beam size {beam} over a vocabulary of {vocab} words ({batch} image(s) at once) would need "
        f"about {_size(need)} ({need} bytes) of working memory, more than {MEMORY_SHARE:.0%} of the "
        f"{_size(available)} ({available} bytes) available on {device}; use a smaller --beam (beam_size), or "
        "caption fewer images at a time")


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _state_sizes(state: dict[str, Any]) -> dict[str, int]:
    """Bytes per batch row of a decoder state (batch-first tensors), and the attention locations P
    when it carries ``alpha`` (B, P)."""
    tensors = [v for v in state.values() if hasattr(v, "element_size") and v.dim() > 0]
    per_row = sum(v.element_size() * v.numel() // max(v.size(0), 1) for v in tensors)
    alpha = state.get("alpha")
    return {"state_bytes_per_row": per_row,
            "attention_locations": alpha.size(1) if hasattr(alpha, "dim") and alpha.dim() == 2 else 0}
