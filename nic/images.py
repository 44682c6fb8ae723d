"""Decoding image files into the uint8 RGB arrays every part of nic works with.

:func:`load_image` is the one image-decoding function of the project: preprocessing (in
its decoding threads), ``caption.py`` and the tests all call it, so the pixels stored for
training are exactly what a user's photo gets at captioning time.

What it reads: a regular file (:func:`nic.paths.open_regular`: a FIFO, a device or a
folder named ``x.jpg`` is refused at once, never waited on) holding one of
:data:`ALLOWED_FORMATS`, whatever its name says. Pillow knows some 40 formats, some of them
handed to outside programs (EPS and PostScript to Ghostscript) or rarely exercised; they
are never tried (:class:`UnsupportedFormat`, naming the format found).
"""

from __future__ import annotations

import functools
import importlib
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from nic.paths import open_regular

# Pillow's own default limit (~ 9459 x 9459): larger images are refused as possible
# decompression bombs. ``max_pixels`` (ours) is the only limit: see load_image.
DEFAULT_MAX_PIXELS = 89_478_485

# The raster formats load_image reads, each with the Pillow module that registers its reader.
_READERS = {"JPEG": "JpegImagePlugin", "PNG": "PngImagePlugin", "BMP": "BmpImagePlugin", "GIF": "GifImagePlugin",
            "TIFF": "TiffImagePlugin", "WEBP": "WebPImagePlugin", "AVIF": "AvifImagePlugin"}
#: The raster formats load_image reads (detected from the file's content, not its name).
#: AVIF only where Pillow was built with it. Never EPS/PS (Ghostscript), PDF, ICO, PSD, ...
ALLOWED_FORMATS = tuple(_READERS)
# well-known files Pillow cannot read at all, named in the refusal: (offset, signature, name)
_OTHER_SIGNATURES = ((0, b"%PDF", "PDF"), (4, b"ftypheic", "HEIC"), (4, b"ftypheix", "HEIC"),
                     (4, b"ftypmif1", "HEIF"), (4, b"ftypmsf1", "HEIF"))
_LIMIT_LOCK = threading.Lock()


class ImageTooLarge(ValueError):
    """The file declares more pixels than allowed: a possible decompression bomb."""


class UnsupportedFormat(ValueError):
    """The file is not an image in one of :data:`ALLOWED_FORMATS` (another format, or no image)."""


def load_image(path: str | Path, size: int, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode ``path``, apply EXIF orientation, convert to RGB, resize to ``size`` x ``size``.

    Returns uint8 (3, size, size). JPEGs are decoded at reduced scale when much larger than
    ``size`` (Pillow's draft mode: the DCT is scaled by 1/2, 1/4 or 1/8 so the image stays
    at least ``size`` on each side), which is 2-4x faster for photo-sized inputs.

    Only the file's header is read before the ``max_pixels`` check, so a decompression bomb
    is refused without being decoded (:class:`ImageTooLarge`). ``max_pixels`` is the only
    limit: None means none at all. Pillow has its own (it refuses more than twice
    ``PIL.Image.MAX_IMAGE_PIXELS`` in ``Image.open`` and while loading TIFF tiles or GIF
    frames), so when ``max_pixels`` asks for more than Pillow's limit lets through, this
    function raises ``PIL.Image.MAX_IMAGE_PIXELS`` (to ``max_pixels``; to None for no limit)
    before opening. It only ever raises it, under a lock, so threads decoding at the same
    time never undo each other's setting; the process keeps the raised value (our header
    check still applies ``max_pixels`` to every call).

    Raises ``FileNotFoundError`` for a missing file, :class:`nic.paths.NotRegularFile` for a
    FIFO/device/folder, :class:`UnsupportedFormat` for a file not in
    :data:`ALLOWED_FORMATS`, and ``OSError``/``ValueError`` for a truncated or undecodable one.
    """
    _let_pillow_allow(max_pixels)
    with open_regular(path) as fp:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we check below
                im = Image.open(fp, formats=allowed_formats())
        except Image.DecompressionBombError as e:
            raise ImageTooLarge(str(e)) from None
        except UnidentifiedImageError:
            fp.seek(0)
            raise UnsupportedFormat(_refusal(path, fp.read(16))) from None
        with im:
            w, h = im.size
            if max_pixels is not None and w * h > max_pixels:
                raise ImageTooLarge(f"{w}x{h} = {w * h:,} pixels is over the limit of {max_pixels:,} "
                                    "(possible decompression bomb)")
            if im.format == "JPEG":
                im.draft("RGB", (size, size))
            try:
                ImageOps.exif_transpose(im, in_place=True)  # loads the image; rotates when EXIF says so
            except Image.DecompressionBombError as e:  # a GIF frame or TIFF tile larger than the header said
                raise ImageTooLarge(str(e)) from None
            rgb = to_rgb(im)
            rgb = rgb.resize((size, size), Image.BICUBIC)
            return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))  # (3, S, S)


def allowed_formats() -> tuple[str, ...]:
    """:data:`ALLOWED_FORMATS` that this Pillow can read (AVIF needs a Pillow built with libavif)."""
    _register_readers()
    return tuple(f for f in ALLOWED_FORMATS if f in Image.OPEN)


@functools.cache
def _register_readers() -> None:
    """Import the Pillow readers of :data:`ALLOWED_FORMATS` only (``Image.init()`` imports all ~45 of them,
    ~30 ms of ``caption.py``'s start); ``Image.open(formats=...)`` then tries only these."""
    for fmt in ALLOWED_FORMATS:
        if fmt not in Image.OPEN:
            try:
                importlib.import_module(f"PIL.{_READERS[fmt]}")
            except ImportError:  # not built into this Pillow (AVIF without libavif)
                pass


def _let_pillow_allow(max_pixels: int | None) -> None:
    """Raise Pillow's own limit so that it lets through every image ``max_pixels`` allows (load_image)."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is None or (max_pixels is not None and max_pixels <= 2 * limit):
        return
    with _LIMIT_LOCK:
        limit = Image.MAX_IMAGE_PIXELS
        if max_pixels is None:
            Image.MAX_IMAGE_PIXELS = None
        elif limit is not None and max_pixels > 2 * limit:
            Image.MAX_IMAGE_PIXELS = max_pixels


def _refusal(path: str | Path, prefix: bytes) -> str:
    """Why a file no allowed reader took is refused, naming its format when it is a known one."""
    allowed = ", ".join(allowed_formats())
    found = next((name for at, sig, name in _OTHER_SIGNATURES if prefix[at:at + len(sig)] == sig), None)
    if found is None:
        Image.init()  # only to name the format (by signature): the file is never opened with these readers
        found = next((name for name, (_, accept) in Image.OPEN.items() if accept and accept(prefix) is True), None)
    if found is None:
        return f"cannot identify image file {str(path)!r}: not an image in one of the formats nic reads ({allowed})"
    if found in ALLOWED_FORMATS:
        return f"cannot identify image file {str(path)!r}: a {found} file with a corrupt header"
    return (f"{path} is in {found} format, whatever its name says; nic reads only {allowed} images: "
            "convert it to one of them")


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
