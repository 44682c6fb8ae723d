"""BLEU of int8 dynamic quantization (``caption.py --int8``) against float32, through the report's own code path.

    flock /tmp/nic_cpu.lock python bench/int8_bleu.py                  # the shipped model, Flickr8k val, beam 20
    python bench/int8_bleu.py --checkpoint runs/NAME/best.pt --split val --beam 20 --limit 200

Each model decodes the split with :func:`eval.bleu_report.evaluate_checkpoint` (the feature
cache, the checkpoint's length penalty, the COCO tokenizer), once as it is and once after
:meth:`nic.captioner.Captioner.quantize_int8` (``evaluate_checkpoint(..., int8=True)``, the report's
``--int8``); the only difference is that call. Prints
BLEU-1..4 of both, the BLEU-4 difference beside the 0.2-point limit that decides whether the
option is worth keeping, the share of images whose caption changed and the decoding time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/int8_bleu.py`

from bench.machine import describe  # noqa: E402
from eval import bleu_report  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LIMIT_POINTS = 0.2  # int8 stays an option only if BLEU-4 moves by less than this (x100)


def run(args: argparse.Namespace, int8: bool) -> tuple[dict, float]:
    start = time.perf_counter()
    report = bleu_report.evaluate_checkpoint(args.checkpoint, split=args.split, beam_sizes=[args.beam],
                                             limit=args.limit, store_dir=args.store_dir, progress=False,
                                             metrics=["bleu"], int8=int8)
    return report["results"][-1], time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(ROOT / "models" / "nic_flickr8k" / "model.pt"),
                   help="checkpoint (default: the shipped Flickr8k model)")
    p.add_argument("--split", default="val", help="split to score (default: %(default)s)")
    p.add_argument("--beam", type=int, default=20, help="beam size (default: %(default)s)")
    p.add_argument("--limit", type=int, default=0, help="first N images only (0: all)")
    p.add_argument("--store-dir", default=str(ROOT / "data" / "flickr8k" / "stores"), help="the split's stores")
    args = p.parse_args(argv)
    print(describe())
    fp32, fp32_s = run(args, int8=False)
    int8, int8_s = run(args, int8=True)
    print(f"{args.checkpoint}, {args.split} ({fp32['images']} images), beam {args.beam}")
    print(f"{'':6} {'BLEU-1':>7} {'BLEU-2':>7} {'BLEU-3':>7} {'BLEU-4':>7} {'decode s':>9}")
    for name, row, seconds in (("fp32", fp32, fp32_s), ("int8", int8, int8_s)):
        bleu = row["bleu"]
        print(f"{name:6} " + " ".join(f"{100 * bleu[f'BLEU-{n}']:7.2f}" for n in range(1, 5)) + f" {seconds:9.1f}")
    delta = 100 * (int8["bleu"]["BLEU-4"] - fp32["bleu"]["BLEU-4"])
    changed = sum(a != b for a, b in zip(fp32["captions"], int8["captions"]))
    verdict = "keep as an option" if abs(delta) < LIMIT_POINTS else "drop the option"
    print(f"BLEU-4 int8 - fp32: {delta:+.2f} points (limit: |difference| < {LIMIT_POINTS}) -> {verdict}")
    print(f"captions changed by int8: {changed} of {len(fp32['captions'])}")


if __name__ == "__main__":
    main()
