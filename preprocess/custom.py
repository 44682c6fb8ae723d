"""Reader for a custom dataset: a folder of images plus a CSV or JSONL captions file.

One row per caption; an image may have several rows. Columns (CSV) or keys (JSONL)::

    image     path of the image, relative to the image folder ("dogs/001.jpg")
    caption   the caption text (tokenized like every dataset, see nic.vocab.tokenize)
    split     optional: train | val | test

CSV (``.csv``; ``.tsv`` for tab-separated) should start with a header row naming the
columns (``image,caption[,split]``, any order, extra columns ignored); without a header
the columns are taken in that order. A first row that names other columns (``filename``,
``path``, ``text``, ``sentence``, ...: :data:`HEADER_WORDS`), or whose image has no image
suffix while its caption is one bare word, is a header nic cannot read: an error naming the
columns found (nic does not guess synonyms). Quote captions that contain commas. JSONL
(``.jsonl``/``.ndjson``) holds one object per line, e.g.
``{"image": "001.jpg", "caption": "A dog runs.", "split": "train"}``. Both are UTF-8 (a BOM
is fine).

Images without a split (no split column, or an empty cell) are assigned one at random:
a seeded permutation of the image names, ``val_fraction`` of them to val and
``test_fraction`` to test, the rest to train. The same file, fractions and seed always
give the same split.

Image ids are the images' positions in order of first appearance. A row that cannot be
read (not UTF-8, bad or too deeply nested JSON, a CSV field over the csv module's size
limit, a missing ``image``/``caption`` field, the wrong number of columns, an unknown
split, two splits for one image) is a :class:`DatasetFormatError` naming the file and line
and what to do. An image path whose text escapes the image folder is a skipped, reported
problem here; empty and duplicate captions are kept in the records and dropped, counted
and reported by :func:`preprocess.build.select_captions`, as for every dataset.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from nic.paths import NotRegularFile, open_regular, relative_inside
from nic.store import SPLITS
from nic.vocab import tokenize
from preprocess.karpathy import DatasetFormatError, ImageRecord, ProblemLog, _intern

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
LAYOUT = ("one row per caption with columns image,caption[,split] (CSV/TSV with a header row) "
          'or one JSON object per line {"image": ..., "caption": ..., "split": ...} (JSONL)')
#: Names a header row may hold besides image/caption/split: a first row with one of them is a header.
HEADER_WORDS = frozenset({"image", "caption", "split", "filename", "file_name", "file", "path", "filepath",
                          "image_path", "image_file", "image_name", "image_id", "img", "photo", "picture", "url",
                          "id", "text", "sentence", "sentences", "captions", "description", "raw", "subset", "set"})
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".avif")


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
        rel = relative_inside(image)
        if rel is None:
            problems.add(split or "-", image, "unsafe_path",
                         "file name escapes the image folder (absolute or '..'); row skipped", source=where)
            continue
        entry = images.setdefault(rel, {"captions": [], "split": split, "line": line})
        if split and entry["split"] and split != entry["split"]:
            raise DatasetFormatError(f"{where}: image {rel!r} is in split {split!r} here but in "
                                     f"{entry['split']!r} on line {entry['line']}")
        entry["split"] = entry["split"] or split
        entry["captions"].append(_intern(tokenize(caption)))  # an empty one too: select_captions counts it
    if not images:
        raise DatasetFormatError(f"{path}: no rows found; expected {LAYOUT}")

    _assign_splits(images, val_fraction, test_fraction, seed)
    return [ImageRecord(image_id=image_id, path=rel, split=entry["split"], captions=entry["captions"])
            for image_id, (rel, entry) in enumerate(images.items())]


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
    columns: dict[str, int] | None = None
    for line, row in _csv_records(path, delimiter):
        if columns is None:
            columns, is_header = _header(path, line, row)
            if is_header:
                continue
        width = max(columns.values()) + 1
        if len(row) < width:
            raise DatasetFormatError(f"{path}:{line}: expected at least {width} columns "
                                     f"({', '.join(columns)}), got {len(row)}; quote captions that contain "
                                     f"'{delimiter}'")
        split = row[columns["split"]].strip().lower() if "split" in columns else ""
        yield line, row[columns["image"]].strip(), row[columns["caption"]], split


def _csv_records(path: Path, delimiter: str):
    """Yield (line, row) for every row that is not blank; unreadable text is an error at its file:line."""
    line = 0  # the last line of the previous row: a row that cannot be read starts after it
    with _open_text(path, newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            for row in reader:
                if row and any(c.strip() for c in row):
                    yield reader.line_num, row
                line = reader.line_num
        except UnicodeDecodeError:
            raise _not_utf8(path) from None
        except csv.Error as e:
            limit = csv.field_size_limit()
            if "field larger than field limit" in str(e):
                raise DatasetFormatError(
                    f"{path}:{line + 1}: a field of the row starting here is longer than {limit:,} characters "
                    "(the csv module's limit; a caption is a sentence): most likely a quote (\") that is never "
                    "closed and runs on through the following lines; close it, or quote the caption") from None
            raise DatasetFormatError(f"{path}:{line + 1}: unreadable CSV ({e}); expected {LAYOUT}") from None


def _header(path: Path, line: int, row: list[str]) -> tuple[dict[str, int], bool]:
    """The columns from the file's first row, and whether that row is a header (else it is data, in order)."""
    names = [c.strip().lower() for c in row]
    if "image" in names and "caption" in names:
        return {k: names.index(k) for k in ("image", "caption", "split") if k in names}, True
    bare_word = len(names) > 1 and names[1].replace("_", "").isalnum() and names[1].isascii()
    if any(n in HEADER_WORDS for n in names) or (bare_word and not names[0].endswith(IMAGE_SUFFIXES)):
        found = ", ".join(repr(c.strip()) for c in row)
        raise DatasetFormatError(
            f"{path}:{line}: the first row ({found}) looks like a header but does not name the columns 'image' and "
            "'caption': rename them (the header must be image,caption[,split], in any order; other columns are "
            "ignored). If it is a data row, add the header row image,caption[,split] above it")
    if len(row) not in (2, 3):
        raise DatasetFormatError(f"{path}:{line}: expected a header row or {LAYOUT}; got {len(row)} column(s)")
    return ({"image": 0, "caption": 1, "split": 2} if len(row) == 3 else {"image": 0, "caption": 1}), False


