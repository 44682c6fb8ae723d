"""A self-contained HTML caption report: one file, no network, that can be mailed.

Layout: the metrics table (and what was not run, and why; ids without results or references)
at the top, then two sections of image cards, the *best* and the *worst* images by per-image
BLEU-4 (ties broken by BLEU-3, -2, -1). Each card shows the image (an embedded JPEG
thumbnail), every generated caption (one per beam size or results file) with its per-image
scores, the references, and optionally where an attention decoder looked for each word
(an embedded PNG from :func:`nic.attention_maps.draw_attention`, in a ``<details>`` fold).

Everything is inline: CSS in a ``<style>`` element, images as ``data:`` URIs, links only to
anchors of the page itself; no JavaScript.
"""

from __future__ import annotations

import base64
import html
import io
import math
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from nic.attention_maps import draw_attention, open_image
from nic.images import DEFAULT_MAX_PIXELS, ImageTooLarge, UnsupportedFormat, allowed_formats, to_rgb
from nic.paths import open_regular

__all__ = ["Card", "CaptionLine", "attention_png", "best_and_worst", "jpeg_thumbnail", "open_picture", "render_html"]

THUMBNAIL = 200  # longer side of the embedded thumbnails, in pixels


@dataclass
class CaptionLine:
    """One generated caption on a card: the row it belongs to ("beam 20"), its text, its scores."""

    name: str
    text: str
    scores: dict[str, float] = field(default_factory=dict)  # "BLEU-4" -> 0.41, "CIDEr" -> 1.2, ...
    checks: dict[str, bool | None] = field(default_factory=dict)  # shapes correctness: "colour+shape" -> True


@dataclass
class Card:
    """One image of the report."""

    title: str  # image id
    subtitle: str = ""  # file name
    jpeg: bytes | None = None  # thumbnail; None shows ``image_note``
    image_note: str = "no image"
    captions: list[CaptionLine] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    attention: bytes | None = None  # PNG of the first caption's attention maps
    attention_caption: str = ""


# --------------------------------------------------------------------------- pictures


def open_picture(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, side: int = THUMBNAIL) -> Image.Image:
    """An image file as an RGB PIL image (EXIF orientation applied), for a thumbnail of ``side`` pixels.

    Only a regular file is opened (:func:`nic.paths.open_regular`: a FIFO never blocks the
    report), only in the formats :func:`nic.images.load_image` reads; its header is checked
    against ``max_pixels`` before any pixel is decoded (:class:`nic.images.ImageTooLarge`),
    and a JPEG is decoded at reduced scale.
    """
    with open_regular(path) as f, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below
        try:
            im = Image.open(f, formats=allowed_formats())
        except Image.DecompressionBombError as e:
            raise ImageTooLarge(str(e)) from None
        except UnidentifiedImageError:
            raise UnsupportedFormat(f"not an image in one of the formats nic reads ({', '.join(allowed_formats())})"
                                    ) from None
        with im:
            if im.width * im.height > max_pixels:
                raise ImageTooLarge(f"{im.width}x{im.height} = {im.width * im.height:,} pixels is over the limit of "
                                    f"{max_pixels:,} (possible decompression bomb)")
            if im.format == "JPEG":
                im.draft("RGB", (side, side))
            return to_rgb(ImageOps.exif_transpose(im)).copy()


