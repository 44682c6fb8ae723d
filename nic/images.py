"""Decoding image files into the uint8 RGB arrays every part of nic works with.

:func:`load_image` is the one image-decoding function of the project: preprocessing (in
its decoding threads), ``caption.py`` and the tests all call it, so the pixels stored for
training are exactly what a user's photo gets at captioning time.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# Pillow's own default limit (~ 9459 x 9459): larger images are refused as possible
# decompression bombs. Pillow itself refuses anything above twice its MAX_IMAGE_PIXELS
# whatever ``max_pixels`` says; raise PIL.Image.MAX_IMAGE_PIXELS too to go beyond that.
DEFAULT_MAX_PIXELS = 89_478_485


class ImageTooLarge(ValueError):
    """The file declares more pixels than allowed: a possible decompression bomb."""


def load_image(path: str | Path, size: int, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode ``path``, apply EXIF orientation, convert to RGB, resize to ``size`` x ``size``.

    Returns uint8 (3, size, size). JPEGs are decoded at reduced scale when much larger than
    ``size`` (Pillow's draft mode: the DCT is scaled by 1/2, 1/4 or 1/8 so the image stays
    at least ``size`` on each side), which is 2-4x faster for photo-sized inputs. Only the
    file's header is read before the ``max_pixels`` check (None: no limit of ours), so a
    decompression bomb is refused without being decoded (:class:`ImageTooLarge`).
    Raises ``FileNotFoundError`` for a missing file and ``OSError``/``ValueError`` for a
    truncated or undecodable one.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we check below
            im = Image.open(path)
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(str(e)) from None
    with im:
        w, h = im.size
        if max_pixels is not None and w * h > max_pixels:
            raise ImageTooLarge(f"{w}x{h} = {w * h:,} pixels is over the limit of {max_pixels:,} "
                                "(possible decompression bomb)")
        if im.format == "JPEG":
            im.draft("RGB", (size, size))
        ImageOps.exif_transpose(im, in_place=True)  # loads the image; rotates when EXIF says so
        rgb = to_rgb(im)
        rgb = rgb.resize((size, size), Image.BICUBIC)
        return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))  # (3, S, S)


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode (1, L, LA, P, PA, RGBA, CMYK, I;16, I, F, ...) to RGB.

    Transparent pixels are composited over white; 16-bit and 32-bit grey images are scaled
    to 0..255 (by 255/65535 when any value exceeds 255).
    """
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        hi = float(arr.max()) if arr.size else 0.0
        scale = 255.0 / 65535.0 if hi > 255 else 1.0
        im = Image.fromarray((arr * scale).round().clip(0, 255).astype(np.uint8))
    if im.mode in ("P", "PA") or (im.mode in ("L", "RGB") and "transparency" in im.info):
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGB", im.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return im.convert("RGB")
