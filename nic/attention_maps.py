"""Attention maps: where a Show-Attend-Tell decoder looked for each word it generated.

:func:`draw_attention` writes one PNG: a grid of panels, ``cols`` per row. The first
panel is the plain image; then one panel per word, titled with the word, showing that
step's attention weights (``alphas[t]`` over the ``grid_side x grid_side`` grid)
upsampled smoothly (bicubic) to the image and overlaid as a semi-transparent heat map
(blue: little attention, red: the panel's peak). Pillow and numpy only.

Layout (all sizes in pixels; w x h is the image resized so its longer side is ``panel_size``)::

    n = 1 + len(words) panels, c = min(cols, n) columns, r = ceil(n / c) rows
    width  = c * (w + PAD) + PAD
    height = r * (TITLE + h + PAD) + PAD
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

PAD = 6  # gap between panels and around the sheet
TITLE = 22  # height of the title strip above each panel
OVERLAY = 0.5  # opacity of the heat map over the image

# "jet"-like colour map: (position in [0, 1], RGB)
_JET = ((0.0, (0, 0, 143)), (0.125, (0, 0, 255)), (0.375, (0, 255, 255)), (0.625, (255, 255, 0)),
        (0.875, (255, 0, 0)), (1.0, (128, 0, 0)))


def heat_colors(values: np.ndarray) -> np.ndarray:
    """values in [0, 1] (H, W) -> uint8 RGB (H, W, 3) on the jet-like colour map."""
    pos = np.array([p for p, _ in _JET])
    rgb = np.array([c for _, c in _JET], dtype=np.float64)  # (6, 3)
    v = np.clip(values, 0.0, 1.0)
    return np.stack([np.interp(v, pos, rgb[:, ch]) for ch in range(3)], axis=-1).round().astype(np.uint8)


def open_image(image: np.ndarray | Image.Image | str | Path) -> Image.Image:
    """uint8 (3, H, W) array, PIL image or image file -> RGB PIL image (EXIF orientation applied)."""
    if isinstance(image, (str, Path)):
        from nic.images import to_rgb

        with Image.open(image) as im:
            return to_rgb(ImageOps.exif_transpose(im)).copy()
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[0] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 image array (3, H, W), got {image.dtype} {image.shape}")
        return Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)))  # (H, W, 3)
    return image.convert("RGB")


def upsample_map(weights: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """weights (g, g) -> (h, w) = size[::-1], bicubic, scaled so its peak is 1 (all 0 stays 0)."""
    up = np.asarray(Image.fromarray(weights.astype(np.float32), mode="F").resize(size, Image.BICUBIC))
    up = np.clip(up, 0.0, None)  # bicubic overshoots a little below 0
    peak = float(up.max())
    return up / peak if peak > 0 else up


def _font(size: int = 14) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # scalable when Pillow has FreeType
    except (TypeError, OSError):
        return ImageFont.load_default()


def draw_attention(
    image: np.ndarray | Image.Image | str | Path,
    words: list[str],
    alphas,
    grid_side: int,
    out_path: str | Path,
    *,
    cols: int = 5,
    panel_size: int = 224,
) -> Path:
    """Write the attention sheet of one caption to ``out_path`` (PNG); return the path.

    image: uint8 (3, H, W), a PIL image or an image file; words: the caption's words (and
    ``"<end>"`` if its step should be shown); alphas: Tensor/array (steps, P) with
    P = grid_side ** 2 and steps >= len(words): row t is the attention that produced word t.
    """
    weights = alphas.detach().float().cpu().numpy() if hasattr(alphas, "detach") else np.asarray(alphas, np.float32)
    if weights.ndim != 2 or weights.shape[1] != grid_side * grid_side:
        raise ValueError(f"alphas must be (steps, {grid_side}*{grid_side}), got shape {tuple(weights.shape)}")
    if len(words) > weights.shape[0]:
        raise ValueError(f"{len(words)} words but attention weights for only {weights.shape[0]} steps")
    if cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    im = open_image(image)
    scale = panel_size / max(im.size)
    w, h = max(1, round(im.width * scale)), max(1, round(im.height * scale))
    im = im.resize((w, h), Image.BICUBIC)
    base = np.asarray(im, dtype=np.float64)  # (h, w, 3)

    panels = [(im, "")]
    for t, word in enumerate(words):
        heat = heat_colors(upsample_map(weights[t].reshape(grid_side, grid_side), (w, h)))  # (h, w, 3)
        blend = (1 - OVERLAY) * base + OVERLAY * heat  # (h, w, 3)
        panels.append((Image.fromarray(blend.round().astype(np.uint8)), word))

    n = len(panels)
    c = min(cols, n)
    r = math.ceil(n / c)
    sheet = Image.new("RGB", (c * (w + PAD) + PAD, r * (TITLE + h + PAD) + PAD), "white")
    draw = ImageDraw.Draw(sheet)
    font = _font()
    for i, (panel, title) in enumerate(panels):
        x = PAD + (i % c) * (w + PAD)
        y = PAD + (i // c) * (TITLE + h + PAD)
        sheet.paste(panel, (x, y + TITLE))
        if title:
            left, top, right, bottom = draw.textbbox((0, 0), title, font=font)
            draw.text((x + (w - (right - left)) / 2 - left, y + (TITLE - (bottom - top)) / 2 - top), title,
                      fill="black", font=font)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_path, format="PNG")
    return out_path


def caption_words(words: list[str], steps: int, finished: bool) -> list[str]:
    """The panel titles of a caption: its words, plus ``<end>`` when its step was recorded."""
    return [*words, "<end>"] if finished and steps > len(words) else list(words)