def _jsonl_rows(path: Path):
    """Yield (line, image, caption, split) from a JSONL file."""
    with _open_text(path) as f:
        try:
            yield from _jsonl_objects(path, f)
        except UnicodeDecodeError:
            raise _not_utf8(path) from None


def _jsonl_objects(path: Path, f):
    for line, text in enumerate(f, start=1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except RecursionError:
            raise DatasetFormatError(f"{path}:{line}: JSON nested too deeply; expected one flat object per line: "
                                     f"{LAYOUT}") from None
        except ValueError as e:  # JSONDecodeError, or e.g. an integer of over 4300 digits
            raise DatasetFormatError(f"{path}:{line}: malformed JSON ({e}); expected {LAYOUT}") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("image"), str) \
                or not isinstance(obj.get("caption"), str):
            raise DatasetFormatError(f"{path}:{line}: expected an object with string fields 'image' and "
                                     f"'caption' (and optionally 'split'); {LAYOUT}")
        split = obj.get("split") or ""
        if not isinstance(split, str):
            raise DatasetFormatError(f"{path}:{line}: 'split' must be a string, got {split!r}")
        yield line, obj["image"].strip(), obj["caption"], split.strip().lower()


def _open_text(path: Path, newline: str | None = None) -> io.TextIOWrapper:
    """The captions file as UTF-8 text (a BOM skipped); only a regular file: a FIFO is an error, never waited on."""
    try:
        return io.TextIOWrapper(open_regular(path), encoding="utf-8-sig", newline=newline)
    except NotRegularFile as e:
        raise DatasetFormatError(f"{e}; expected a captions file: {LAYOUT}") from None


def _not_utf8(path: Path) -> DatasetFormatError:
    """The error for a captions file that is not UTF-8, at the first line that is not (read again, as bytes)."""
    with open(path, "rb") as f:
        for line, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8-sig" if line == 1 else "utf-8")
            except UnicodeDecodeError as e:
                return DatasetFormatError(
                    f"{path}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}); the "
                    "captions file must be UTF-8: convert it (e.g. iconv -f latin1 -t utf-8 in > out)")
    return DatasetFormatError(f"{path}: not UTF-8 text; the captions file must be UTF-8")
