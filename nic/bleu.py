"""Corpus BLEU-1..4 exactly as the COCO caption toolkit computes it.

``pycocoevalcap.bleu.Bleu(4).compute_score`` (which calls ``BleuScorer.compute_score(option="closest")``)
scores a corpus of one hypothesis and one or more references per image like this:

* For each image and each order n = 1..4: the hypothesis' n-grams, each count clipped to the largest
  count of that n-gram in any single reference of the image ("modified" counts), and the number of
  hypothesis n-grams, ``max(0, len(hyp) - n + 1)``.
* The image's effective reference length is the reference length closest to the hypothesis length,
  ties going to the shorter reference.
* Counts and lengths are summed over the corpus. Then, with ``tiny = 1e-15`` and ``small = 1e-9``::

      BLEU-n = BP * prod_{k<=n} ((matches_k + tiny) / (total_k + small)) ** (1/n)
      ratio  = (hyp_len + tiny) / (ref_len + small)
      BP     = exp(1 - 1/ratio) if ratio < 1 else 1

  The two constants are the toolkit's: they keep BLEU-n small but non-zero when an order has no
  matches (where ``nltk.translate.bleu_score.corpus_bleu`` gives 0), and make it exactly 0 for an
  empty hypothesis (BP underflows to 0).
* Per image (the toolkit's second return value, ``bleu_list``), the same formula on that image's own
  counts: :func:`sentence_bleu`.

This module reproduces those numbers (to the last bit in practice: the same float operations in the
same order) from token lists. It lives in the library because validation during training scores
with it; :func:`eval.bleu.score_captions` does the toolkit's whole pipeline from raw caption strings,
with :func:`eval.coco_tokenize.coco_tokenize` standing in for its Java tokenizer.
Tokens are taken as given: the toolkit splits space-joined strings, so to match it exactly tokens
must be non-empty and contain no whitespace (as any ``str.split()`` result). ``max_n`` may exceed 4
here, although the toolkit itself only supports up to 4.

Speed: n-grams are counted once per sentence (a ``Counter`` of tuples); 5,000 images with 5
references each score in well under a second (``python bench/bleu.py``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["SMALL", "TINY", "BleuResult", "corpus_bleu", "sentence_bleu"]

#: The toolkit's additive constants: numerators get ``TINY``, denominators ``SMALL``.
TINY = 1e-15
SMALL = 1e-9

Tokens = Sequence[str]


@dataclass(frozen=True)
class BleuResult:
    """Corpus BLEU as the COCO caption toolkit computes it.

    Attributes:
        bleu: BLEU-1..BLEU-``max_n`` (four values by default), each already multiplied by the brevity penalty.
        precisions: modified n-gram precision for n = 1..``max_n``: clipped matches / hypothesis n-grams over
            the corpus (0.0 where there are no hypothesis n-grams). BLEU uses the toolkit's smoothed form
            ``(matches + TINY) / (total + SMALL)`` of these.
        brevity_penalty: ``exp(1 - 1/ratio)`` if ``ratio < 1`` else 1.
        hyp_len: total number of hypothesis tokens.
        ref_len: total effective reference length (per image, the closest reference length).
    """

    bleu: tuple[float, ...]
    precisions: tuple[float, ...]
    brevity_penalty: float
    hyp_len: int
    ref_len: int

    @property
    def ratio(self) -> float:
        """Length ratio as the toolkit computes (and prints) it: ``(hyp_len + TINY) / (ref_len + SMALL)``."""
        return (self.hyp_len + TINY) / (self.ref_len + SMALL)

    def as_dict(self) -> dict[str, Any]:
        """``{"BLEU-1": ..., ..., "brevity_penalty": ..., "hyp_len": ..., "ref_len": ..., "ratio": ...}``."""
        out: dict[str, Any] = {f"BLEU-{n}": b for n, b in enumerate(self.bleu, start=1)}
        out.update(brevity_penalty=self.brevity_penalty, hyp_len=self.hyp_len, ref_len=self.ref_len,
                   ratio=self.ratio)
        return out


@dataclass(frozen=True)
class _References:
    """One image's references, counted once: their lengths and each n-gram's largest count in any of them."""

    lengths: tuple[int, ...]
    max_counts: dict[tuple[str, ...], int]


def _ngrams(tokens: Tokens, max_n: int) -> Counter[tuple[str, ...]]:
    """Counts of all 1..max_n-grams of ``tokens`` (as tuples)."""
    toks = tuple(tokens)
    grams = list(zip(toks))
    for n in range(2, max_n + 1):
        grams += zip(*[toks[i:] for i in range(n)])
    return Counter(grams)


def _cook_references(references: Sequence[Tokens], max_n: int) -> _References:
    counters = [_ngrams(ref, max_n) for ref in references]
    max_counts = dict(counters[0])
    for counts in counters[1:]:
        for gram, c in counts.items():
            if c > max_counts.get(gram, 0):
                max_counts[gram] = c
    return _References(tuple(len(ref) for ref in references), max_counts)


def _closest_length(lengths: tuple[int, ...], hyp_len: int) -> int:
    """The reference length closest to ``hyp_len``; ties go to the shorter."""
    return min(lengths, key=lambda n: (abs(n - hyp_len), n))


def _image_counts(hypothesis: Tokens, refs: _References, max_n: int) -> tuple[list[int], list[int], int, int]:
    """(clipped matches per order, hypothesis n-grams per order, hyp length, effective reference length)."""
    matches = [0] * max_n
    best = refs.max_counts.get
    for gram, c in _ngrams(hypothesis, max_n).items():
        m = best(gram)
        if m:
            matches[len(gram) - 1] += c if c < m else m
    hyp_len = len(hypothesis)
    totals = [max(0, hyp_len - k) for k in range(max_n)]
    return matches, totals, hyp_len, _closest_length(refs.lengths, hyp_len)


def _bleu(matches: Sequence[int], totals: Sequence[int], hyp_len: int,
          ref_len: int) -> tuple[tuple[float, ...], float]:
    """BLEU-1..n and the brevity penalty from summed counts, with the toolkit's constants and float order."""
    scores, product = [], 1.0
    for k, (m, t) in enumerate(zip(matches, totals)):
        product *= float(m + TINY) / (t + SMALL)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (hyp_len + TINY) / (ref_len + SMALL)
    penalty = math.exp(1 - 1 / ratio) if ratio < 1 else 1.0
    if ratio < 1:
        scores = [s * penalty for s in scores]
    return tuple(scores), penalty


