"""Caption evaluation report: BLEU-1..4 (+ METEOR, ROUGE-L, CIDEr where available), diversity, correctness.

Two ways in::

    # caption a split with a checkpoint (batched beam search) at one or more beam sizes
    python -m eval.bleu_report --checkpoint runs/default/best.pt --split test --beam 1 3 20

    # score any captioner's output: a COCO-format results file against Karpathy or COCO references
    python -m eval.bleu_report --results captions.json --references dataset_coco.json --split test
    python -m eval.bleu_report --results captions.json --references captions_val2014.json

and three ways out: the table on stdout, ``--out report.json`` (every caption and per-image
score), ``--html report.html`` (one self-contained page with the table, the best and worst
images, their captions, references, per-image scores and attention maps). ``--results-out
captions.json`` writes a checkpoint's captions in the COCO results format.

**Tokenization.** Hypotheses and references are always tokenized the same way before
scoring: by default with :func:`eval.coco_tokenize.coco_tokenize`, a pure-Python model of
the COCO toolkit's Java PTB tokenizer + punctuation removal; ``--tokenizer ptb-java`` runs
the toolkit's own Java tokenizer instead. In checkpoint mode the references are, by
default, the store's ``references`` (each caption already through :func:`nic.vocab.tokenize`,
space-joined), re-normalised by the scoring tokenizer; ``--references dataset.json`` scores
against the raw captions of the dataset file instead, matched by image id, which is the
toolkit's own pipeline and what papers report (see docs/evaluation.md).

**Metrics.** BLEU-1..4 always (:mod:`eval.bleu`, the toolkit's numbers); METEOR, ROUGE-L,
CIDEr(-D) and SPICE from ``pycocoevalcap`` when it (and Java, for METEOR/SPICE) is present
(:mod:`eval.metrics`). ``--metrics bleu,rouge,cider`` picks; the report lists what did not
run and why. Also: share of distinct captions, share not found verbatim among the training
references (novel), vocabulary used, mean length; on shapes, correctness against the
generator's ground truth (:mod:`eval.shapes_metrics`); and a "human" row scoring each
image's first reference against its others, for scale.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.bleu import corpus_bleu
from eval.metrics import METRICS, TOKENIZERS, compute_metrics, select_metrics, tokenize_captions
from eval.results import (
    InputFormatError,
    Matching,
    id_type_hint,
    match,
    read_references,
    read_results,
    write_results,
)
from nic.io import atomic_write_text
from nic.vocab import tokenize as vocab_tokenize

DEFAULT_HTML_SAMPLES = 50
DEFAULT_HTML_ATTENTION = 3

# Shapes correctness: score_corpus key -> table heading.
SHAPES_COLUMNS = (("color_shape", "colour+shape"), ("color_shape_recall", "pair recall"), ("count", "count"),
                  ("size", "size"), ("relation", "relation"))


class ReportError(ValueError):
    """Bad input to the report that the user can fix (the message says how)."""


# --------------------------------------------------------------------------- pieces kept from the first version


def diversity(captions: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]]) -> dict[str, float]:
    """Distinct-caption share, vocabulary used, and mean length against the references'."""
    n = max(len(captions), 1)
    ref_lengths = [len(r) for refs in references for r in refs]
    return {
        "distinct": len({" ".join(c) for c in captions}) / n,
        "vocab_used": len({w for c in captions for w in c}),
        "mean_length": sum(len(c) for c in captions) / n,
        "ref_mean_length": sum(ref_lengths) / max(len(ref_lengths), 1),
    }


def human_agreement(references: Sequence[Sequence[Sequence[str]]]) -> dict[str, Any] | None:
    """BLEU of each image's first reference against its other references (images with >= 2)."""
    pairs = [(refs[0], refs[1:]) for refs in references if len(refs) >= 2]
    if not pairs:
        return None
    hyps, refs = zip(*pairs)
    return {"bleu": corpus_bleu(hyps, refs).as_dict(), **diversity(hyps, refs)}


