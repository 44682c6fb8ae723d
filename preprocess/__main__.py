"""``python -m preprocess``: build the vocabulary and HDF5 stores for a dataset.

Examples (docs/datasets.md has the whole path from downloaded files to a trained model)::

    # the built-in synthetic dataset (generated first when missing)
    python -m preprocess --dataset shapes --root data/shapes

    # COCO / Flickr8k / Flickr30k from Karpathy's split files
    python -m preprocess --dataset coco --root data/coco --image-size 299
    python -m preprocess --dataset flickr8k --root data/flickr8k --image-dir Flicker8k_Dataset
    python -m preprocess --dataset flickr30k --root data/flickr30k --image-dir flickr30k-images

    # your own photos: a folder of images + a CSV/JSONL of image,caption[,split] rows
    python -m preprocess --dataset custom --root data/mine --captions captions.csv --image-dir photos

An interrupted run (Ctrl-C, kill -9, a crash) resumes where it stopped when the same
command is run again. Bad input items (missing or corrupt images, empty captions, ...)
are skipped and listed with their reasons in <store-dir>/report.json (--strict: fatal).
Exit status: 0 done, 1 bad input or layout (message on stderr), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys

from nic.config import DataConfig
from preprocess.build import DATASETS, LONG_CAPTIONS, prepare
from preprocess.karpathy import RESTVAL_CHOICES, DatasetFormatError, InputProblem


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = DataConfig()
    p = argparse.ArgumentParser(prog="python -m preprocess", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("input")
    g.add_argument("--dataset", default=d.dataset,
                   help=f"{', '.join(DATASETS)}; any other name is read as a Karpathy-split JSON "
                        "(default: %(default)s)")
    g.add_argument("--root", default=d.root, help="dataset folder (default: %(default)s)")
    g.add_argument("--karpathy-json", default=None,
                   help="Karpathy split JSON, relative to --root (default: dataset_<dataset>.json)")
    g.add_argument("--captions", default=None, metavar="FILE",
                   help="custom dataset: CSV/TSV/JSONL of image,caption[,split] rows, relative to --root")
    g.add_argument("--image-dir", default=None,
                   help="image folder relative to --root, that the file names are relative to (default: --root)")
    g.add_argument("--restval", default=d.restval, choices=RESTVAL_CHOICES,
                   help="COCO's restval images: merge into train or drop them (default: %(default)s)")
    g.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help="custom dataset without splits: fraction of images for val (default: %(default)s)")
    g.add_argument("--test-fraction", type=float, default=d.test_fraction,
                   help="custom dataset without splits: fraction of images for test (default: %(default)s)")
    g.add_argument("--split-seed", type=int, default=d.split_seed,
                   help="custom dataset without splits: seed of the random split (default: %(default)s)")
    g = p.add_argument_group("captions and vocabulary")
    g.add_argument("--min-count", type=int, default=d.min_count,
                   help="words seen fewer times in train map to <unk> (default: %(default)s)")
    g.add_argument("--max-len", type=int, default=d.max_len, help="max caption words (default: %(default)s)")
    g.add_argument("--long-captions", default=d.long_captions, choices=LONG_CAPTIONS,
                   help="train captions longer than --max-len: truncate or drop them (default: %(default)s)")
    g.add_argument("--captions-per-image", type=int, default=d.captions_per_image, metavar="N",
                   help="keep the first N captions of each train image; 0: all (default: %(default)s)")
    g = p.add_argument_group("output")
    g.add_argument("--store-dir", default=None, help="output folder (default: <root>/stores)")
    g.add_argument("--image-size", type=int, default=d.image_size, help="stored image side (default: %(default)s)")
    g.add_argument("--workers", type=int, default=d.preprocess_workers, metavar="N",
                   help="image-decoding threads; 0: one per CPU core, at most 8 (default: %(default)s)")
    g.add_argument("--max-pixels", type=int, default=d.max_pixels,
                   help="skip images declaring more pixels (decompression bombs); 0: no limit (default: %(default)s)")
    g.add_argument("--strict", action="store_true", help="any bad input item is fatal instead of skipped and reported")
    g.add_argument("--report", default=None, metavar="PATH",
                   help="also write the build report (every skipped item with its reason) here "
                        "(always written to <store-dir>/report.json)")
    g.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                   help="images between progress checkpoints that a killed run resumes from (default: 500)")
    g.add_argument("--force", action="store_true", help="rebuild even when complete stores for these inputs exist")
    g.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    return p.parse_args(argv)


def config_from_args(a: argparse.Namespace) -> DataConfig:
    return DataConfig(
        dataset=a.dataset, root=a.root, karpathy_json=a.karpathy_json, image_dir=a.image_dir, store_dir=a.store_dir,
        image_size=a.image_size, min_count=a.min_count, max_len=a.max_len, captions_file=a.captions,
        val_fraction=a.val_fraction, test_fraction=a.test_fraction, split_seed=a.split_seed, restval=a.restval,
        long_captions=a.long_captions, captions_per_image=a.captions_per_image, preprocess_workers=a.workers,
        max_pixels=a.max_pixels, strict=a.strict)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    try:
        store_dir = prepare(config_from_args(a), progress=not a.quiet, report=a.report, force=a.force,
                            flush_every=a.checkpoint_every)
    except (DatasetFormatError, InputProblem, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume where it stopped", file=sys.stderr)
        return 130
    if not a.quiet:
        print(f"stores written to {store_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
