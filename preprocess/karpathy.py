"""Reader for Karpathy-split caption JSON (``dataset_coco.json``, ``dataset_flickr8k.json``,
``dataset_flickr30k.json``, and the built-in shapes dataset's ``dataset_shapes.json``).

Layout expected (the keys Karpathy's files use)::

    {"dataset": "coco",
     "images": [{"filepath": "val2014",              # optional (COCO only): sub-folder
                 "filename": "COCO_val2014_000000391895.jpg",
                 "split": "train" | "val" | "test" | "restval",
                 "imgid": 0, "cocoid": 391895,        # cocoid only for COCO
                 "sentences": [{"raw": "A man ...", "tokens": ["a", "man", ...]}, ...]},
                ...]}

Captions are re-tokenized from ``raw`` with :func:`nic.vocab.tokenize` (so every dataset,
custom ones included, goes through the same tokenizer); ``tokens`` is used when ``raw``
is absent. Keys other than the standard ones (e.g. the shapes generator's ``objects``) are
kept as per-image metadata.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nic.vocab import tokenize

STANDARD_KEYS = {"filepath", "filename", "split", "imgid", "cocoid", "sentids", "sentences", "id"}
SPLITS = ("train", "val", "test")


@dataclass
class ImageRecord:
    """One image and its captions, as every dataset reader returns them."""

    image_id: int
    path: str  # relative to the dataset's image folder
    split: str
    captions: list[list[str]]  # tokenized
    meta: dict[str, Any] = field(default_factory=dict)


class DatasetFormatError(ValueError):
    """The input file is not in the expected layout."""


def read_karpathy(json_path: str | Path, *, restval: str = "train") -> list[ImageRecord]:
    """Read a Karpathy-split JSON file into :class:`ImageRecord` s.

    ``restval`` says what to do with COCO's ``restval`` images: ``"train"`` merges them
    into train (the usual choice, ~113k training images), ``"drop"`` leaves them out.
    """
    json_path = Path(json_path)
    if restval not in ("train", "drop"):
        raise ValueError(f"restval must be 'train' or 'drop', got {restval!r}")
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{json_path}: Karpathy split file not found") from None
    except json.JSONDecodeError as e:
        raise DatasetFormatError(f"{json_path}: malformed JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetFormatError(
            f"{json_path}: expected a Karpathy-split JSON object with an 'images' list "
            '({"images": [{"filename": ..., "split": ..., "sentences": [{"raw": ...}]}]})'
        )
    records = []
    for i, entry in enumerate(data["images"]):
        record = _record(entry, i, json_path, restval)
        if record is not None:
            records.append(record)
    return records


def _record(entry: Any, index: int, json_path: Path, restval: str) -> ImageRecord | None:
    where = f"{json_path}: images[{index}]"
    if not isinstance(entry, dict) or "filename" not in entry or "split" not in entry:
        raise DatasetFormatError(f"{where}: expected an object with 'filename', 'split' and 'sentences'")
    split = entry["split"]
    if split == "restval":
        if restval == "drop":
            return None
        split = "train"
    if split not in SPLITS:
        raise DatasetFormatError(f"{where}: unknown split {split!r} (expected one of {SPLITS} or 'restval')")
    path = str(Path(entry.get("filepath", "")) / entry["filename"])
    image_id = entry.get("cocoid", entry.get("imgid", index))
    captions = []
    for sentence in entry.get("sentences") or []:
        if isinstance(sentence, dict) and "raw" in sentence:
            captions.append(tokenize(str(sentence["raw"])))
        elif isinstance(sentence, dict) and "tokens" in sentence:
            captions.append([t.lower() for t in sentence["tokens"]])
        else:
            raise DatasetFormatError(f"{where}: each sentence needs 'raw' or 'tokens'")
    meta = {k: v for k, v in entry.items() if k not in STANDARD_KEYS}
    return ImageRecord(image_id=int(image_id), path=path, split=split, captions=captions, meta=meta)