def shapes_scores(captions: Sequence[Sequence[str]], meta: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Correctness against the shapes generator's ground truth, when every image has it."""
    if not meta or any("objects" not in m for m in meta[: len(captions)]):
        return None
    from eval.shapes_metrics import score_corpus

    return score_corpus([list(c) for c in captions], [m["objects"] for m in meta[: len(captions)]])


def relation_choice(captioner: Any, store: Any, features: Any, *, limit: int = 0,
                    batch_size: int = 50) -> dict[str, Any] | None:
    """Forced-choice spatial relations on shapes (see :func:`eval.shapes_metrics.relation_contrasts`).

    For every relation true of an image, does the model give the true caption a higher
    probability than the same caption with the inverse relation? None without ground truth.
    """
    import torch

    from eval.shapes_metrics import relation_contrasts
    from nic.evaluation import split_features

    meta = store.image_meta()[: limit or None]
    if not meta or any("objects" not in m for m in meta):
        return None
    correct = pairs = images = 0
    for rows, pooled, grid in split_features(captioner, store, features, limit=limit, batch_size=batch_size):
        true, false, owner = [], [], []
        for b, i in enumerate(rows.tolist()):
            contrasts = relation_contrasts(meta[i]["objects"])
            images += bool(contrasts)
            for t, f in contrasts:
                true.append(t)
                false.append(f)
                owner.append(b)
        if owner:
            idx = torch.tensor(owner)
            g = grid[idx] if grid is not None else None
            correct += int((captioner.score(pooled[idx], g, true) > captioner.score(pooled[idx], g, false)).sum())
            pairs += len(owner)
    return {"accuracy": correct / pairs if pairs else None, "pairs": pairs, "images": images}


def relation_note(report: dict[str, Any]) -> str | None:
    rc = report.get("relation_choice")
    if not rc or rc["accuracy"] is None:
        return None
    return (f"spatial relations, forced choice: the true relation beats its inverse in {100 * rc['accuracy']:.1f}% "
            f"of {rc['pairs']} caption pairs on {rc['images']} images (chance 50%)")


# --------------------------------------------------------------------------- the scoring core


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


@dataclass
class Row:
    """One set of generated captions: a beam size, or a results file."""

    name: str
    beam: int | None
    captions: dict[Hashable, str]  # key -> caption text
    decoded: dict[Hashable, Any] = field(default_factory=dict)  # key -> nic Caption (attention weights)


def _normalised(text: str) -> str:
    return " ".join(vocab_tokenize(text))


def _novelty(texts: Sequence[str], train: set[str] | None) -> float | None:
    """Share of captions not found verbatim (after nic.vocab.tokenize) among the training references."""
    if not train or not texts:
        return None
    return sum(_normalised(t) not in train for t in texts) / len(texts)


def _objects(corpus: Corpus) -> list[Any] | None:
    objs = [corpus.meta.get(k, {}).get("objects") for k in corpus.keys]
    return objs if objs and all(o is not None for o in objs) else None


def score_corpus(corpus: Corpus, rows: Sequence[Row], *, tokenizer: str = "coco",
                 metrics: Sequence[str] = ("bleu",), strict_metrics: bool = False) -> dict[str, Any]:
    """Score every row on ``corpus``: the report's ``results`` rows, ``human`` row and timings."""
    from eval.shapes_metrics import score_corpus as shapes_corpus

    seconds: dict[str, float] = {}
    start = time.perf_counter()
    ref_tokens = tokenize_captions({k: corpus.references[k] for k in corpus.keys}, tokenizer)
    refs = [ref_tokens[k] for k in corpus.keys]
    objects = _objects(corpus)
    results, failed = [], {}
    seconds["tokenize"] = time.perf_counter() - start
    for row in rows:
        start = time.perf_counter()
        texts = [row.captions[k] for k in corpus.keys]
        hyp_tokens = tokenize_captions({k: [row.captions[k]] for k in corpus.keys}, tokenizer)
        hyps = [hyp_tokens[k][0] for k in corpus.keys]
        seconds["tokenize"] += time.perf_counter() - start
        scores = compute_metrics(hyps, refs, metrics, raise_errors=strict_metrics)
        for name, s in scores.seconds.items():
            seconds[name] = seconds.get(name, 0.0) + s
        failed.update(scores.failed)
        results.append({
            "name": row.name, "beam": row.beam, "images": len(hyps), "bleu": scores.bleu.as_dict(),
            "scores": scores.corpus, **diversity(hyps, refs), "novelty": _novelty(texts, corpus.train_captions),
            "shapes": shapes_corpus([vocab_tokenize(t) for t in texts], objects) if objects else None,
            "image_ids": [corpus.image_ids[k] for k in corpus.keys], "captions": texts,
            "per_image": scores.per_image,
        })
    human = None
    pairs = [i for i, r in enumerate(refs) if len(r) >= 2]
    if pairs:
        scores = compute_metrics([refs[i][0] for i in pairs], [refs[i][1:] for i in pairs], metrics,
                                 raise_errors=strict_metrics)
        failed.update(scores.failed)
        for name, s in scores.seconds.items():
            seconds[name] = seconds.get(name, 0.0) + s
        firsts = [corpus.references[corpus.keys[i]][0] for i in pairs]
        human = {"name": "human (ref 1 vs rest)", "images": len(pairs), "bleu": scores.bleu.as_dict(),
                 "scores": scores.corpus,
                 **diversity([refs[i][0] for i in pairs], [refs[i][1:] for i in pairs]),
                 "novelty": _novelty(firsts, corpus.train_captions),
                 "shapes": (shapes_corpus([vocab_tokenize(t) for t in firsts], [objects[i] for i in pairs])
                            if objects else None)}
    return {"results": results, "human": human, "failed": failed, "seconds": seconds}


def _header(*, tokenizer: str, ran: Sequence[str], skipped: Mapping[str, str], corpus: Corpus,
            references: dict[str, Any], matching: Matching) -> dict[str, Any]:
    return {
        "tokenizer": {"name": tokenizer, "description": TOKENIZERS[tokenizer]},
        "metrics": {"ran": list(ran), "not_run": dict(skipped)},
        "references": {**references, "images": len(corpus.keys),
                       "captions": sum(len(corpus.references[k]) for k in corpus.keys)},
        "matching": matching.as_dict(),
    }


def _finish(report: dict[str, Any], scored: dict[str, Any]) -> dict[str, Any]:
    """Merge the scores into the report; a metric that failed moves from "ran" to "not_run" with the error."""
    for name, reason in scored.pop("failed").items():
        if name in report["metrics"]["ran"]:
            report["metrics"]["ran"].remove(name)
        report["metrics"]["not_run"][name] = f"failed: {reason}"
    report.update(scored)
    return report


def _check_matching(matching: Matching, strict: bool, what: str, results: Mapping, refs: Mapping) -> None:
    if not matching.ids:
        raise ReportError(f"no image has both a {what} and references: {len(results)} {what}(s), "
                          f"{len(refs)} image(s) with references{id_type_hint(results, refs)}")
    if strict and (matching.results_without_references or matching.references_without_results):
        m = matching.as_dict(limit=10)
        raise ReportError(
            f"--strict: {m['results_without_references']['count']} {what}(s) without references "
            f"{m['results_without_references']['ids']}, {m['references_without_results']['count']} image(s) with "
            f"references but no {what} {m['references_without_results']['ids']}")


# --------------------------------------------------------------------------- checkpoint mode


def evaluate_checkpoint(checkpoint: str | Path, *, split: str = "test", beam_sizes: Sequence[int] = (20,),
                        limit: int = 0, length_penalty: float | None = None, max_len: int | None = None,
                        store_dir: str | Path | None = None, device: str = "cpu", progress: bool = True,
                        tokenizer: str = "coco", metrics: Sequence[str] | None = None,
                        references: str | Path | None = None, results_out: str | Path | None = None,
                        html: str | Path | None = None, html_samples: int = DEFAULT_HTML_SAMPLES,
                        html_attention: int = DEFAULT_HTML_ATTENTION, strict: bool = False) -> dict[str, Any]:
    """Decode ``split`` with ``checkpoint`` at each beam size and score it (see the module docstring).

    Args:
        references: a Karpathy or COCO captions JSON whose raw captions replace the store's
            references (matched by image id; Karpathy files restricted to ``split``).
        metrics: names from :data:`eval.metrics.METRICS`; None: every available one.
        results_out: write the captions in the COCO results format (one file per beam size when
            there are several: ``NAME.beamK.json``).
        html: write the HTML report here; ``html_samples`` images, attention maps for the first
            ``html_attention`` of each section when the decoder has attention.
        strict: fail when some images have no references (or references name images not decoded).
    """
    from nic.captioner import Captioner
    from nic.evaluation import decode_split
    from nic.features import FeatureReader, cache_features
    from nic.store import StoreReader, store_path
    from nic.training import feature_source

    if not beam_sizes or any(k < 1 for k in beam_sizes):
        raise ReportError(f"beam sizes must be positive integers, got {list(beam_sizes)}")
    ran, skipped = select_metrics(metrics)
    captioner = Captioner.from_checkpoint(checkpoint, device=device)
    cfg = captioner.config
    path = store_path(store_dir or cfg.data.resolved_store_dir(), split)
    store = StoreReader(path)
    if store.attrs["vocab_hash"] != captioner.vocab.hash():
        raise ValueError(f"{path}: built with a different vocabulary than {checkpoint}; "
                         "evaluate on the stores the model was trained with")
    features = None
    if cfg.encoder.freeze:
        # a model whose top CNN stages were fine-tuned on a cached trunk reuses that trunk cache
        source, grid = feature_source(cfg, captioner.encoder, captioner.uses_grid,
                                      finetuned=captioner.encoder_trained)
        cache = cache_features(source, path, grid=grid, dtype=cfg.encoder.feature_dtype, device=device,
                               progress=progress)
        features = FeatureReader(cache, grid=grid)
    rows: list[Row] = []
    for k in beam_sizes:
        decoded = decode_split(captioner, store, features, limit=limit, beam_size=k, progress=progress,
                               desc=f"{split} beam {k}", batch_size=cfg.eval.batch_size,
                               length_penalty=cfg.eval.length_penalty if length_penalty is None else length_penalty,
                               max_len=max_len or cfg.eval.max_len)
        rows.append(Row(f"beam {k}", k, {i: c[0].text for i, c in enumerate(decoded.captions)},
                        {i: c[0] for i, c in enumerate(decoded.captions)}))
    n = len(rows[0].captions) if rows else 0
    image_ids = {i: int(x) for i, x in enumerate(store.image_ids[:n])}
    meta = dict(enumerate(store.image_meta()[:n]))
    filenames = dict(enumerate(store.filenames()[:n]))
    written = []
    if results_out:
        for row in rows:
            out = Path(results_out)
            if len(rows) > 1:
                out = out.with_name(f"{out.stem}.beam{row.beam}{out.suffix or '.json'}")
            write_results(out, [image_ids[i] for i in range(n)], [row.captions[i] for i in range(n)])
            written.append(str(out))

    start = time.perf_counter()
    if references is None:
        refs_by_row = {i: [" ".join(r) for r in refs] for i, refs in enumerate(store.references()[:n])}
        matching = match(refs_by_row, refs_by_row)
        ref_info: dict[str, Any] = {"source": str(path), "format": "store"}
        train = _store_train_captions(path, split)
    else:
        ref_file = read_references(references, split=split, ignore_split_for_coco=True)
        by_id = {image_ids[i]: i for i in range(n)}
        matching = match(by_id, ref_file.captions)
        _check_matching(matching, strict, "decoded image", by_id, ref_file.captions)
        refs_by_row = {by_id[x]: ref_file.captions[x] for x in matching.ids}
        ref_info = {"source": ref_file.source, "format": ref_file.format, "split": ref_file.split}
        train = (_store_train_captions(path, split) if ref_file.train_captions is None
                 else {_normalised(c) for c in ref_file.train_captions})
    keys = [i for i in range(n) if i in refs_by_row]
    corpus = Corpus(keys, refs_by_row, image_ids, meta, filenames, train)
    read_seconds = time.perf_counter() - start
    report: dict[str, Any] = {"mode": "checkpoint", "checkpoint": str(checkpoint), "split": split,
                              "store": str(path), "decoded": n, "results_out": written}
    report.update(_header(tokenizer=tokenizer, ran=ran, skipped=skipped, corpus=corpus, references=ref_info,
                          matching=matching))
    scored = score_corpus(corpus, rows, tokenizer=tokenizer, metrics=ran, strict_metrics=metrics is not None)
    scored["seconds"]["read_references"] = read_seconds
    _finish(report, scored)
    choice = relation_choice(captioner, store, features, limit=n, batch_size=cfg.eval.batch_size)
    if choice is not None:
        report["relation_choice"] = choice
    if html:
        grid_side = captioner.encoder.grid_side if captioner.uses_grid else None
        write_html_report(report, corpus, rows, html, samples=html_samples, image=lambda key: store.image(key),
                          attention=html_attention if grid_side else 0, grid_side=grid_side)
    return report


def _store_train_captions(path: Path, split: str) -> set[str] | None:
    """The training store's references (already nic.vocab.tokenize output), for novelty; None if absent."""
    from nic.store import StoreReader, store_path

    train_path = store_path(path.parent, "train")
    if split == "train" or not train_path.exists():
        return None
    return {" ".join(r) for refs in StoreReader(train_path).references() for r in refs}


# --------------------------------------------------------------------------- results-file mode


def evaluate_results(results: str | Path, references: str | Path, *, split: str | None = None,
                     tokenizer: str = "coco", metrics: Sequence[str] | None = None, strict: bool = False,
                     html: str | Path | None = None, html_samples: int = DEFAULT_HTML_SAMPLES,
                     image_root: str | Path | None = None) -> dict[str, Any]:
    """Score a COCO-format results file against a Karpathy split file or a COCO captions file.

    Only images with both a result and references are scored; the others are counted and
    listed in ``report["matching"]`` (``strict``: an error instead). ``image_root`` is the
    dataset's image folder, for the HTML report's thumbnails.
    """
    ran, skipped = select_metrics(metrics)
    start = time.perf_counter()
    hyps = read_results(results)
    refs = read_references(references, split=split)
    matching = match(hyps, refs.captions)
    _check_matching(matching, strict, "result", hyps, refs.captions)
    train = {_normalised(c) for c in refs.train_captions} if refs.train_captions else None
    corpus = Corpus(matching.ids, refs.captions, {k: k for k in matching.ids}, refs.meta, refs.files, train)
    read_seconds = time.perf_counter() - start
    report: dict[str, Any] = {"mode": "results", "results_file": str(results), "split": split}
    report.update(_header(tokenizer=tokenizer, ran=ran, skipped=skipped, corpus=corpus,
                          references={"source": refs.source, "format": refs.format, "split": refs.split},
                          matching=matching))
    row = Row("results", None, {k: hyps[k] for k in matching.ids})
    scored = score_corpus(corpus, [row], tokenizer=tokenizer, metrics=ran, strict_metrics=metrics is not None)
    scored["seconds"]["read"] = read_seconds
    _finish(report, scored)
    if html:
        root = Path(image_root) if image_root else None

        def image(key: Hashable) -> Any:
            if root is None:
                return "no image: pass --image-root (the dataset's image folder) to embed them"
            if key not in corpus.files:
                return f"no file name for image {key!r} in {refs.source}"
            p = root / corpus.files[key]
            return p if p.is_file() else f"image file not found: {p}"

        write_html_report(report, corpus, [row], html, samples=html_samples, image=image)
    return report


# --------------------------------------------------------------------------- output


def _columns(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, heading) of the table's columns that apply to this report."""
    rows = report["results"] + ([report["human"]] if report.get("human") else [])
    cols = [("name", "decoding"), *((f"BLEU-{n}", f"BLEU-{n}") for n in range(1, 5))]
    for key in ("METEOR", "ROUGE-L", "CIDEr", "SPICE"):
        if any(key in r.get("scores", {}) for r in rows):
            cols.append((key, key))
    cols += [("distinct", "distinct")]
    if any(r.get("novelty") is not None for r in rows):
        cols.append(("novelty", "novel"))
    cols += [("vocab_used", "vocab"), ("mean_length", "length")]
    if any(r.get("shapes") for r in rows):
        cols += list(SHAPES_COLUMNS)
    return cols


def _cells(report: dict[str, Any]) -> list[dict[str, str]]:
    """Each table row as preformatted cells keyed like :func:`_columns`."""
    rows = [(r.get("name") or f"beam {r['beam']}", r) for r in report["results"]]
    if report.get("human"):
        rows.append(("human (ref 1 vs rest)", report["human"]))
    out = []
    for name, r in rows:
        scores = {**{k: v for k, v in r["bleu"].items() if k.startswith("BLEU-")}, **r.get("scores", {})}
        cells = {"name": name, "vocab_used": str(r["vocab_used"]), "mean_length": f"{r['mean_length']:.1f}",
                 "distinct": f"{r['distinct']:.1%}",
                 "novelty": "-" if r.get("novelty") is None else f"{r['novelty']:.1%}"}
        cells.update({k: f"{v:.3f}" for k, v in scores.items()})
        s = r.get("shapes") or {}
        cells.update({k: "-" if s.get(k) is None else f"{s[k]:.1%}" for k, _ in SHAPES_COLUMNS})
        out.append(cells)
    return out


def format_table(report: dict[str, Any]) -> str:
    """The report as a fixed-width text table (also valid Markdown)."""
    cols = _columns(report)
    lines = ["| " + " | ".join(title for _, title in cols) + " |", "|" + "---|" * len(cols)]
    for cells in _cells(report):
        lines.append("| " + " | ".join(cells.get(k, "-") for k, _ in cols) + " |")
    return "\n".join(lines)


def report_notes(report: dict[str, Any]) -> list[str]:
    """What the table does not say: tokenization, metrics not run (and why), unmatched ids."""
    notes = [f"tokenization: {report['tokenizer']['name']} ({report['tokenizer']['description']})"]
    refs = report["references"]
    where = "the store's references" if refs["format"] == "store" else f"{refs['source']} ({refs['format']})"
    notes.append(f"references: {where}, {refs['captions']} captions of {refs['images']} images")
    for name, reason in report["metrics"]["not_run"].items():
        notes.append(f"{name} not run: {reason}")
    relation = relation_note(report)
    if relation:
        notes.append(relation)
    m = report["matching"]
    what = "result(s)" if report["mode"] == "results" else "decoded image(s)"
    for key, text in (("results_without_references", f"{what} without references, not scored"),
                      ("references_without_results", "image(s) with references but no caption, not scored")):
        if m[key]["count"]:
            ids = ", ".join(repr(i) for i in m[key]["ids"][:10])
            more = " ..." if m[key]["count"] > 10 else ""
            notes.append(f"{m[key]['count']} {text}: {ids}{more}")
    return notes


def write_html_report(report: dict[str, Any], corpus: Corpus, rows: Sequence[Row], path: str | Path, *,
                      samples: int = DEFAULT_HTML_SAMPLES, image: Any = None, attention: int = 0,
                      grid_side: int | None = None) -> Path:
    """Write the self-contained HTML page for ``report`` (see :mod:`eval.html_report`).

    ``image(key)`` returns the image (uint8 (3, H, W) array, PIL image or ``Path``) or a ``str``
    saying why there is none. The cards are the best and worst images by per-image BLEU-4 of the
    row with the largest beam size; the first ``attention`` cards of each section get attention maps.
    """
    from eval.html_report import CaptionLine, Card, attention_png, best_and_worst, jpeg_thumbnail, render_html
    from eval.shapes_metrics import score_caption

    primary = max(range(len(rows)), key=lambda j: (rows[j].beam or 0, -j))
    per_image = report["results"][primary]["per_image"]
    keys = [f"BLEU-{n}" for n in (4, 3, 2, 1)]
    best, worst = best_and_worst([[per_image[k][i] for k in keys] for i in range(len(corpus.keys))], samples)
    score_names = [k for k in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "SPICE")
                   if k in per_image]
    objects = _objects(corpus)
    shape_checks = (("colour+shape", "pairs_correct"), ("count", "count_correct"), ("size", "size_correct"),
                    ("relation", "relation_correct"))

    def card(i: int, with_attention: bool) -> Card:
        key = corpus.keys[i]
        c = Card(title=f"image {corpus.image_ids[key]}", subtitle=corpus.files.get(key, ""),
                 references=list(corpus.references[key]))
        picture = image(key) if image is not None else "no image"
        if isinstance(picture, str):  # why there is no image
            c.image_note = picture
        else:
            try:
                c.jpeg = jpeg_thumbnail(picture)
            except (OSError, ValueError) as e:
                c.image_note = f"unreadable image: {e}"
        for r, row in zip(report["results"], rows):
            checks = {}
            if objects is not None:
                s = score_caption(vocab_tokenize(row.captions[key]), objects[i])
                checks = {name: s[k] for name, k in shape_checks}
            c.captions.append(CaptionLine(row.name, row.captions[key],
                                          {k: r["per_image"][k][i] for k in score_names if k in r["per_image"]},
                                          checks))
        decoded = rows[primary].decoded.get(key)
        if with_attention and grid_side and decoded is not None and decoded.alphas is not None and c.jpeg:
            from nic.attention_maps import caption_words

            words = caption_words(decoded.words, len(decoded.alphas), decoded.finished)
            c.attention = attention_png(picture, words, decoded.alphas, grid_side)
            c.attention_caption = f"{rows[primary].name}: where the decoder looked for each word"
        return c

    sections = [("best", f"Best {len(best)} images by {rows[primary].name} BLEU-4",
                 [card(i, j < attention) for j, i in enumerate(best)]),
                ("worst", f"Worst {len(worst)} images by {rows[primary].name} BLEU-4",
                 [card(i, j < attention) for j, i in enumerate(worst)])]
    source = report.get("checkpoint") or report.get("results_file")
    refs = report["references"]
    meta = [f"{'checkpoint' if report['mode'] == 'checkpoint' else 'results'}: {source}"
            + (f", split {report['split']}" if report.get("split") else ""),
            f"{refs['images']} images scored, {refs['captions']} reference captions",
            f"metrics: {', '.join(report['metrics']['ran'])}",
            f"written {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} by python -m eval.bleu_report"]
    page = render_html(title="Caption evaluation report", meta_lines=meta, columns=_columns(report),
                       rows=_cells(report), notes=report_notes(report), sections=sections)
    atomic_write_text(path, page)
    return Path(path)


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m eval.bleu_report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("what to score")
    src.add_argument("--checkpoint", default="runs/default/best.pt",
                     help="checkpoint file or run directory to caption a split with (default: %(default)s)")
    src.add_argument("--results", default=None, metavar="FILE.json",
                     help='score this COCO-format results file ([{"image_id": ..., "caption": ...}]) instead of '
                          "captioning; needs --references")
    src.add_argument("--references", default=None, metavar="FILE.json",
                     help="reference captions: Karpathy split file (dataset_*.json; sentences[].raw) or COCO "
                          "captions file (captions_*.json). Checkpoint mode: replaces the store's references")
    src.add_argument("--split", default=None, choices=("train", "val", "test"),
                     help="checkpoint mode: split to caption (default: test); results mode: keep only this "
                          "split of a Karpathy references file (default: all images)")
    dec = p.add_argument_group("decoding (checkpoint mode)")
    dec.add_argument("--beam", type=int, nargs="+", default=[20], help="beam sizes (default: 20)")
    dec.add_argument("--limit", type=int, default=0, help="only the first N images (0: all)")
    dec.add_argument("--length-penalty", type=float, default=None, help="override the config's length penalty")
    dec.add_argument("--max-len", type=int, default=None, help="override the maximum caption length")
    dec.add_argument("--store-dir", default=None, help="stores folder (default: the checkpoint config's)")
    dec.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    dec.add_argument("--results-out", default=None, metavar="FILE.json",
                     help="write the captions in the COCO results format (several beams: FILE.beamK.json)")
    sc = p.add_argument_group("scoring")
    sc.add_argument("--tokenizer", default="coco", choices=tuple(TOKENIZERS),
                    help="scoring tokenization of hypotheses and references: coco (pure Python, default) or "
                         "ptb-java (the toolkit's Java PTBTokenizer; needs pycocoevalcap and java)")
    sc.add_argument("--metrics", default=None, metavar="LIST",
                    help=f"comma-separated, from {','.join(METRICS)} (BLEU always runs); default: all available")
    sc.add_argument("--strict", action="store_true",
                    help="fail when some results have no references or some references no result")
    out = p.add_argument_group("output")
    out.add_argument("--out", default=None, metavar="REPORT.json",
                     help="write the full report (every caption and per-image score) to this JSON file")
    out.add_argument("--html", default=None, metavar="REPORT.html", help="write a self-contained HTML report")
    out.add_argument("--html-samples", type=int, default=DEFAULT_HTML_SAMPLES,
                     help="images in the HTML report: half the best, half the worst (default: %(default)s)")
    out.add_argument("--html-attention", type=int, default=DEFAULT_HTML_ATTENTION,
                     help="attention decoders: attention maps for the first N images of each HTML section "
                          "(default: %(default)s)")
    out.add_argument("--image-root", default=None, metavar="DIR",
                     help="results mode: the dataset's image folder, to embed thumbnails in the HTML report")
    out.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    a = parse_args(argv)
    try:
        metrics = None if a.metrics in (None, "all") else [m.strip() for m in a.metrics.split(",") if m.strip()]
        try:
            select_metrics(metrics)
        except ValueError as e:
            raise ReportError(f"--metrics: {e}") from None
        if a.results:
            if not a.references:
                raise ReportError("--results needs --references (a Karpathy dataset_*.json or COCO captions_*.json)")
            if a.results_out:
                raise ReportError("--results-out writes a checkpoint's captions; with --results they already are")
            report = evaluate_results(a.results, a.references, split=a.split, tokenizer=a.tokenizer, metrics=metrics,
                                      strict=a.strict, html=a.html, html_samples=a.html_samples,
                                      image_root=a.image_root)
        else:
            import torch

            device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
            report = evaluate_checkpoint(
                a.checkpoint, split=a.split or "test", beam_sizes=a.beam, limit=a.limit,
                length_penalty=a.length_penalty, max_len=a.max_len, store_dir=a.store_dir, device=device,
                progress=not a.quiet, tokenizer=a.tokenizer, metrics=metrics, references=a.references,
                results_out=a.results_out, html=a.html, html_samples=a.html_samples,
                html_attention=a.html_attention, strict=a.strict)
    except (InputFormatError, ReportError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    print(format_table(report))
    for note in report_notes(report):
        print(f"  {note}")
    for path in report.get("results_out") or []:
        print(f"captions written to {path} (COCO results format)")
    if a.out:
        atomic_write_text(a.out, json.dumps(report, indent=1, ensure_ascii=False))
        print(f"report written to {a.out}")
    if a.html:
        print(f"HTML report written to {a.html}")
    return report


if __name__ == "__main__":
    main()
