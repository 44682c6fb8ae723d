"""Caption your own photos with a trained checkpoint.

    python caption.py --img photo.jpg --beam 20
    python caption.py --img a.jpg b.png --nbest 3
    python caption.py --img my_photos/ --checkpoint runs/nic_coco/best.pt

Any JPEG/PNG/BMP/WebP of any size works; grayscale, palette and RGBA images are
converted to RGB and resized exactly as the training stores were.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from nic.captioner import Captioner

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


def collect_images(paths: list[str]) -> list[Path]:
    """Expand folders (sorted, image files only); fail clearly on a missing path."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise SystemExit(f"{p}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
            out.extend(found)
        elif p.exists():
            out.append(p)
        else:
            raise SystemExit(f"{p}: no such file or folder")
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--img", nargs="+", required=True, help="image files and/or folders")
    p.add_argument("--checkpoint", default="runs/default/best.pt", help="checkpoint file or run directory")
    p.add_argument("--beam", type=int, default=20, help="beam size (default: 20, the paper's)")
    p.add_argument("--nbest", type=int, default=1, help="print the N best captions with their log-probs")
    p.add_argument("--method", choices=("beam", "greedy", "sample"), default="beam", help="decoding method")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    p.add_argument("--max-len", type=int, default=None, help="maximum caption length in words")
    p.add_argument("--length-penalty", type=float, default=0.0, help="score = logprob / length**penalty")
    p.add_argument("--seed", type=int, default=0, help="seed for --method sample")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    if a.nbest > a.beam and a.method == "beam":
        raise SystemExit(f"--nbest {a.nbest} needs --beam of at least {a.nbest}")
    paths = collect_images(a.img)
    captioner = Captioner.from_checkpoint(a.checkpoint, device=a.device)
    generator = torch.Generator().manual_seed(a.seed)
    for path, captions in captioner.caption_files(paths, method=a.method, beam_size=a.beam, n_best=a.nbest,
                                                  max_len=a.max_len, length_penalty=a.length_penalty,
                                                  temperature=a.temperature, generator=generator):
        if a.nbest == 1:
            print(f"{path}: {captions[0].text}")
        else:
            print(f"{path}:")
            for c in captions:
                print(f"  {c.logprob:8.3f}  {c.text}")


if __name__ == "__main__":
    main()
