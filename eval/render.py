"""The report's render part: the text table, the notes under it, and the HTML page.

Works on the report dict that :mod:`eval.scoring` fills (and, for the HTML page, the
:class:`eval.scoring.Corpus` and :class:`eval.scoring.Row` s it was scored from); the page
itself is laid out by :mod:`eval.html_report`.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

from eval.html_report import CaptionLine, Card, attention_png, best_and_worst, jpeg_thumbnail, render_html
from eval.scoring import HUMAN_ROW, Corpus, Row, corpus_objects
from eval.shapes_metrics import score_caption
from nic.attention_maps import caption_words
from nic.io import atomic_write_text
from nic.paths import UnsafePath, resolve_inside
from nic.vocab import tokenize as vocab_tokenize

__all__ = ["DEFAULT_HTML_ATTENTION", "DEFAULT_HTML_SAMPLES", "SHAPES_COLUMNS", "ImageFolder", "format_table",
           "relation_note", "report_notes", "write_html_report"]

DEFAULT_HTML_SAMPLES = 50
DEFAULT_HTML_ATTENTION = 3

# Shapes correctness: score_corpus key -> table heading.
SHAPES_COLUMNS = (("color_shape", "colour+shape"), ("color_shape_recall", "pair recall"), ("count", "count"),
                  ("size", "size"), ("relation", "relation"))
# Shapes correctness of one caption on an HTML card: label -> eval.shapes_metrics.score_caption key.
SHAPE_CHECKS = (("colour+shape", "pairs_correct"), ("count", "count_correct"), ("size", "size_correct"),
                ("relation", "relation_correct"))
SCORE_NAMES = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "SPICE")

ImageSource = Callable[[Hashable], Any]  # key -> image (array, PIL image, Path) or a str saying why there is none


# --------------------------------------------------------------------------- text


def _columns(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, heading) of the table's columns that apply to this report."""
    rows = report["results"] + ([report["human"]] if report.get("human") else [])
    cols = [("name", "decoding"), *((f"BLEU-{n}", f"BLEU-{n}") for n in range(1, 5))]
    for key in ("METEOR", "ROUGE-L", "CIDEr", "SPICE"):
        if any(key in r.get("scores", {}) for r in rows):
            cols.append((key, key))
    cols += [("distinct", "distinct")]
    if any("bad_endings" in r for r in rows):
        cols.append(("bad_endings", "bad end"))
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
        rows.append((HUMAN_ROW, report["human"]))
    out = []
    for name, r in rows:
        scores = {**{k: v for k, v in r["bleu"].items() if k.startswith("BLEU-")}, **r.get("scores", {})}
        cells = {"name": name, "vocab_used": str(r["vocab_used"]), "mean_length": f"{r['mean_length']:.1f}",
                 "distinct": f"{r['distinct']:.1%}",
                 "bad_endings": "-" if r.get("bad_endings") is None else f"{r['bad_endings']:.1%}",
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


def relation_note(report: dict[str, Any]) -> str | None:
    """The shapes forced-choice result in one line, or None when the report has none."""
    rc = report.get("relation_choice")
    if not rc or rc["accuracy"] is None:
        return None
    return (f"spatial relations, forced choice: the true relation beats its inverse in {100 * rc['accuracy']:.1f}% "
            f"of {rc['pairs']} caption pairs on {rc['images']} images (chance 50%)")


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
    listings = [(m[key], text) for key, text in (
        ("results_without_references", f"{what} without references, not scored"),
        ("references_without_results", "image(s) with references but no caption, not scored"),
        ("references_empty", "image(s) whose references are all empty after tokenization, not scored"))
        if key in m]
    if m.get("empty_reference_captions"):
        notes.append(f"{m['empty_reference_captions']} empty reference caption(s) (nothing left after tokenization) "
                     "dropped from their images' references")
    for r in report["results"]:
        if r.get("empty_captions"):
            listings.append((r["empty_captions"], f"empty caption(s) in {r.get('name') or r['beam']} (nothing left "
                                                  "after tokenization), scored as they are"))
    if report.get("image_root"):
        listings.append((report["image_root"]["outside"], f"image file name(s) leading outside --image-root "
                                                          f"{report['image_root']['path']}, not embedded"))
    notes.extend(f"{listing['count']} {text}: {_ids(listing)}" for listing, text in listings if listing["count"])
    return notes


def _ids(listing: dict[str, Any]) -> str:
    return ", ".join(repr(i) for i in listing["ids"][:10]) + (" ..." if listing["count"] > 10 else "")


class ImageFolder:
    """key -> the image file under ``root`` (the HTML report's --image-root), or why there is none.

    A file name that is absolute, climbs out with ``..`` or leads out through a symbolic link
    (:func:`nic.paths.resolve_inside`) is never opened: such images are counted up front
    (:attr:`outside`, by image id) and their cards say why they show no image.
    """

    def __init__(self, corpus: Corpus, root: str | Path | None, source: str) -> None:
        self.corpus, self.root, self.source = corpus, (Path(root) if root is not None else None), source
        self.files: dict[Hashable, Path | str] = {}
        self.outside: list[Any] = []
        for key in corpus.keys if self.root is not None else ():
            name = corpus.files.get(key)
            if name is None:
                continue
            try:
                self.files[key] = resolve_inside(self.root, name)
            except UnsafePath as e:
                self.files[key] = f"not shown: the file name leads outside --image-root ({e})"
                self.outside.append(corpus.image_ids[key])

    def as_dict(self, limit: int = 100) -> dict[str, Any]:
        return {"path": str(self.root), "outside": {"count": len(self.outside), "ids": self.outside[:limit],
                                                    "truncated": len(self.outside) > limit}}

    def __call__(self, key: Hashable) -> Path | str:
        if self.root is None:
            return "no image: pass --image-root (the dataset's image folder) to embed them"
        if key not in self.files:
            return f"no file name for image {key!r} in {self.source}"
        p = self.files[key]
        return p if isinstance(p, str) or p.is_file() else f"image file not found: {p}"


# --------------------------------------------------------------------------- HTML


class _CardMaker:
    """Builds the HTML card of image ``i`` of the corpus: thumbnail, every row's caption and scores, references."""

    def __init__(self, report: dict[str, Any], corpus: Corpus, rows: Sequence[Row], primary: int,
                 image: ImageSource | None, grid_side: int | None) -> None:
        self.report, self.corpus, self.rows, self.primary = report, corpus, rows, primary
        self.image, self.grid_side = image, grid_side
        self.objects = corpus_objects(corpus)
        per_image = report["results"][primary]["per_image"]
        self.score_names = [k for k in SCORE_NAMES if k in per_image]

    def __call__(self, i: int, with_attention: bool) -> Card:
        key = self.corpus.keys[i]
        card = Card(title=f"image {self.corpus.image_ids[key]}", subtitle=self.corpus.files.get(key, ""),
                    references=list(self.corpus.references[key]))
        picture = self.image(key) if self.image is not None else "no image"
        if isinstance(picture, str):  # why there is no image
            card.image_note = picture
        else:
            try:
                card.jpeg = jpeg_thumbnail(picture)
            except Exception as e:  # the per-image boundary: one bad file never costs the report
                card.image_note = f"image not shown: {type(e).__name__}: {e}"
        for result, row in zip(self.report["results"], self.rows):
            card.captions.append(self._line(i, key, result, row))
        decoded = self.rows[self.primary].decoded.get(key)
        if with_attention and self.grid_side and decoded is not None and decoded.alphas is not None and card.jpeg:
            words = caption_words(decoded.words, len(decoded.alphas), decoded.finished)
            card.attention = attention_png(picture, words, decoded.alphas, self.grid_side)
            card.attention_caption = f"{self.rows[self.primary].name}: where the decoder looked for each word"
        return card

    def _line(self, i: int, key: Hashable, result: dict[str, Any], row: Row) -> CaptionLine:
        checks = {}
        if self.objects is not None:
            s = score_caption(vocab_tokenize(row.captions[key]), self.objects[i])
            checks = {name: s[k] for name, k in SHAPE_CHECKS}
        scores = {k: result["per_image"][k][i] for k in self.score_names if k in result["per_image"]}
        return CaptionLine(row.name, row.captions[key], scores, checks)


def _meta_lines(report: dict[str, Any]) -> list[str]:
    source = report.get("checkpoint") or report.get("results_file")
    if isinstance(source, list):  # an ensemble
        source = "ensemble of " + ", ".join(source)
    refs = report["references"]
    return [f"{'checkpoint' if report['mode'] == 'checkpoint' else 'results'}: {source}"
            + (f", split {report['split']}" if report.get("split") else ""),
            f"{refs['images']} images scored, {refs['captions']} reference captions",
            f"metrics: {', '.join(report['metrics']['ran'])}",
            f"written {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} by python -m eval.bleu_report"]


def write_html_report(report: dict[str, Any], corpus: Corpus, rows: Sequence[Row], path: str | Path, *,
                      samples: int = DEFAULT_HTML_SAMPLES, image: ImageSource | None = None, attention: int = 0,
                      grid_side: int | None = None) -> Path:
    """Write the self-contained HTML page for ``report`` (see :mod:`eval.html_report`).

    ``image(key)`` returns the image (uint8 (3, H, W) array, PIL image or ``Path``) or a ``str``
    saying why there is none. The cards are the best and worst images by per-image BLEU-4 of the
    row with the largest beam size; the first ``attention`` cards of each section get attention maps.
    """
    primary = max(range(len(rows)), key=lambda j: (rows[j].beam or 0, -j))
    per_image = report["results"][primary]["per_image"]
    keys = [f"BLEU-{n}" for n in (4, 3, 2, 1)]
    best, worst = best_and_worst([[per_image[k][i] for k in keys] for i in range(len(corpus.keys))], samples)
    card = _CardMaker(report, corpus, rows, primary, image, grid_side)
    name = rows[primary].name
    sections = [(anchor, f"{anchor.capitalize()} {len(chosen)} images by {name} BLEU-4",
                 [card(i, j < attention) for j, i in enumerate(chosen)])
                for anchor, chosen in (("best", best), ("worst", worst))]
    page = render_html(title="Caption evaluation report", meta_lines=_meta_lines(report), columns=_columns(report),
                       rows=_cells(report), notes=report_notes(report), sections=sections)
    atomic_write_text(path, page)
    return Path(path)
