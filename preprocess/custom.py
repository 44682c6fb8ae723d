"""Reader for a custom dataset: a folder of images plus a CSV or JSONL captions file.

One row per caption; an image may have several rows. Columns (CSV) or keys (JSONL)::

    image     path of the image, relative to the image folder ("dogs/001.jpg")
    caption   the caption text (tokenized like every dataset, see nic.vocab.tokenize)
    split     optional: train | val | test

CSV (``.csv``; ``.tsv`` for tab-separated) should start with a header row naming the
columns (``image,caption[,split]``, any order, extra columns ignored); without a header
the columns are taken in that order. Quote captions that contain commas. JSONL
(``.jsonl``/``.ndjson``) holds one object per line, e.g.
``{"image": "001.jpg", "caption": "A dog runs.", "split": "train"}``.

Images without a split (no split column, or an empty cell) are assigned one at random:
a seeded permutation of the image names, ``val_fraction`` of them to val and
``test_fraction`` to test, the rest to train. The same file, fractions and seed always
give the same split.

Image ids are the images' positions in order of first appearance. A row that cannot be
parsed (bad JSON, a missing ``image``/``caption`` field, the wrong number of columns, an
unknown split, two splits for one image) is a :class:`DatasetFormatError` naming the file
and line; an empty caption or an unsafe image path is a skipped, reported problem.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from nic.store import SPLITS
from nic.vocab import tokenize
from preprocess.karpathy import DatasetFormatError, ImageRecord, ProblemLog, _intern, safe_relative_path

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
LAYOUT = ("one row per caption with columns image,caption[,split] (CSV/TSV with a header row) "
          'or one JSON object per line {"image": ..., "caption": ..., "split": ...} (JSONL)')


def read_custom(captions_file: str | Path, *, val_fraction: float = 0.05, test_fraction: float = 0.05,
                seed: int = 0, problems: ProblemLog | None = None) -> list[ImageRecord]:
    """Read a custom captions file into :class:`ImageRecord` s (see the module docstring)."""
    path = Path(captions_file)
    problems = problems if problems is not None else ProblemLog()
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DatasetFormatError(f"{path}: unknown captions file type {path.suffix!r}; expected one of "
                                 f"{sorted(FORMATS)}: {LAYOUT}")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must be in [0, 1) "
                         "and leave some images for training")
    if not path.exists():
        raise FileNotFoundError(f"{path}: captions file not found")
    rows = _jsonl_rows(path) if kind == "jsonl" else _csv_rows(path, "\t" if kind == "tsv" else ",")

    images: dict[str, dict[str, Any]] = {}  # path -> {"captions", "split", "line"}, in order of appearance
    for line, image, caption, split in rows:
        where = f"{path}:{line}"
        if not image:
            raise DatasetFormatError(f"{where}: empty image name; expected {LAYOUT}")
        if split not in ("", *SPLITS):
            raise DatasetFormatError(f"{where}: unknown split {split!r} (expected one of {SPLITS} or empty)")
        rel = safe_relative_path(image)
        if rel is None:
            problems.add(split or "-", image, "unsafe_path",
                         "file name escapes the image folder (absolute or '..'); row skipped", source=where)
            continue
        entry = images.setdefault(rel, {"captions": [], "empty": 0, "split": split, "line": line})
        if split and entry["split"] and split != entry["split"]:
            raise DatasetFormatError(f"{where}: image {rel!r} is in split {split!r} here but in "
                                     f"{entry['split']!r} on line {entry['line']}")
        entry["split"] = entry["split"] or split
        tokens = tokenize(caption)
        if tokens:
            entry["captions"].append(_intern(tokens))
        else:
            entry["empty"] += 1
    if not images:
        raise DatasetFormatError(f"{path}: no rows found; expected {LAYOUT}")

    _assign_splits(images, val_fraction, test_fraction, seed)
    records = []
    for image_id, (rel, entry) in enumerate(images.items()):
        if entry["empty"]:
            problems.add(entry["split"], rel, "empty_caption", f"{entry['empty']} empty caption(s)", source=path)
        if not entry["captions"]:
            problems.add(entry["split"], rel, "no_captions", "no usable caption; image skipped", source=path)
            continue
        records.append(ImageRecord(image_id=image_id, path=rel, split=entry["split"], captions=entry["captions"]))
    return records


def _assign_splits(images: dict[str, dict[str, Any]], val_fraction: float, test_fraction: float, seed: int) -> None:
    """Give every image without a split one, by a seeded permutation of the sorted names."""
    free = sorted(p for p, e in images.items() if not e["split"])
    if not free:
        return
    order = np.random.default_rng(seed).permutation(len(free))
    n_val, n_test = round(len(free) * val_fraction), round(len(free) * test_fraction)
    for rank, i in enumerate(order):
        images[free[i]]["split"] = "val" if rank < n_val else "test" if rank < n_val + n_test else "train"


def _csv_rows(path: Path, delimiter: str):
    """Yield (line, image, caption, split) from a CSV/TSV file."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        columns = {"image": 0, "caption": 1, "split": 2}
        first = True
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if first:
                first = False
                header = [c.strip().lower() for c in row]
                if "image" in header and "caption" in header:
                    columns = {k: header.index(k) for k in ("image", "caption", "split") if k in header}
                    continue
                if len(row) not in (2, 3):
                    raise DatasetFormatError(f"{path}:{line}: expected a header row or {LAYOUT}; got {len(row)} "
                                             "column(s)")
                if len(row) == 2:
                    columns.pop("split")
            width = max(columns.values()) + 1
            if len(row) < width:
                raise DatasetFormatError(f"{path}:{line}: expected at least {width} columns "
                                         f"({', '.join(columns)}), got {len(row)}; quote captions that contain "
                                         f"'{delimiter}'")
            split = row[columns["split"]].strip().lower() if "split" in columns else ""
            yield line, row[columns["image"]].strip(), row[columns["caption"]], split


def _jsonl_rows(path: Path):
    """Yield (line, image, caption, split) from a JSONL file."""
    with open(path, encoding="utf-8-sig") as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise DatasetFormatError(f"{path}:{line}: malformed JSON ({e}); expected {LAYOUT}") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("image"), str) \
                    or not isinstance(obj.get("caption"), str):
                raise DatasetFormatError(f"{path}:{line}: expected an object with string fields 'image' and "
                                         f"'caption' (and optionally 'split'); {LAYOUT}")
            split = obj.get("split") or ""
            if not isinstance(split, str):
                raise DatasetFormatError(f"{path}:{line}: 'split' must be a string, got {split!r}")
            yield line, obj["image"].strip(), obj["caption"], split.strip().lower()
