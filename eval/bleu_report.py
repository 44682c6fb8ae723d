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

**Decoding.** A checkpoint decodes with its own settings (its config's ``eval`` section:
length penalty, maximum length), at each ``--beam`` size; ``--length-penalty`` and
``--max-len`` override them (:class:`nic.decoding.DecodeSettings`).

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

**Layout.** This module is the command line and the two entry points
(:func:`evaluate_checkpoint`, :func:`evaluate_results`); the work is done in three parts:
:mod:`eval.decode` (checkpoint -> captions per beam size), :mod:`eval.scoring` (captions and
references -> metrics) and :mod:`eval.render` (tables, notes, the HTML page).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval.metrics import METRICS, TOKENIZERS, select_metrics
from eval.render import (
    DEFAULT_HTML_ATTENTION,
    DEFAULT_HTML_SAMPLES,
    SHAPES_COLUMNS,
    ImageFolder,
    format_table,
    relation_note,
    report_notes,
    write_html_report,
)
from eval.results import InputFormatError, read_results
from eval.scoring import (
    Corpus,
    ReportError,
    Row,
    checkpoint_corpus,
    diversity,
    finish_report,
    report_header,
    results_corpus,
    score_corpus,
)
from nic.io import atomic_write_text

__all__ = ["DEFAULT_HTML_ATTENTION", "DEFAULT_HTML_SAMPLES", "SHAPES_COLUMNS", "Corpus", "ReportError", "Row",
           "diversity", "evaluate_checkpoint", "evaluate_results", "format_table", "main", "parse_args",
           "relation_note", "report_notes", "score_corpus", "write_html_report"]


# --------------------------------------------------------------------------- checkpoint mode


