"""Write the HDF5 caption stores (schema: :mod:`nic.store`).

Images are decoded, converted to RGB and resized one at a time and streamed into a
chunked dataset, so memory does not grow with the number of images. Each split is written
under a temporary name and renamed when complete. Problems with the input (an image that
is missing or cannot be decoded, an empty caption, an image left with no caption) never
stop the run silently: the item is skipped, counted, and listed with its reason in the
returned report.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from PIL import Image
from tqdm import tqdm

from nic.images import load_image
from nic.io import atomic_path
from nic.store import FORMAT, STR_DTYPE, VERSION
from nic.vocab import Vocabulary
from preprocess.karpathy import ImageRecord

WRITE_BLOCK = 64  # images buffered before one HDF5 write


def write_split(
    records: Sequence[ImageRecord],
    path: str | Path,
    *,
    vocab: Vocabulary,
    image_dir: str | Path,
    image_size: int,
    max_len: int,
    dataset: str,
    split: str,
    progress: bool = True,
) -> dict[str, Any]:
    """Write one split's store to ``path`` and return a report of what was written/skipped."""
    path, image_dir = Path(path), Path(image_dir)
    skipped: list[dict[str, str]] = []
    n_trunc = n_caps = 0
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        s = image_size
        images = f.create_dataset("images", (0, 3, s, s), np.uint8, maxshape=(None, 3, s, s), chunks=(1, 3, s, s))
        cols: dict[str, list[Any]] = {k: [] for k in ("image_ids", "filenames", "image_meta")}
        caps: dict[str, list[Any]] = {k: [] for k in ("captions", "caption_lengths", "caption_image", "references")}
        block: list[np.ndarray] = []
        for record in tqdm(records, desc=f"{dataset}/{split}", unit="img", disable=not progress):
            good = [c for c in record.captions if c]
            if len(good) < len(record.captions):
                skipped.append({"item": record.path, "reason": f"{len(record.captions) - len(good)} empty caption(s)"})
            if not good:
                skipped.append({"item": record.path, "reason": "no usable caption; image skipped"})
                continue
            try:
                pixels = load_image(image_dir / record.path, s)
            except FileNotFoundError:
                skipped.append({"item": record.path, "reason": "image file not found"})
                continue
            except (OSError, ValueError, Image.DecompressionBombError) as e:
                skipped.append({"item": record.path, "reason": f"cannot decode image: {e}"})
                continue
            index = len(cols["image_ids"]) 
            block.append(pixels)
            cols["image_ids"].append(record.image_id)
            cols["filenames"].append(record.path)
            cols["image_meta"].append(json.dumps(record.meta, ensure_ascii=False))
            for tokens in good:
                n_trunc += len(tokens) > max_len
                n_caps += 1
                ids = vocab.encode(tokens[:max_len])
                caps["captions"].append(ids + [vocab.pad_id] * (max_len + 2 - len(ids)))
                caps["caption_lengths"].append(len(ids))
                caps["caption_image"].append(index)
                caps["references"].append(" ".join(tokens))
            if len(block) == WRITE_BLOCK:
                _append(images, block)
        _append(images, block)
        n = images.shape[0]
        f.create_dataset("image_ids", data=np.asarray(cols["image_ids"], dtype=np.int64).reshape(n))
        f.create_dataset("filenames", data=cols["filenames"], dtype=STR_DTYPE)
        f.create_dataset("image_meta", data=cols["image_meta"], dtype=STR_DTYPE)
        m = len(caps["captions"])
        f.create_dataset("captions", data=np.asarray(caps["captions"], dtype=np.int32).reshape(m, max_len + 2))
        f.create_dataset("caption_lengths", data=np.asarray(caps["caption_lengths"], dtype=np.int32).reshape(m))
        f.create_dataset("caption_image", data=np.asarray(caps["caption_image"], dtype=np.int32).reshape(m))
        f.create_dataset("references", data=caps["references"], dtype=STR_DTYPE)
        f.attrs.update(
            format=FORMAT, version=VERSION, dataset=dataset, split=split, image_size=s, max_len=max_len,
            vocab_hash=vocab.hash(), uid=uuid.uuid4().hex, num_images=n, num_captions=m,
        )
    return {"split": split, "images": n, "captions": m, "captions_truncated": n_trunc,
            "skipped": len(skipped), "skipped_items": skipped}


def _append(dset: h5py.Dataset, block: list[np.ndarray]) -> None:
    if not block:
        return
    start = dset.shape[0]
    dset.resize(start + len(block), axis=0)
    dset[start:] = np.stack(block)
    block.clear()
