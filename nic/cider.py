"""CIDEr-D in-process: the COCO caption toolkit's ``Cider`` scorer, fast enough to be a training reward.

CIDEr-D (Vedantam et al. 2015, the "-D" variant the toolkit ships) scores a caption against an
image's references by the cosine similarity of TF-IDF vectors of its 1- to 4-grams, with the
hypothesis' weights clipped at the reference's and a Gaussian penalty on the length
difference, averaged over the n-gram orders and the references, times 10. The toolkit's exact
arithmetic, reproduced here (and checked against ``pycocoevalcap`` to 1e-6 in the tests):

* a document is an *image* (the set of n-grams of all its references); ``df(g)`` is the number
  of documents containing ``g``; ``idf(g) = log(D) - log(max(1, df(g)))`` with ``D`` the number
  of documents, so an n-gram no reference ever used weighs ``log(D)``;
* a caption's vector for order n holds ``count(g) * idf(g)`` for its n-grams ``g``;
* ``sim_n(h, r) = sum_g min(h_g, r_g) * r_g / (|h_n| |r_n|)`` (0 when a norm is 0), times
  ``exp(-(len(h) - len(r))^2 / (2 * 6^2))`` where, as in the toolkit, a caption's "length" is
  its number of *bigrams*;
* ``CIDEr-D(h, R) = 10 * mean_n(sum_{r in R} sim_n(h, r)) / |R|``.

The evaluation suite (:mod:`eval.metrics`) computes the document frequencies from the
references of the images it scores; a training reward uses the *training* references (Rennie
et al. 2017), computed once: :class:`CiderD` takes the document corpus explicitly, and
caches each image's reference vectors the first time that image is scored.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

__all__ = ["CiderD", "corpus_cider_d", "ngram_counts"]

Tokens = Sequence[str]
NGram = tuple[str, ...]

SIGMA = 6.0  # the toolkit's Gaussian length penalty width


def ngram_counts(tokens: Tokens, n: int = 4) -> Counter[NGram]:
    """Counts of every 1..n-gram of ``tokens``."""
    words = tuple(tokens)
    return Counter(words[i:i + k] for k in range(1, n + 1) for i in range(len(words) - k + 1))


class _Vector:
    """A caption's TF-IDF vector per n-gram order, its norms and its toolkit length (bigrams)."""

    __slots__ = ("weights", "norms", "length")

    def __init__(self, counts: Counter[NGram], idf: dict[NGram, float], max_idf: float, n: int) -> None:
        self.weights: list[dict[NGram, float]] = [{} for _ in range(n)]
        squares = [0.0] * n
        self.length = 0
        for gram, tf in counts.items():
            order = len(gram) - 1
            w = tf * idf.get(gram, max_idf)
            self.weights[order][gram] = w
            squares[order] += w * w
            if order == 1:
                self.length += tf
        self.norms = [math.sqrt(s) for s in squares]

    def similarity(self, ref: _Vector, sigma: float) -> float:
        """Sum over orders of the clipped cosine with ``ref``, times the length penalty."""
        delta = float(self.length - ref.length)
        penalty = math.exp(-(delta * delta) / (2 * sigma * sigma))
        total = 0.0
        for hyp_w, ref_w, hyp_norm, ref_norm in zip(self.weights, ref.weights, self.norms, ref.norms, strict=True):
            dot = 0.0
            for gram, w in hyp_w.items():
                r = ref_w.get(gram)
                if r is not None:
                    dot += min(w, r) * r
            if hyp_norm != 0 and ref_norm != 0:
                dot /= hyp_norm * ref_norm
            total += dot * penalty
        return total


class CiderD:
    """CIDEr-D with document frequencies from a fixed corpus of reference sets.

    Args:
        documents: one entry per document (image): its reference captions as token lists.
            The evaluation suite passes the scored images' own references; an SCST reward the
            training references.
        n: the largest n-gram order (4, as the toolkit).
        sigma: the length penalty's width (6, as the toolkit).
    """

    def __init__(self, documents: Sequence[Sequence[Tokens]], *, n: int = 4, sigma: float = SIGMA) -> None:
        if not documents:
            raise ValueError("CIDEr-D needs at least one document (an image's references) for its frequencies")
        self.n, self.sigma = n, sigma
        df: Counter[NGram] = Counter()
        for refs in documents:
            df.update({gram for ref in refs for gram in ngram_counts(ref, n)})
        self.log_documents = math.log(float(len(documents)))
        self.idf = {gram: self.log_documents - math.log(max(1.0, count)) for gram, count in df.items()}
        self._refs: dict[object, list[_Vector]] = {}

    def vector(self, tokens: Tokens) -> _Vector:
        return _Vector(ngram_counts(tokens, self.n), self.idf, self.log_documents, self.n)

    def references(self, refs: Sequence[Tokens], key: object = None) -> list[_Vector]:
        """The reference vectors of one image; cached under ``key`` when given (e.g. its store row)."""
        if key is not None and key in self._refs:
            return self._refs[key]
        vectors = [self.vector(r) for r in refs]
        if key is not None:
            self._refs[key] = vectors
        return vectors

    def score(self, hypothesis: Tokens, refs: Sequence[Tokens], key: object = None) -> float:
        """CIDEr-D of one caption against one image's references (``key``: cache the references' vectors)."""
        ref_vectors = self.references(refs, key)
        if not ref_vectors:
            raise ValueError("CIDEr-D needs at least one reference caption for the image")
        hyp = self.vector(hypothesis)
        total = sum(hyp.similarity(r, self.sigma) for r in ref_vectors)
        return 10.0 * (total / self.n) / len(ref_vectors)


def corpus_cider_d(hypotheses: Sequence[Tokens], references: Sequence[Sequence[Tokens]]) -> tuple[float, list[float]]:
    """The toolkit's corpus CIDEr-D: frequencies from these images' references; (mean, per image)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference sets")
    scorer = CiderD(references)
    scores = [scorer.score(h, refs) for h, refs in zip(hypotheses, references, strict=True)]
    return sum(scores) / max(len(scores), 1), scores
