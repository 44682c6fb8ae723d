"""Reader for Karpathy-split caption JSON (``dataset_coco.json``, ``dataset_flickr8k.json``,
``dataset_flickr30k.json``, and the built-in shapes dataset's ``dataset_shapes.json``), and
the types every dataset reader shares (:class:`ImageRecord`, :class:`ProblemLog`).

The file's layout, and the checks made on it, are :mod:`nic.captions_json`'s (the one reader
of Karpathy and COCO caption files, shared with evaluation).

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
* one entry is unusable (no sentences, a file name whose text escapes the image folder,
  :func:`nic.paths.relative_inside`): the entry is skipped and recorded in the
  :class:`ProblemLog` with the reason (which raises :class:`InputProblem` instead when the
  log is strict). Symbolic links are checked where the image is opened, in the decoding
  threads (:func:`preprocess.stores.decode_image`); empty and duplicate captions where the
  captions are selected (:func:`preprocess.build.select_captions`), for every dataset alike.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nic.captions_json import KARPATHY, CaptionedImage, CaptionsFormatError, load_captions_json
from nic.paths import relative_inside
from nic.vocab import tokenize

RESTVAL_CHOICES = ("train", "drop")


@dataclass
class ImageRecord:
    """One image and its captions, as every dataset reader returns them."""

    image_id: int
    path: str  # relative to the dataset's image folder, "/"-separated
    split: str
    captions: list[list[str]]  # tokenized
    meta: dict[str, Any] = field(default_factory=dict)


#: The input file is not in the expected layout (the shared reader's error, so both are caught alike).
DatasetFormatError = CaptionsFormatError


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

    def add(self, split: str, item: str, kind: str, reason: str, *, source: str | Path = "",
            fatal: bool = True) -> None:
        """Record one problem; when ``strict`` (and the problem is ``fatal``) raise :class:`InputProblem` instead."""
        if kind not in PROBLEM_KINDS:
            raise ValueError(f"unknown problem kind {kind!r}")
        if self.strict and fatal:
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
    "bad_image": "the image file is truncated, corrupt, not an image, or in a format nic does not read "
                 "(nic.images.ALLOWED_FORMATS, detected from the content whatever the name says)",
    "not_a_file": "the image path names a FIFO, a device, a socket or a folder, not a regular file",
    "image_too_large": "the image declares more pixels than --max-pixels (decompression bomb guard)",
    "unsafe_path": "the image path leads out of the image folder: by its text (absolute, or '..') or through a "
                   "symbolic link (a linked file or folder that resolves outside it)",
    "no_captions": "the entry has no (usable) caption; the image is skipped",
    "empty_caption": "a caption with no words; the caption is dropped, the image kept",
    "duplicate_caption": "a caption with the same words as an earlier caption of the same image; stored once "
                         "(fatal under --strict for custom captions files only)",
}


#: The text half of the one path-containment rule (:func:`nic.paths.relative_inside`), under its old name.
safe_relative_path = relative_inside


def read_karpathy(json_path: str | Path, *, restval: str = "train",
                  problems: ProblemLog | None = None) -> list[ImageRecord]:
    """Read a Karpathy-split JSON file into :class:`ImageRecord` s.

    ``restval`` says what to do with COCO's ``restval`` images: ``"train"`` merges them
    into train (the usual choice, ~113k training images), ``"drop"`` leaves them out.
    Unusable entries are skipped and recorded in ``problems`` (see the module docstring).
    The file is read and checked by :mod:`nic.captions_json`, the reader evaluation uses too.
    """
    json_path = Path(json_path)
    if restval not in RESTVAL_CHOICES:
        raise ValueError(f"restval must be one of {RESTVAL_CHOICES}, got {restval!r}")
    problems = problems if problems is not None else ProblemLog()
    file = load_captions_json(json_path, what="Karpathy split file", expect=KARPATHY,
                              not_found_hint=" (download dataset_<name>.json from Karpathy's caption_datasets.zip; "
                                             "see docs/datasets.md)")
    records = []
    for image in file.images(require=("filename", "split"), integer_ids=True):
        record = _record(image, json_path, restval, problems)
        if record is not None:
            records.append(record)
    return records


def _record(image: CaptionedImage, json_path: Path, restval: str, problems: ProblemLog) -> ImageRecord | None:
    if image.split == "restval" and restval == "drop":
        return None
    split = image.merged_split
    path = relative_inside(image.filepath, image.filename)
    if path is None:
        problems.add(split, image.file, "unsafe_path", "file name escapes the image folder (absolute or '..'); "
                     "image skipped", source=json_path)
        return None
    if not image.sentences:
        problems.add(split, path, "no_captions", "entry has no sentences; image skipped", source=json_path)
        return None
    captions = [_intern(tokenize(s.raw)) if s.raw is not None else _intern([t.lower() for t in s.tokens if t.strip()])
                for s in image.sentences]
    return ImageRecord(image_id=image.image_id, path=path, split=split, captions=captions, meta=image.meta)


def _intern(tokens: list[str]) -> list[str]:
    """Share one string object per distinct word (COCO: 6M tokens, 25k words)."""
    return [sys.intern(t) for t in tokens]
