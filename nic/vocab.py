"""Tokenizer and vocabulary.

The tokenizer is deliberately simple and needs no downloaded data (``nltk.word_tokenize``
needs ``punkt`` and fails offline): lower-case, keep runs of letters/digits (an inner
apostrophe stays attached, so ``"man's"`` is one token), drop every other character.

The vocabulary is plain JSON (never a pickled class) and is stored beside every HDF5
store and inside every checkpoint::

    {"format": "nic-vocab", "version": 1,
     "itos": ["<pad>", "<start>", "<end>", "<unk>", "a", ...],
     "settings": {"min_count": 5, ...},      # how it was built
     "stats": {"words_seen": ..., ...}}      # what building it counted

``<pad>`` is always id 0, so padded caption tensors can be masked with ``ids != 0``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)

_TOKEN_RE = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def tokenize(text: str) -> list[str]:
    """Lower-case ``text`` and split it into word tokens, punctuation stripped.

    >>> tokenize("Two RED circles, left of a square.")
    ['two', 'red', 'circles', 'left', 'of', 'a', 'square']
    """
    return _TOKEN_RE.findall(text.lower())


#: Words that cannot end an English caption: a caption ending in one was cut off ("a man in a").
BAD_ENDINGS = frozenset("a an the of in on at to with and or from by for into onto near his her their its "
                        "while is are".split())


def bad_ending(words: Sequence[str]) -> bool:
    """True when the caption ends in a word that cannot end a sentence (the known SCST failure)."""
    return bool(words) and words[-1] in BAD_ENDINGS


class Vocabulary:
    """A bijection between tokens and ids with the four special tokens first."""

    def __init__(
        self,
        itos: Sequence[str],
        *,
        settings: dict[str, Any] | None = None,
        stats: dict[str, Any] | None = None,
    ) -> None:
        itos = list(itos)
        if tuple(itos[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with {SPECIALS}, got {itos[:4]}")
        if len(set(itos)) != len(itos):
            dup = [w for w, c in Counter(itos).items() if c > 1][:5]
            raise ValueError(f"duplicate tokens in vocabulary: {dup}")
        self.itos = itos
        self.stoi = {w: i for i, w in enumerate(itos)}
        self.settings = dict(settings or {})
        self.stats = dict(stats or {})

    # ----------------------------------------------------------------- building
    @classmethod
    def build(
        cls,
        token_lists: Iterable[Sequence[str]],
        *,
        min_count: int = 5,
        max_size: int | None = None,
    ) -> Vocabulary:
        """Build from tokenized captions: words seen ``>= min_count`` times, most frequent first.

        Ties in frequency are broken alphabetically so the result is deterministic.
        """
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        counts: Counter[str] = Counter()
        n_captions = 0
        for tokens in token_lists:
            counts.update(tokens)
            n_captions += 1
        for special in SPECIALS:
            counts.pop(special, None)
        kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        if max_size is not None:
            kept = kept[: max(0, max_size - len(SPECIALS))]
        total = sum(counts.values())
        unk_tokens = total - sum(counts[w] for w in kept)
        stats = {
            "captions": n_captions,
            "distinct_words": len(counts),
            "words_kept": len(kept),
            "tokens": total,
            "tokens_mapped_to_unk": unk_tokens,
        }
        return cls([*SPECIALS, *kept], settings={"min_count": min_count, "max_size": max_size}, stats=stats)

    # ------------------------------------------------------------------ mapping
    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    @property
    def pad_id(self) -> int:
        return self.stoi[PAD]

    @property
    def start_id(self) -> int:
        return self.stoi[START]

    @property
    def end_id(self) -> int:
        return self.stoi[END]

    @property
    def unk_id(self) -> int:
        return self.stoi[UNK]

    def encode(self, tokens: Sequence[str], *, add_special: bool = True) -> list[int]:
        """Map tokens to ids (unknown words -> ``<unk>``), framed by ``<start>``/``<end>``."""
        unk = self.unk_id
        ids = [self.stoi.get(t, unk) for t in tokens]
        return [self.start_id, *ids, self.end_id] if add_special else ids

    def decode(self, ids: Iterable[int], *, strip_special: bool = True) -> list[str]:
        """Map ids to tokens; stops at ``<end>`` and drops ``<pad>``/``<start>`` when stripping."""
        out: list[str] = []
        for i in ids:
            i = int(i)
            if strip_special:
                if i == self.end_id:
                    break
                if i in (self.pad_id, self.start_id):
                    continue
            out.append(self.itos[i])
        return out

    # ------------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        return {"format": "nic-vocab", "version": 1, "itos": self.itos, "settings": self.settings, "stats": self.stats}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "vocabulary") -> Vocabulary:
        if not isinstance(data, dict) or data.get("format") != "nic-vocab" or "itos" not in data:
            raise ValueError(f"{source}: not a nic vocabulary "
                             "(expected a JSON object with format 'nic-vocab' and 'itos')")
        return cls(data["itos"], settings=data.get("settings"), stats=data.get("stats"))

    def save(self, path: str | Path) -> None:
        from nic.io import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, ensure_ascii=False))

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: vocabulary file not found (run `python -m preprocess` first)") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON ({e}); delete it and re-run preprocessing") from None
        return cls.from_dict(data, source=str(path))

    def hash(self) -> str:
        """A short content hash of the token list, recorded in stores and checkpoints."""
        return hashlib.sha256("\n".join(self.itos).encode("utf-8")).hexdigest()[:16]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.itos == other.itos

    def __repr__(self) -> str:
        return f"Vocabulary(size={len(self)}, hash={self.hash()})"
