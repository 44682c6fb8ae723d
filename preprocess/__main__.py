"""``python -m preprocess``: build the vocabulary and HDF5 stores for a dataset.

Examples::

    # the built-in synthetic dataset (generated first when missing)
    python -m preprocess --dataset shapes --root data/shapes

    # Flickr8k / Flickr30k / COCO from Karpathy's split files
    python -m preprocess --dataset flickr8k --root data/flickr8k \\
        --karpathy-json dataset_flickr8k.json --image-dir Flicker8k_Dataset
    python -m preprocess --dataset coco --root data/coco --karpathy-json dataset_coco.json
"""

from __future__ import annotations

import argparse

from nic.config import DataConfig
from preprocess.build import prepare


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = DataConfig()
    p = argparse.ArgumentParser(prog="python -m preprocess", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default=d.dataset, help="shapes, coco, flickr8k, flickr30k (default: %(default)s)")
    p.add_argument("--root", default=d.root, help="dataset folder (default: %(default)s)")
    p.add_argument("--karpathy-json", default=None,
                   help="Karpathy split JSON, relative to --root (default: dataset_<dataset>.json)")
    p.add_argument("--image-dir", default=None, help="image folder relative to --root (default: --root)")
    p.add_argument("--store-dir", default=None, help="output folder (default: <root>/stores)")
    p.add_argument("--image-size", type=int, default=d.image_size, help="stored image side (default: %(default)s)")
    p.add_argument("--min-count", type=int, default=d.min_count, help="vocabulary min word count (default: %(default)s)")
    p.add_argument("--max-len", type=int, default=d.max_len, help="max caption words (default: %(default)s)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    cfg = DataConfig(dataset=a.dataset, root=a.root, karpathy_json=a.karpathy_json, image_dir=a.image_dir,
                     store_dir=a.store_dir, image_size=a.image_size, min_count=a.min_count, max_len=a.max_len)
    store_dir = prepare(cfg)
    print(f"stores written to {store_dir}")


if __name__ == "__main__":
    main()
