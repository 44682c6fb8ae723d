"""Caption your own photos: with the model that ships with nic, or with your own checkpoint.

    python caption.py --img photo.jpg                  # the shipped Flickr8k model (models/), beam 20
    python caption.py --img photo.jpg --beam 20
    python caption.py --img a.jpg b.png --nbest 3
    python caption.py --img my_photos/ --checkpoint runs/nic_coco/best.pt
    python caption.py --img photo.jpg --checkpoint runs/attention_shapes --attention-map att.png

Any JPEG/PNG/BMP/WebP of any size works; grayscale, palette and RGBA images are
converted to RGB and resized exactly as the training stores were.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from nic.attention_maps import caption_words, draw_attention
from nic.captioner import Captioner
from nic.decoding import METHODS

# The model that ships with nic: Show and Tell trained on Flickr8k (models/nic_flickr8k/MODEL_CARD.md).
SHIPPED_MODEL = Path(__file__).resolve().parent / "models" / "nic_flickr8k" / "model.pt"
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
    p.add_argument("--checkpoint", default=str(SHIPPED_MODEL),
                   help="checkpoint file or run directory (default: the Flickr8k model that ships with nic, "
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
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--encoder-weights", default=None, metavar="PATH",
                   help="ImageNet weights file for the checkpoint's encoder (default: packaged or torch cache)")
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


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    paths = collect_images(a.img)
    try:
        captioner = Captioner.from_checkpoint(a.checkpoint, device=a.device, encoder_weights=a.encoder_weights)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    try:  # every setting not given on the command line is the checkpoint's
        settings = captioner.settings.replace(method=a.method, beam_size=a.beam, n_best=a.nbest, max_len=a.max_len,
                                              length_penalty=a.length_penalty, temperature=a.temperature)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    map_paths = {}
    if a.attention_map:
        if not captioner.uses_grid:
            raise SystemExit(f"--attention-map: the checkpoint {a.checkpoint} has a {captioner.config.decoder.type!r} "
                             "decoder, which has no attention; use a checkpoint trained with decoder.type: attention "
                             "(e.g. configs/attention_shapes.yaml)")
        map_paths = dict(zip(paths, attention_map_paths(a.attention_map, paths)))
    generator = torch.Generator().manual_seed(a.seed)
    for path, captions in captioner.caption_files(paths, settings, generator=generator):
        print_captions(path, captions, settings.n_best)
        if path in map_paths:
            best = captions[0]
            words = caption_words(best.words, len(best.alphas), best.finished)
            side = captioner.encoder.grid_side
            print(f"  attention map: {draw_attention(path, words, best.alphas, side, map_paths[path])}")


def print_captions(path: Path, captions: list, n_best: int) -> None:
    if n_best == 1:
        print(f"{path}: {captions[0].text}")
        return
    print(f"{path}:")
    for c in captions:
        print(f"  {c.logprob:8.3f}  {c.text}")


if __name__ == "__main__":
    main()
