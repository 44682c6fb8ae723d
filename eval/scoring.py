"""The report's score part: a corpus and rows of captions -> the metrics dict.

What is scored is a :class:`Corpus` (images, their references and what is known about them)
and one :class:`Row` of captions per beam size or results file. :func:`score_corpus` turns
them into the report's ``results`` rows and its ``human`` row: BLEU-1..4, METEOR, ROUGE-L
and CIDEr (:mod:`eval.metrics`), diversity, novelty and, on shapes, correctness against the
generator's ground truth (:mod:`eval.shapes_metrics`). The builders :func:`results_corpus`
and :func:`checkpoint_corpus` match captions with references for the two modes.

Nothing here runs a model (see :mod:`eval.decode`) or formats output (see :mod:`eval.render`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.metrics import TOKENIZERS, MetricScores, compute_metrics, tokenize_captions
from eval.results import Matching, id_type_hint, match, read_references
from eval.shapes_metrics import score_corpus as shapes_corpus
from nic.vocab import bad_ending
from nic.vocab import tokenize as vocab_tokenize

__all__ = ["Corpus", "ReportError", "Row", "StoreImages", "check_matching", "checkpoint_corpus", "corpus_objects",
           "diversity", "drop_empty_references", "finish_report", "novelty", "report_header", "results_corpus",
           "score_corpus"]

HUMAN_ROW = "human (ref 1 vs rest)"


class ReportError(ValueError):
    """Bad input to the report that the user can fix (the message says how)."""


@dataclass
class Corpus:
    """What is scored: images (by an internal key), their references and what is known about them.

    Keys are store rows in checkpoint mode and image ids in results mode; ``image_ids`` maps
    them to the dataset's image ids (what the JSON, the HTML and results files show).
    """

    keys: list[Hashable]  # scored images, in order
    references: dict[Hashable, list[str]]  # raw reference captions (shown in the HTML, tokenized for scoring)
    image_ids: dict[Hashable, Any]
    meta: dict[Hashable, dict[str, Any]] = field(default_factory=dict)
    files: dict[Hashable, str] = field(default_factory=dict)
    train_captions: set[str] | None = None  # training references, normalised by nic.vocab.tokenize, for novelty
    ref_tokens: dict[Hashable, list[list[str]]] | None = None  # the references as scored (drop_empty_references)


@dataclass
class Row:
    """One set of generated captions: a beam size, or a results file."""

    name: str
    beam: int | None
    captions: dict[Hashable, str]  # key -> caption text
    decoded: dict[Hashable, Any] = field(default_factory=dict)  # key -> nic Caption (attention weights)
    settings: dict[str, Any] | None = None  # how the captions were decoded (checkpoint mode)


@dataclass
class StoreImages:
    """The decoded images of a split's store, as scoring needs them (checkpoint mode), in store order."""

    source: str  # the store file
    image_ids: list[int]
    references: list[list[list[str]]]  # the store's references (nic.vocab.tokenize output)
    meta: list[dict[str, Any]]
    files: list[str]
    train_captions: Callable[[], set[str] | None]  # the training references for novelty, read when needed


# --------------------------------------------------------------------------- figures besides the metrics


def diversity(captions: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]]) -> dict[str, float]:
    """Distinct-caption share, vocabulary used, mean length against the references', and the share of
    captions that end in a word no sentence ends in ("a man in a": :data:`nic.vocab.BAD_ENDINGS`)."""
    n = max(len(captions), 1)
    ref_lengths = [len(r) for refs in references for r in refs]
    return {
        "distinct": len({" ".join(c) for c in captions}) / n,
        "bad_endings": sum(bad_ending(c) for c in captions) / n,
        "vocab_used": len({w for c in captions for w in c}),
        "mean_length": sum(len(c) for c in captions) / n,
        "ref_mean_length": sum(ref_lengths) / max(len(ref_lengths), 1),
    }


def normalised(text: str) -> str:
    """A caption as the vocabulary sees it (:func:`nic.vocab.tokenize`, space-joined), for novelty."""
    return " ".join(vocab_tokenize(text))


def novelty(texts: Sequence[str], train: set[str] | None) -> float | None:
    """Share of captions not found verbatim (after nic.vocab.tokenize) among the training references."""
    if not train or not texts:
        return None
    return sum(normalised(t) not in train for t in texts) / len(texts)


def corpus_objects(corpus: Corpus) -> list[Any] | None:
    """The shapes generator's ground truth of every scored image, or None when some image has none."""
    objs = [corpus.meta.get(k, {}).get("objects") for k in corpus.keys]
    return objs if objs and all(o is not None for o in objs) else None


def _shapes(texts: Sequence[str], objects: Sequence[Any] | None) -> dict[str, Any] | None:
    return shapes_corpus([vocab_tokenize(t) for t in texts], list(objects)) if objects else None


# --------------------------------------------------------------------------- scoring


def _add_seconds(seconds: dict[str, float], scores: MetricScores) -> None:
    for name, s in scores.seconds.items():
        seconds[name] = seconds.get(name, 0.0) + s