def _check_max_n(max_n: int) -> None:
    if isinstance(max_n, bool) or not isinstance(max_n, int) or max_n < 1:
        raise ValueError(f"max_n must be a positive integer, got {max_n!r}")


def _check(hypotheses: Sequence[Tokens], references: Sequence[Sequence[Tokens]], max_n: int) -> None:
    _check_max_n(max_n)
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference sets; "
                         "pass one list of references per hypothesis")
    for i, (hyp, refs) in enumerate(zip(hypotheses, references)):
        _check_image(i, hyp, refs)


def _check_image(i: int | None, hyp: Tokens, refs: Sequence[Tokens]) -> None:
    """Type and emptiness checks for image ``i`` (``None``: the single image of :func:`sentence_bleu`)."""
    hyp_name, refs_name = ("hypothesis", "references") if i is None else (f"hypotheses[{i}]", f"references[{i}]")
    if isinstance(hyp, str):
        raise TypeError(f"{hyp_name} is a string; pass token lists (e.g. coco_tokenize(caption))")
    if isinstance(refs, str) or any(isinstance(r, str) for r in refs):
        raise TypeError(f"{refs_name} must be a list of token lists (one per reference caption), "
                        "not a string or a flat list of strings")
    if len(refs) == 0:
        raise ValueError(("the hypothesis" if i is None else f"hypothesis {i}")
                         + " has no references; every image needs at least one")


def corpus_bleu(hypotheses: Sequence[Tokens], references: Sequence[Sequence[Tokens]], max_n: int = 4) -> BleuResult:
    """Corpus BLEU-1..``max_n`` exactly as pycocoevalcap's ``Bleu(4).compute_score`` computes it.

    Args:
        hypotheses: ``hypotheses[i]`` is the token list of the caption generated for image ``i``
            (may be empty: it then scores 0 on its own and only adds reference length).
        references: ``references[i]`` is a non-empty list of token lists, the ground-truth captions of
            image ``i`` (any number per image).
        max_n: highest n-gram order (the toolkit uses 4).

    Returns:
        A :class:`BleuResult`; ``result.bleu[n - 1]`` is BLEU-n.

    Raises:
        ValueError: different numbers of hypotheses and reference sets, an image without references,
            or a bad ``max_n``.
        TypeError: a raw string where a token list is expected.
    """
    _check(hypotheses, references, max_n)
    matches, totals = [0] * max_n, [0] * max_n
    hyp_len = ref_len = 0
    for hyp, refs in zip(hypotheses, references):
        m, t, h, r = _image_counts(hyp, _cook_references(refs, max_n), max_n)
        for k in range(max_n):
            matches[k] += m[k]
            totals[k] += t[k]
        hyp_len += h
        ref_len += r
    scores, penalty = _bleu(matches, totals, hyp_len, ref_len)
    precisions = tuple(m / t if t else 0.0 for m, t in zip(matches, totals))
    return BleuResult(scores, precisions, penalty, hyp_len, ref_len)


def sentence_bleu(hypothesis: Tokens, references: Sequence[Tokens], max_n: int = 4) -> tuple[float, ...]:
    """BLEU-1..``max_n`` of one image, as the toolkit's per-image list (``compute_score(...)[1]``) has it.

    ``hypothesis`` is a token list and ``references`` a non-empty list of token lists. Note that the
    corpus score is *not* the mean of these: the toolkit sums counts over the corpus first.
    """
    _check_max_n(max_n)
    _check_image(None, hypothesis, references)
    m, t, h, r = _image_counts(hypothesis, _cook_references(references, max_n), max_n)
    return _bleu(m, t, h, r)[0]
