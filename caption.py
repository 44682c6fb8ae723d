"""Caption your own photos: with the model that ships with nic, or with your own checkpoint.

    python caption.py --img photo.jpg                  # the shipped Flickr8k model (models/), beam 20
    python caption.py --img photo.jpg --beam 20
    python caption.py --img a.jpg b.png --nbest 3
    python caption.py --img my_photos/ --checkpoint runs/nic_coco/best.pt
    python caption.py --img photo.jpg --checkpoint runs/attention_shapes --attention-map att.png

Any JPEG/PNG/BMP/WebP works; grayscale, palette and RGBA images are converted to RGB and
resized exactly as the training stores were. Images over --max-pixels (default 89,478,485,
Pillow's decompression-bomb limit) are refused unless it is raised (0: no limit). A file
that cannot be captioned (missing, not an image, truncated, too large) is named on stderr
with the reason, every other one is captioned, and the exit status is then 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import torch
from PIL import UnidentifiedImageError

from nic.captioner import Captioner
from nic.decoding import METHODS, DecodeSettings
from nic.images import DEFAULT_MAX_PIXELS, ImageTooLarge, UnsupportedFormat
from nic.paths import NotRegularFile

# The model that ships with nic: Show, Attend and Tell trained on Flickr8k (models/nic_flickr8k/MODEL_CARD.md).
SHIPPED_MODEL = Path(__file__).resolve().parent / "models" / "nic_flickr8k" / "model.pt"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


def collect_images(paths: list[str]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Expand folders (sorted, image files only): (the files, [(path, why it has no images)])."""
    out: list[Path] = []
    failed: list[tuple[Path, str]] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                failed.append((p, f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder"))
            out.extend(found)
        elif p.exists():
            out.append(p)
        else:
            failed.append((p, "no such file or folder"))
    return out, failed


def why_unreadable(path: Path, error: Exception) -> str:
    """What is wrong with an image file, in words, without repeating its name (for the line naming it)."""
    text = str(error).removeprefix(f"{path}: ")
    if isinstance(error, FileNotFoundError):
        return "no such file or folder"
    if isinstance(error, ImageTooLarge):
        return f"too large: {text}; raise the limit with --max-pixels N (0: no limit)"
    if isinstance(error, (UnsupportedFormat, UnidentifiedImageError)):
        quoted = f"cannot identify image file {str(path)!r}: "
        return f"not an image nic reads ({text.removeprefix(quoted).replace(str(path), 'the file')})"
    if isinstance(error, (NotRegularFile, IsADirectoryError)):
        return f"not a regular file ({text})"
    if "truncated" in text or isinstance(error, (EOFError, SyntaxError)):
        return f"truncated or corrupt image ({text})"
    return f"unreadable image ({type(error).__name__}: {text})"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--img", nargs="+", required=True, help="image files and/or folders")
    p.add_argument("--checkpoint", nargs="+", default=[str(SHIPPED_MODEL)],
                   help="checkpoint file or run directory; several: their ensemble, one search over the mean of "
                        "their word distributions (default: the Flickr8k model that ships with nic, "
                        f"{SHIPPED_MODEL.relative_to(Path(__file__).resolve().parent)}; see its MODEL_CARD.md)")
    p.add_argument("--beam", type=int, default=None,
                   help="beam size (default: the checkpoint's eval.beam_sizes, largest; 20, the paper's, in every "
                        "shipped config)")
    p.add_argument("--nbest", type=int, default=None, help="print the N best captions with their log-probs")
    p.add_argument("--method", choices=METHODS, default=None, help="decoding method (default: beam)")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature (default: 1)")
    p.add_argument("--max-len", type=int, default=None,
                   help="maximum caption length in words (default: the checkpoint's eval.max_len)")
    p.add_argument("--length-penalty", type=float, default=None,
                   help="score = logprob / length**penalty (default: the checkpoint's eval.length_penalty, the "
                        "value its reported scores were decoded with)")
    p.add_argument("--seed", type=int, default=0, help="seed for --method sample")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help="refuse images with more pixels (possible decompression bombs); 0: no limit "
                        "(default: %(default)s, Pillow's own limit)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--encoder-weights", default=None, metavar="PATH",
                   help="ImageNet weights file for the checkpoint's encoder (default: packaged or torch cache)")
    p.add_argument("--int8", action="store_true",
                   help="int8 dynamic quantization of the decoder (CPU; captions may differ slightly from float32's: "
                        "see docs/benchmarks.md, 'Captioning latency')")
    p.add_argument("--batch-size", type=int, default=16, metavar="B",
                   help="photos encoded and searched together (default: %(default)s); captions do not depend on it")
    p.add_argument("--attention-map", metavar="OUT.png", default=None,
                   help="attention decoders only: write where the model looked for each word of the best caption "
                        "(one image: OUT.png; several: OUT_<image stem>.png)")
    return p.parse_args(argv)


def attention_map_paths(out: str, images: list[Path]) -> list[Path]:
    """OUT.png for one image; OUT_<stem>.png for several (OUT_<stem>_2.png, ... on repeated stems)."""
    out_path = Path(out)
    if len(images) == 1:
        return [out_path]
    paths, seen = [], {}
    for image in images:
        seen[image.stem] = seen.get(image.stem, 0) + 1
        suffix = "" if seen[image.stem] == 1 else f"_{seen[image.stem]}"
        paths.append(out_path.with_name(f"{out_path.stem}_{image.stem}{suffix}{out_path.suffix or '.png'}"))
    return paths


# command-line flag -> DecodeSettings field, in the order they are applied (n-best last: it is checked against the beam)
DECODE_FLAGS = (("--method", "method"), ("--beam", "beam_size"), ("--max-len", "max_len"),
                ("--length-penalty", "length_penalty"), ("--temperature", "temperature"), ("--nbest", "n_best"))


def decode_settings(captioner: Captioner, a: argparse.Namespace) -> DecodeSettings:
    """The checkpoint's settings with the flags given; an impossible value is a one-line error naming its flag."""
    given = {field: getattr(a, flag[2:].replace("-", "_")) for flag, field in DECODE_FLAGS}
    try:
        return captioner.settings.replace(**given)
    except ValueError as e:
        settings, error = captioner.settings, e
        for flag, field in DECODE_FLAGS:  # which flag makes it impossible: apply them one at a time
            if given[field] is not None:
                try:
                    settings = settings.replace(**{field: given[field]})
                except ValueError as step_error:
                    raise SystemExit(f"error: {flag} {given[field]}: {step_error}") from None
        raise SystemExit(f"error: {error}") from None


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    if a.max_pixels < 0:
        raise SystemExit(f"error: --max-pixels {a.max_pixels}: must be 0 (no limit) or a number of pixels")
    if a.batch_size < 1:
        raise SystemExit(f"error: --batch-size {a.batch_size}: must be 1 or more")
    paths, failed = collect_images(a.img)
    for path, why in failed:
        print(f"{path}: {why}", file=sys.stderr)
    total = len(paths) + len(failed)
    if paths:
        failed += caption_all(a, paths)
    if failed:
        first, why = failed[0]
        raise SystemExit(f"error: {len(failed)} of {total} input(s) not captioned (each named above); the first: "
                         f"{first}: {why}")


def load_captioner(a: argparse.Namespace) -> Captioner:
    """The checkpoint(s) of ``--checkpoint`` as one captioner (int8 with ``--int8``); a one-line error otherwise."""
    try:
        captioner = Captioner.from_checkpoints(a.checkpoint, device=a.device, encoder_weights=a.encoder_weights)
        return captioner.quantize_int8() if a.int8 else captioner
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {'--int8: ' if a.int8 and 'int8' in str(e) else ''}{e}") from None


def caption_all(a: argparse.Namespace, paths: list[Path]) -> list[tuple[Path, str]]:
    """Caption and print every readable image of ``paths``; name each unreadable one on stderr and return them.

    With several photos and a terminal on stderr, a progress bar counts them there.
    """
    captioner = load_captioner(a)
    settings = decode_settings(captioner, a)  # every setting not given on the command line is the checkpoint's
    map_paths = {}
    if a.attention_map:
        if not captioner.uses_grid:
            raise SystemExit(f"--attention-map: the checkpoint {' '.join(a.checkpoint)} has a "
                             f"{captioner.config.decoder.type!r} decoder, which has no attention; use a checkpoint "
                             "trained with decoder.type: attention "
                             "(e.g. configs/attention_shapes.yaml)")
        map_paths = dict(zip(paths, attention_map_paths(a.attention_map, paths)))
    failed: list[tuple[Path, str]] = []
    progress = Progress(len(paths))

    def unreadable(path: Path, error: Exception) -> None:
        failed.append((path, why_unreadable(path, error)))
        progress.say(f"{path}: {failed[-1][1]}", file=sys.stderr)

    generator = torch.Generator().manual_seed(a.seed)
    captioned = captioner.caption_files(paths, settings, generator=generator, on_error=unreadable,
                                        max_pixels=a.max_pixels or None, batch_size=a.batch_size)
    try:
        for path, captions in captioned:
            progress.say(format_captions(path, captions, settings.n_best))
            if path in map_paths:
                progress.say(write_attention_map(captioner, path, captions[0], map_paths[path]), done=False)
    except ValueError as e:  # the search refuses settings this machine cannot run (e.g. a beam too wide)
        flag = f"--beam {a.beam}: " if a.beam is not None and "beam" in str(e).lower() else ""
        raise SystemExit(f"error: {flag}{e}") from None
    finally:
        progress.close()
    return failed


class Progress:
    """Lines to print, and a tqdm bar on stderr counting them, for several photos when stderr is a terminal."""

    def __init__(self, total: int) -> None:
        self.bar = None
        if total > 1 and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="photo", file=sys.stderr, dynamic_ncols=True)

    def say(self, text: str, file: Any = None, done: bool = True) -> None:
        """Print ``text`` (stdout unless ``file``) above the bar; ``done``: it finishes a photo."""
        if self.bar is None:
            print(text, file=file)
            return
        with self.bar.external_write_mode(file=file):
            print(text, file=file)
        if done:
            self.bar.update()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def write_attention_map(captioner: Captioner, path: Path, best: Any, out: Path) -> str:
    """Draw the best caption's attention map to ``out``; the line that names it."""
    from nic.attention_maps import caption_words, draw_attention  # Pillow's drawing: only when asked for

    words = caption_words(best.words, len(best.alphas), best.finished)
    return f"  attention map: {draw_attention(path, words, best.alphas, captioner.encoder.grid_side, out)}"


def format_captions(path: Path, captions: list, n_best: int) -> str:
    """``path: caption``, or with ``--nbest`` > 1 the path, then one ``  logprob  caption`` line each."""
    if n_best == 1:
        return f"{path}: {captions[0].text}"
    return "\n".join([f"{path}:", *(f"  {c.logprob:8.3f}  {c.text}" for c in captions)])


def exit_now(code: int | str | None) -> None:
    """Exit with ``code`` as ``sys.exit`` would (a message: printed on stderr, status 1), skipping the
    interpreter's teardown: with torch imported it costs ~1 s and raises the peak memory by ~128 MB on a
    2-core machine (docs/benchmarks.md, 'Captioning latency'), and nothing of ours needs it (output is
    flushed here, files are closed, the decoding threads have stopped)."""
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:  # a reader that went away (`| head`): nothing more to tell it
            pass
    os._exit(code or 0)


if __name__ == "__main__":
    try:
        main()
    except SystemExit as done:
        exit_now(done.code)
    exit_now(0)