def _score_row(corpus: Corpus, row: Row, refs: list[list[list[str]]], *, tokenizer: str, metrics: Sequence[str],
               strict_metrics: bool, seconds: dict[str, float]) -> tuple[dict[str, Any], dict[str, str]]:
    start = time.perf_counter()
    texts = [row.captions[k] for k in corpus.keys]
    hyp_tokens = tokenize_captions({k: [row.captions[k]] for k in corpus.keys}, tokenizer)
    hyps = [hyp_tokens[k][0] for k in corpus.keys]
    seconds["tokenize"] += time.perf_counter() - start
    scores = compute_metrics(hyps, refs, metrics, raise_errors=strict_metrics)
    _add_seconds(seconds, scores)
    empty = [corpus.image_ids[k] for k, h in zip(corpus.keys, hyps) if not h]
    result = {"name": row.name, "beam": row.beam, "images": len(hyps), "bleu": scores.bleu.as_dict(),
              "empty_captions": {"count": len(empty), "ids": empty[:100], "truncated": len(empty) > 100},
              "scores": scores.corpus, **diversity(hyps, refs), "novelty": novelty(texts, corpus.train_captions),
              "shapes": _shapes(texts, corpus_objects(corpus)),
              "image_ids": [corpus.image_ids[k] for k in corpus.keys], "captions": texts,
              "per_image": scores.per_image}
    if row.settings is not None:
        result["decoding"] = dict(row.settings)
    return result, scores.failed


def _human_row(corpus: Corpus, refs: list[list[list[str]]], *, metrics: Sequence[str], strict_metrics: bool,
               seconds: dict[str, float]) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """Each image's first reference scored against its others (images with at least two)."""
    pairs = [i for i, r in enumerate(refs) if len(r) >= 2]
    if not pairs:
        return None, {}
    hyps, others = [refs[i][0] for i in pairs], [refs[i][1:] for i in pairs]
    scores = compute_metrics(hyps, others, metrics, raise_errors=strict_metrics)
    _add_seconds(seconds, scores)
    firsts = [corpus.references[corpus.keys[i]][0] for i in pairs]
    objects = corpus_objects(corpus)
    human = {"name": HUMAN_ROW, "images": len(pairs), "bleu": scores.bleu.as_dict(), "scores": scores.corpus,
             **diversity(hyps, others), "novelty": novelty(firsts, corpus.train_captions),
             "shapes": _shapes(firsts, [objects[i] for i in pairs] if objects else None)}
    return human, scores.failed


def score_corpus(corpus: Corpus, rows: Sequence[Row], *, tokenizer: str = "coco",
                 metrics: Sequence[str] = ("bleu",), strict_metrics: bool = False) -> dict[str, Any]:
    """Score every row on ``corpus``: the report's ``results`` rows, ``human`` row, failures and timings.

    ``metrics`` are names from :data:`eval.metrics.METRICS`; ``strict_metrics`` re-raises a
    toolkit metric's failure instead of listing it in ``failed``.
    """
    start = time.perf_counter()
    ref_tokens = corpus.ref_tokens
    if ref_tokens is None:
        ref_tokens = tokenize_captions({k: corpus.references[k] for k in corpus.keys}, tokenizer)
    refs = [ref_tokens[k] for k in corpus.keys]
    seconds = {"tokenize": time.perf_counter() - start}
    results, failed = [], {}
    for row in rows:
        result, row_failed = _score_row(corpus, row, refs, tokenizer=tokenizer, metrics=metrics,
                                        strict_metrics=strict_metrics, seconds=seconds)
        results.append(result)
        failed.update(row_failed)
    human, human_failed = _human_row(corpus, refs, metrics=metrics, strict_metrics=strict_metrics, seconds=seconds)
    failed.update(human_failed)
    return {"results": results, "human": human, "failed": failed, "seconds": seconds}


# --------------------------------------------------------------------------- the report's frame


def report_header(*, tokenizer: str, ran: Sequence[str], skipped: Mapping[str, str], corpus: Corpus,
                  references: dict[str, Any], matching: Matching) -> dict[str, Any]:
    """What was scored and how: tokenizer, metrics run and not run, references, id matching."""
    return {
        "tokenizer": {"name": tokenizer, "description": TOKENIZERS[tokenizer]},
        "metrics": {"ran": list(ran), "not_run": dict(skipped)},
        "references": {**references, "images": len(corpus.keys),
                       "captions": sum(len(corpus.references[k]) for k in corpus.keys)},
        "matching": matching.as_dict(),
    }


def finish_report(report: dict[str, Any], scored: dict[str, Any]) -> dict[str, Any]:
    """Merge the scores into the report; a metric that failed moves from "ran" to "not_run" with the error."""
    for name, reason in scored.pop("failed").items():
        if name in report["metrics"]["ran"]:
            report["metrics"]["ran"].remove(name)
        report["metrics"]["not_run"][name] = f"failed: {reason}"
    report.update(scored)
    return report