def jpeg_thumbnail(image: np.ndarray | Image.Image | str | Path, max_side: int = THUMBNAIL,
                   quality: int = 82) -> bytes:
    """uint8 (3, H, W) array, PIL image or image file (:func:`open_picture`) -> JPEG bytes, longer side ``max_side``."""
    im = open_picture(image, side=max_side) if isinstance(image, (str, Path)) else open_image(image)
    scale = max_side / max(im.size)
    if scale < 1:
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def attention_png(image: np.ndarray | Image.Image | str | Path, words: list[str], alphas: Any,
                  grid_side: int, *, panel_size: int = 96, cols: int = 8) -> bytes:
    """The attention sheet of one caption (:func:`nic.attention_maps.draw_attention`) as PNG bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = draw_attention(image, words, alphas, grid_side, Path(tmp) / "attention.png", cols=cols,
                              panel_size=panel_size)
        with Image.open(path) as sheet:  # a 256-colour palette: a third of the size, no visible change
            small = sheet.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
        buf = io.BytesIO()
        small.save(buf, format="PNG", optimize=True)
        return buf.getvalue()


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


# --------------------------------------------------------------------------- choosing images


def best_and_worst(per_image: Sequence[Sequence[float]], n: int) -> tuple[list[int], list[int]]:
    """Indices of the ``ceil(n/2)`` best and ``floor(n/2)`` worst images, without overlap.

    ``per_image[i]`` is image i's sort key, e.g. (BLEU-4, BLEU-3, BLEU-2, BLEU-1); best first in
    the first list, worst first in the second. With fewer than ``n`` images every image is shown,
    the better half in the first list.
    """
    order = sorted(range(len(per_image)), key=lambda i: (tuple(-x for x in per_image[i]), i))
    n = min(max(n, 0), len(order))
    n_best = math.ceil(n / 2)
    best = order[:n_best]
    worst = list(reversed(order[n_best:]))[: n - n_best]
    return best, worst


# --------------------------------------------------------------------------- rendering

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:20px;color:#1d2330;
background:#f5f6f8;font-size:14px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 10px;border-bottom:2px solid #d5d9e0;
padding-bottom:4px}.meta{color:#5b6472;margin:2px 0}
.tablewrap{overflow-x:auto;margin:12px 0}
table.metrics{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px rgba(0,0,0,.08);font-size:12px}
table.metrics th,table.metrics td{padding:3px 6px;border:1px solid #e1e4ea;text-align:right;white-space:nowrap}
table.metrics th{background:#eef1f5;font-weight:600;white-space:normal}
table.metrics td:first-child,table.metrics th:first-child{text-align:left;white-space:normal;max-width:120px}
ul.notes{margin:6px 0;padding-left:20px;color:#5b6472}
nav a{margin-right:14px;color:#2557a7}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:14px}
.card{background:#fff;border-radius:6px;box-shadow:0 1px 3px rgba(0,0,0,.12);padding:12px;display:flex;gap:12px;
flex-wrap:wrap}
.pic{flex:0 0 auto;width:200px}.pic img{display:block;max-width:200px;border-radius:3px}
.noimg{width:200px;height:120px;background:#eceff3;color:#7a8290;display:flex;align-items:center;
justify-content:center;text-align:center;font-size:12px;border-radius:3px}
.txt{flex:1 1 260px;min-width:0}.id{font-weight:600}.file{color:#7a8290;font-size:12px;word-break:break-all}
.rank{float:right;color:#7a8290;font-size:12px}
.cap{margin:8px 0 2px;font-size:15px}
.cap .name{display:inline-block;min-width:52px;margin-right:6px;color:#5b6472;font-size:12px}
.scores{font-size:12px;color:#5b6472;margin-left:58px}.scores span{white-space:nowrap}.b4{font-weight:600;color:#1d2330}
.ok{color:#18794e}.bad{color:#c0362c}
.refs{margin:8px 0 0;padding-left:18px;color:#3c4452}.refs li{margin:1px 0}
.label{font-size:12px;color:#7a8290;margin-top:8px}
details{flex:1 1 100%}summary{cursor:pointer;color:#2557a7}details img{max-width:100%;margin-top:6px}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(key: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}"


def _metrics_table(columns: Sequence[tuple[str, str]], rows: Sequence[dict[str, Any]]) -> str:
    # headings may wrap at spaces and after "+", never at a hyphen ("BLEU-4", "ROUGE-L")
    head = "".join(f"<th>{_e(title).replace('-', '&#8209;').replace('+', '+<wbr>')}</th>" for _, title in columns)
    body = "".join("<tr>" + "".join(f"<td>{_e(row.get(key, '-'))}</td>" for key, _ in columns) + "</tr>"
                   for row in rows)
    return (f'<div class="tablewrap"><table class="metrics"><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
            "</table></div>")


def _card(card: Card, rank: str) -> str:
    if card.jpeg is not None:
        pic = f'<img alt="{_e(card.title)}" src="{_data_uri(card.jpeg, "image/jpeg")}">'
    else:
        pic = f'<div class="noimg">{_e(card.image_note)}</div>'
    parts = [f'<div class="card"><div class="pic">{pic}</div><div class="txt">',
             f'<span class="rank">{_e(rank)}</span><div class="id">{_e(card.title)}</div>']
    if card.subtitle:
        parts.append(f'<div class="file">{_e(card.subtitle)}</div>')
    for line in card.captions:
        text = _e(line.text) if line.text else "<i>(empty caption)</i>"
        parts.append(f'<div class="cap"><span class="name">{_e(line.name)}</span>{text}</div>')
        scores = []
        for key, value in line.scores.items():
            cls = ' class="b4"' if key == "BLEU-4" else ""
            scores.append(f"<span{cls}>{_e(key)} {_fmt(key, value)}</span>")
        for key, ok in line.checks.items():
            if ok is not None:
                scores.append(f'<span class="{"ok" if ok else "bad"}">{_e(key)} {"&#10003;" if ok else "&#10007;"}'
                              "</span>")
        if scores:
            parts.append(f'<div class="scores">{" &middot; ".join(scores)}</div>')
    parts.append(f'<div class="label">references ({len(card.references)})</div><ol class="refs">')
    parts.extend(f"<li>{_e(r) if r else '<i>(empty)</i>'}</li>" for r in card.references)
    parts.append("</ol></div>")
    if card.attention is not None:
        parts.append(f"<details open><summary>attention: {_e(card.attention_caption)}</summary>"
                     f'<img alt="attention maps" src="{_data_uri(card.attention, "image/png")}"></details>')
    parts.append("</div>")
    return "".join(parts)


def render_html(*, title: str, meta_lines: Sequence[str], columns: Sequence[tuple[str, str]],
                rows: Sequence[dict[str, Any]], notes: Sequence[str], sections: Sequence[tuple[str, str, list[Card]]]
                ) -> str:
    """The whole page as a string.

    Args:
        title: page heading.
        meta_lines: lines under the heading (what was scored, how).
        columns: metrics table columns, (row key, heading); ``rows`` are dicts of preformatted cells.
        notes: bullet points under the table (metrics not run, ids without results/references).
        sections: (anchor id, heading, cards), e.g. ("best", "Best 25 images by BLEU-4", [...]).
    """
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>", f"<h1>{_e(title)}</h1>"]
    out.extend(f'<p class="meta">{_e(line)}</p>' for line in meta_lines)
    out.append(_metrics_table(columns, rows))
    if notes:
        out.append('<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    if sections:
        out.append("<nav>" + "".join(f'<a href="#{_e(a)}">{_e(h)}</a>' for a, h, _ in sections) + "</nav>")
    for anchor, heading, cards in sections:
        out.append(f'<h2 id="{_e(anchor)}">{_e(heading)}</h2><div class="cards">')
        out.extend(_card(c, f"#{i + 1}") for i, c in enumerate(cards))
        out.append("</div>")
    out.append("</body></html>")
    return "\n".join(out)
