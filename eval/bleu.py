"""BLEU from raw caption strings, as the COCO caption toolkit's whole pipeline does it.

The token-level computation (:func:`corpus_bleu`, :func:`sentence_bleu`, the toolkit's constants)
lives in :mod:`nic.bleu`, where validation during training can use it; this module adds the
toolkit's tokenization (:func:`eval.coco_tokenize.coco_tokenize`) in front of it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence

from eval.coco_tokenize import coco_tokenize
from nic.bleu import SMALL, TINY, BleuResult, corpus_bleu, sentence_bleu

__all__ = ["SMALL", "TINY", "BleuResult", "corpus_bleu", "score_captions", "sentence_bleu"]


def score_captions(hyps: Mapping[Hashable, str], refs: Mapping[Hashable, Sequence[str]],
                   tokenizer: Callable[[str], Sequence[str]] = coco_tokenize, max_n: int = 4) -> BleuResult:
    """The toolkit's pipeline on raw strings: tokenize everything with ``tokenizer``, then :func:`corpus_bleu`.

    Args:
        hyps: image key -> generated caption.
        refs: image key -> list of reference captions (at least one each).
        tokenizer: caption -> tokens; the default mirrors the toolkit's PTB tokenizer.
        max_n: highest n-gram order.

    Raises:
        ValueError: the two mappings have different keys (the message names them), or an image has no
            references.
        TypeError: an image's references are a single string instead of a list of strings.
    """
    missing_refs = [k for k in hyps if k not in refs]
    missing_hyps = [k for k in refs if k not in hyps]
    if missing_refs or missing_hyps:
        parts = []
        if missing_refs:
            parts.append(f"no references for {_some(missing_refs)}")
        if missing_hyps:
            parts.append(f"no hypothesis for {_some(missing_hyps)}")
        raise ValueError("hyps and refs must have the same keys: " + "; ".join(parts))
    keys = list(hyps)
    for k in keys:
        if isinstance(refs[k], str):
            raise TypeError(f"refs[{k!r}] must be a list of caption strings, not a single string")
    hypotheses = [list(tokenizer(hyps[k])) for k in keys]
    references = [[list(tokenizer(r)) for r in refs[k]] for k in keys]
    for k, rs in zip(keys, references):
        if not rs:
            raise ValueError(f"image {k!r} has no references; every image needs at least one")
    return corpus_bleu(hypotheses, references, max_n=max_n)


def _some(keys: Sequence[Hashable], limit: int = 10) -> str:
    shown = ", ".join(repr(k) for k in keys[:limit])
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"{len(keys)} key(s): {shown}{more}"