def check_matching(matching: Matching, strict: bool, what: str, results: Mapping, refs: Mapping) -> None:
    """Nothing to score is an error; so is anything unmatched under ``strict`` (:class:`ReportError`)."""
    if not matching.ids:
        raise ReportError(f"no image has both a {what} and references: {len(results)} {what}(s), "
                          f"{len(refs)} image(s) with references{id_type_hint(results, refs)}")
    if strict and (matching.results_without_references or matching.references_without_results):
        m = matching.as_dict(limit=10)
        raise ReportError(
            f"--strict: {m['results_without_references']['count']} {what}(s) without references "
            f"{m['results_without_references']['ids']}, {m['references_without_results']['count']} image(s) with "
            f"references but no {what} {m['references_without_results']['ids']}")


def drop_empty_references(corpus: Corpus, matching: Matching, *, tokenizer: str, strict: bool) -> None:
    """Tokenize the references for scoring (once: kept in ``corpus.ref_tokens``) and drop the empty ones.

    A reference with nothing left after tokenization ("", "...") is dropped from its image's
    references (it would otherwise be a length-0 reference for BLEU's brevity penalty); an image
    left with none is not scored (it has no references). Both are counted in ``matching``
    (``empty_reference_captions``, ``references_empty``) and said in the report's notes;
    ``strict`` makes an image without any non-empty reference an error.
    """
    tokens = tokenize_captions({k: corpus.references[k] for k in corpus.keys}, tokenizer)
    kept, references = [], dict(corpus.references)  # a copy: the caller's mapping stays as read
    for k in corpus.keys:
        keep = [i for i, t in enumerate(tokens[k]) if t]
        if len(keep) < len(tokens[k]):
            matching.empty_reference_captions += len(tokens[k]) - len(keep)
            references[k] = [references[k][i] for i in keep]
            tokens[k] = [tokens[k][i] for i in keep]
        if keep:
            kept.append(k)
        else:
            matching.references_empty.append(corpus.image_ids[k])
    corpus.keys, corpus.references, corpus.ref_tokens = kept, references, {k: tokens[k] for k in kept}
    if matching.references_empty and (strict or not kept):
        ids = matching.as_dict(limit=10)["references_empty"]["ids"]
        raise ReportError(f"{'--strict: ' if kept else 'nothing to score: '}{len(matching.references_empty)} "
                          f"image(s) whose references are all empty after tokenization: {ids}")


# --------------------------------------------------------------------------- the corpus of each mode


def results_corpus(hyps: Mapping[Hashable, str], references: str | Path, *, split: str | None, strict: bool,
                   tokenizer: str = "coco") -> tuple[Corpus, Matching, dict[str, Any]]:
    """Results mode: the images of a results file that have (non-empty) references in ``references``.

    Returns the corpus (keyed by image id), the matching and the ``references`` entry of the report.
    """
    refs = read_references(references, split=split)
    matching = match(hyps, refs.captions)
    check_matching(matching, strict, "result", hyps, refs.captions)
    train = {normalised(c) for c in refs.train_captions} if refs.train_captions else None
    corpus = Corpus(matching.ids, refs.captions, {k: k for k in matching.ids}, refs.meta, refs.files, train)
    drop_empty_references(corpus, matching, tokenizer=tokenizer, strict=strict)
    return corpus, matching, {"source": refs.source, "format": refs.format, "split": refs.split}


def checkpoint_corpus(images: StoreImages, *, split: str, references: str | Path | None = None,
                      strict: bool = False, tokenizer: str = "coco") -> tuple[Corpus, Matching, dict[str, Any]]:
    """Checkpoint mode: the decoded images of a split's store, keyed by store row.

    References are the store's (``nic.vocab.tokenize`` output, space-joined), or the raw captions
    of a Karpathy/COCO file matched by image id. Returns the corpus, the matching and the
    ``references`` entry of the report.
    """
    n = len(images.image_ids)
    image_ids = dict(enumerate(images.image_ids))
    if references is None:
        refs_by_row = {i: [" ".join(r) for r in refs] for i, refs in enumerate(images.references)}
        matching = match(refs_by_row, refs_by_row)
        ref_info: dict[str, Any] = {"source": images.source, "format": "store"}
        train = images.train_captions()
    else:
        ref_file = read_references(references, split=split, ignore_split_for_coco=True)
        by_id = {image_ids[i]: i for i in range(n)}
        matching = match(by_id, ref_file.captions)
        check_matching(matching, strict, "decoded image", by_id, ref_file.captions)
        refs_by_row = {by_id[x]: ref_file.captions[x] for x in matching.ids}
        ref_info = {"source": ref_file.source, "format": ref_file.format, "split": ref_file.split}
        train = (images.train_captions() if ref_file.train_captions is None
                 else {normalised(c) for c in ref_file.train_captions})
    keys = [i for i in range(n) if i in refs_by_row]
    corpus = Corpus(keys, refs_by_row, image_ids, dict(enumerate(images.meta)), dict(enumerate(images.files)), train)
    drop_empty_references(corpus, matching, tokenizer=tokenizer, strict=strict)
    return corpus, matching, ref_info