def evaluate_checkpoint(checkpoint: str | Path | Sequence[str | Path], *, split: str = "test",
                        beam_sizes: Sequence[int] = (20,), limit: int = 0, length_penalty: float | None = None,
                        max_len: int | None = None,
                        store_dir: str | Path | None = None, device: str | None = "cpu", progress: bool = True,
                        tokenizer: str = "coco", metrics: Sequence[str] | None = None,
                        references: str | Path | None = None, results_out: str | Path | None = None,
                        html: str | Path | None = None, html_samples: int = DEFAULT_HTML_SAMPLES,
                        html_attention: int = DEFAULT_HTML_ATTENTION, strict: bool = False,
                        int8: bool = False) -> dict[str, Any]:
    """Decode ``split`` with ``checkpoint`` at each beam size and score it (see the module docstring).

    Args:
        checkpoint: a checkpoint file or run directory, or several: their ensemble
            (:mod:`nic.ensemble`; the first one's decoding settings).
        length_penalty, max_len: override the checkpoint's decoding settings (None: keep them;
            0 is a value like any other). See :func:`eval.decode.report_settings`.
        device: ``"cpu"``, ``"cuda"``, ...; None: CUDA when available.
        references: a Karpathy or COCO captions JSON whose raw captions replace the store's
            references (matched by image id; Karpathy files restricted to ``split``).
        metrics: names from :data:`eval.metrics.METRICS`; None: every available one.
        results_out: write the captions in the COCO results format (one file per beam size when
            there are several: ``NAME.beamK.json``).
        html: write the HTML report here; ``html_samples`` images, attention maps for the first
            ``html_attention`` of each section when the decoder has attention.
        strict: fail when some images have no references (or references name images not decoded).
        int8: decode with the decoder quantized to int8 (``caption.py --int8``); recorded in the report.
    """
    from eval import decode  # heavy (torch and the model code, seconds to import): results mode never needs it

    ran, skipped = select_metrics(metrics)
    decoded = decode.decode_checkpoint(checkpoint, split=split, beam_sizes=beam_sizes, limit=limit,
                                       length_penalty=length_penalty, max_len=max_len, store_dir=store_dir,
                                       device=device, progress=progress, int8=int8)
    written = decode.write_rows(results_out, decoded) if results_out is not None else []
    start = time.perf_counter()
    corpus, matching, ref_info = checkpoint_corpus(decoded.images(), split=split, references=references,
                                                   strict=strict, tokenizer=tokenizer)
    read_seconds = time.perf_counter() - start
    names = [str(checkpoint)] if isinstance(checkpoint, (str, Path)) else [str(c) for c in checkpoint]
    report: dict[str, Any] = {"mode": "checkpoint", "checkpoint": names[0] if len(names) == 1 else names,
                              "split": split,
                              "store": str(decoded.store.path), "decoded": decoded.num_images,
                              "results_out": written, "int8": int8}
    report.update(report_header(tokenizer=tokenizer, ran=ran, skipped=skipped, corpus=corpus, references=ref_info,
                                matching=matching))
    scored = score_corpus(corpus, decoded.rows, tokenizer=tokenizer, metrics=ran, strict_metrics=metrics is not None)
    scored["seconds"]["read_references"] = read_seconds
    finish_report(report, scored)
    choice = decode.relation_choice(decoded.captioner, decoded.store, decoded.features, limit=decoded.num_images,
                                    batch_size=decoded.captioner.config.eval.batch_size)
    if choice is not None:
        report["relation_choice"] = choice
    if html is not None:
        write_html_report(report, corpus, decoded.rows, html, samples=html_samples, image=decoded.store.image,
                          attention=html_attention if decoded.grid_side else 0, grid_side=decoded.grid_side)
    return report


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
    corpus, matching, ref_info = results_corpus(hyps, references, split=split, strict=strict, tokenizer=tokenizer)
    read_seconds = time.perf_counter() - start
    report: dict[str, Any] = {"mode": "results", "results_file": str(results), "split": split}
    report.update(report_header(tokenizer=tokenizer, ran=ran, skipped=skipped, corpus=corpus, references=ref_info,
                                matching=matching))
    row = Row("results", None, {k: hyps[k] for k in matching.ids})
    scored = score_corpus(corpus, [row], tokenizer=tokenizer, metrics=ran, strict_metrics=metrics is not None)
    scored["seconds"]["read"] = read_seconds
    finish_report(report, scored)
    if html is not None:
        images = ImageFolder(corpus, image_root, ref_info["source"])
        if images.outside:  # said in the notes (printed and on the page) and the JSON
            report["image_root"] = images.as_dict()
        write_html_report(report, corpus, [row], html, samples=html_samples, image=images)
    return report


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m eval.bleu_report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("what to score")
    src.add_argument("--checkpoint", nargs="+", default=["runs/default/best.pt"], metavar="CHECKPOINT",
                     help="checkpoint file or run directory to caption a split with; several: their ensemble, "
                          "one batched search over the mean of their word distributions (default: %(default)s)")
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
    dec.add_argument("--length-penalty", type=float, default=None,
                     help="beam score = log-prob / length ** L (default: the checkpoint's eval.length_penalty)")
    dec.add_argument("--max-len", type=int, default=None,
                     help="longest caption in words, 0 allowed (default: the checkpoint's eval.max_len)")
    dec.add_argument("--store-dir", default=None, help="stores folder (default: the checkpoint config's)")
    dec.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    dec.add_argument("--int8", action="store_true", help="the decoder quantized to int8, as caption.py --int8")
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
        if a.results is not None:
            if a.references is None:
                raise ReportError("--results needs --references (a Karpathy dataset_*.json or COCO captions_*.json)")
            if a.results_out is not None:
                raise ReportError("--results-out writes a checkpoint's captions; with --results they already are")
            report = evaluate_results(a.results, a.references, split=a.split, tokenizer=a.tokenizer, metrics=metrics,
                                      strict=a.strict, html=a.html, html_samples=a.html_samples,
                                      image_root=a.image_root)
        else:
            checkpoint = a.checkpoint[0] if len(a.checkpoint) == 1 else a.checkpoint
            report = evaluate_checkpoint(
                checkpoint, split="test" if a.split is None else a.split, beam_sizes=a.beam, limit=a.limit,
                length_penalty=a.length_penalty, max_len=a.max_len, store_dir=a.store_dir, device=a.device,
                progress=not a.quiet, tokenizer=a.tokenizer, metrics=metrics, references=a.references,
                results_out=a.results_out, html=a.html, html_samples=a.html_samples,
                html_attention=a.html_attention, strict=a.strict, int8=a.int8)
    except (InputFormatError, ReportError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    print(format_table(report))
    for note in report_notes(report):
        print(f"  {note}")
    for path in report.get("results_out") or []:
        print(f"captions written to {path} (COCO results format)")
    if a.out is not None:
        atomic_write_text(a.out, json.dumps(report, indent=1, ensure_ascii=False))
        print(f"report written to {a.out}")
    if a.html is not None:
        print(f"HTML report written to {a.html}")
    return report


if __name__ == "__main__":
    main()
