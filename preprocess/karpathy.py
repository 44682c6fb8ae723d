"""Reader for Karpathy-split caption JSON (``dataset_coco.json``, ``dataset_flickr8k.json``,
``dataset_flickr30k.json``, and the built-in shapes dataset's ``dataset_shapes.json``), and
the types every dataset reader shares (:class:`ImageRecord`, :class:`ProblemLog`).

Layout expected (the keys Karpathy's files use)::

    {"dataset": "coco",
     "images": [{"filepath": "val2014",              # optional (COCO only): sub-folder
                 "filename": "COCO_val2014_000000391895.jpg",
                 "split": "train" | "val" | "test" | "restval",
                 "imgid": 0, "cocoid": 391895,        # cocoid only for COCO
                 "sentences": [{"raw": "A man ...", "tokens": ["a", "man", ...]}, ...]},
                ...]}

The image id is ``cocoid`` when present (COCO), else ``imgid`` (Flickr), else the entry's
position. COCO's ``restval`` images (30,504 of them) are merged into train (``restval=
"train"``, the usual ~113k-image training set) or left out (``"drop"``).

Captions are re-tokenized from ``raw`` with :func:`nic.vocab.tokenize` (so every dataset,
custom ones included, goes through the same tokenizer); ``tokens`` is used when ``raw``
is absent. Keys other than the standard ones (e.g. the shapes generator's ``objects``) are
kept as per-image metadata.

Two kinds of bad input:

* the file is not JSON, or not this layout (no ``images`` list, an entry that is not an
  object or lacks ``filename``/``split``, an unknown split, a sentence without ``raw``
  or ``tokens``): :class:`DatasetFormatError` at once, naming the file and the entry;
* one entry is unusable (no sentences, a file name that escapes the image folder): the
  entry is skipped and recorded in the :class:`ProblemLog` with the reason (which raises
  :class:`InputProblem` instead when the log is strict).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from nic.vocab import tokenize

STANDARD_KEYS = {"filepath", "filename", "split", "imgid", "cocoid", "sentids", "sentences", "id"}
SPLITS = ("train", "val", "test")
RESTVAL_CHOICES = ("train", "drop")


@dataclass
class ImageRecord:
    """One image and its captions, as every dataset reader returns them."""

    image_id: int
    path: str  # relative to the dataset's image folder, "/"-separated
    split: str
    captions: list[list[str]]  # tokenized
    meta: dict[str, Any] = field(default_factory=dict)


class DatasetFormatError(ValueError):
    """The input file is not in the expected layout."""


class InputProblem(ValueError):
    """A bad input item (image or caption) in ``strict`` mode, where it is fatal."""


@dataclass
class ProblemLog:
    """Every skipped input item with its reason; fatal at the first one when ``strict``.

    Each item is ``{"split", "item", "reason", "kind"}``: ``item`` is the image path as the
    input names it, ``kind`` one of :data:`PROBLEM_KINDS`.
    """

    strict: bool = False
    items: list[dict[str, str]] = field(default_factory=list)

    def add(self, split: str, item: str, kind: str, reason: str, *, source: str | Path = "") -> None:
        if kind not in PROBLEM_KINDS:
            raise ValueError(f"unknown problem kind {kind!r}")
        if self.strict:
            where = f"{source}: " if source else ""
            raise InputProblem(f"{where}{item}: {reason} (--strict: bad input is fatal; "
                               "leave --strict out to skip and report such items)")
        self.items.append({"split": split, "item": item, "reason": reason, "kind": kind})

    def for_split(self, split: str) -> list[dict[str, str]]:
        return [p for p in self.items if p["split"] == split]

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(p["kind"] for p in self.items).items()))


PROBLEM_KINDS = {
    "missing_image": "the image file does not exist",
    "bad_image": "the image file is truncated, corrupt or not an image",
    "image_too_large": "the image declares more pixels than --max-pixels (decompression bomb guard)",
    "unsafe_path": "the file name is absolute or climbs out of the image folder with '..'",
    "no_captions": "the entry has no (usable) caption; the image is skipped",
    "empty_caption": "a caption with no words; the caption is dropped, the image kept",
}


def safe_relative_path(*parts: str) -> str | None:
    """Join ``parts`` into a "/"-separated path inside the image folder, or None if it escapes.

    Absolute paths (``/x``, ``C:\\x``, ``\\\\server\\x``) and any ``..`` component are refused;
    ``.`` components and empty parts are dropped.
    """
    pieces: list[str] = []
    for part in parts:
        if not part:
            continue
        if PurePosixPath(part).is_absolute() or PureWindowsPath(part).is_absolute() or PureWindowsPath(part).drive:
            return None
        for piece in part.replace("\\", "/").split("/"):
            if piece == "..":
                return None
            if piece not in ("", "."):
                pieces.append(piece)
    return "/".join(pieces) if pieces else None


def _compact_sentence(obj: dict[str, Any]) -> dict[str, Any]:
    """json object_hook: drop a sentence's ``tokens`` when it has ``raw`` (we re-tokenize anyway).

    Karpathy's COCO file (~140 MB) holds every caption twice; dropping the copy while parsing
    roughly halves the memory the parse needs.
    """
    if "raw" in obj and "tokens" in obj and set(obj) <= {"raw", "tokens", "imgid", "sentid"}:
        del obj["tokens"]
    return obj


def read_karpathy(json_path: str | Path, *, restval: str = "train",
                  problems: ProblemLog | None = None) -> list[ImageRecord]:
    """Read a Karpathy-split JSON file into :class:`ImageRecord` s.

    ``restval`` says what to do with COCO's ``restval`` images: ``"train"`` merges them
    into train (the usual choice, ~113k training images), ``"drop"`` leaves them out.
    Unusable entries are skipped and recorded in ``problems`` (see the module docstring).
    """
    json_path = Path(json_path)
    if restval not in RESTVAL_CHOICES:
        raise ValueError(f"restval must be one of {RESTVAL_CHOICES}, got {restval!r}")
    problems = problems if problems is not None else ProblemLog()
    try:
        with open(json_path, encoding="utf-8") as f:
            data = json.load(f, object_hook=_compact_sentence)
    except FileNotFoundError:
        raise FileNotFoundError(f"{json_path}: Karpathy split file not found (download dataset_<name>.json "
                                "from Karpathy's caption_datasets.zip; see docs/datasets.md)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetFormatError(f"{json_path}: malformed JSON ({e})") from None
    if isinstance(data, dict) and "annotations" in data and "images" in data:
        raise DatasetFormatError(
            f"{json_path}: this is a COCO annotations file (captions_*.json), not Karpathy's split file; "
            "use dataset_coco.json from Karpathy's caption_datasets.zip (see docs/datasets.md)")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetFormatError(
            f"{json_path}: expected a Karpathy-split JSON object with an 'images' list "
            '({"images": [{"filename": ..., "split": ..., "sentences": [{"raw": ...}]}]})'
        )
    records = []
    images = data["images"]
    for i in range(len(images)):
        record = _record(images[i], i, json_path, restval, problems)
        images[i] = None  # free the parsed entry as we go
        if record is not None:
            records.append(record)
    return records


def _record(entry: Any, index: int, json_path: Path, restval: str, problems: ProblemLog) -> ImageRecord | None:
    where = f"{json_path}: images[{index}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("filename"), str) or "split" not in entry:
        raise DatasetFormatError(f"{where}: expected an object with 'filename' (a string), 'split' and "
                                 "'sentences'")
    split = entry["split"]
    if split == "restval":
        if restval == "drop":
            return None
        split = "train"
    if split not in SPLITS:
        raise DatasetFormatError(f"{where}: unknown split {split!r} (expected one of {SPLITS} or 'restval')")
    filepath = entry.get("filepath") or ""
    if not isinstance(filepath, str):
        raise DatasetFormatError(f"{where}: 'filepath' must be a string, got {filepath!r}")
    shown = f"{filepath.rstrip('/')}/{entry['filename']}" if filepath else entry["filename"]
    path = safe_relative_path(filepath, entry["filename"])
    if path is None:
        problems.add(split, shown, "unsafe_path", "file name escapes the image folder (absolute or '..'); "
                     "image skipped", source=json_path)
        return None
    image_id = entry.get("cocoid", entry.get("imgid", index))
    if not isinstance(image_id, int) or isinstance(image_id, bool):
        raise DatasetFormatError(f"{where}: image id (cocoid/imgid) must be an integer, got {image_id!r}")
    sentences = entry.get("sentences")
    if not sentences:
        problems.add(split, path, "no_captions", "entry has no sentences; image skipped", source=json_path)
        return None
    if not isinstance(sentences, list):
        raise DatasetFormatError(f"{where}: 'sentences' must be a list, got {type(sentences).__name__}")
    captions = []
    for sentence in sentences:
        if isinstance(sentence, dict) and isinstance(sentence.get("raw"), str):
            captions.append(_intern(tokenize(sentence["raw"])))
        elif isinstance(sentence, dict) and isinstance(sentence.get("tokens"), list):
            captions.append(_intern([t.lower() for t in sentence["tokens"] if isinstance(t, str) and t.strip()]))
        else:
            raise DatasetFormatError(f"{where}: each sentence needs 'raw' (a string) or 'tokens' (a list)")
    meta = {k: v for k, v in entry.items() if k not in STANDARD_KEYS}
    return ImageRecord(image_id=image_id, path=path, split=split, captions=captions, meta=meta)


def _intern(tokens: list[str]) -> list[str]:
    """Share one string object per distinct word (COCO: 6M tokens, 25k words)."""
    return [sys.intern(t) for t in tokens]
