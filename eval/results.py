"""Caption results files and reference files: reading, validating, matching, writing.

**Results** are in the COCO results format, what the COCO evaluation server takes and most
captioning code writes (one caption per image)::

    [{"image_id": 391895, "caption": "a man riding a bike down a street"}, ...]

**References** are read by :mod:`nic.captions_json` (the reader preprocessing uses too) from either

* a Karpathy split file (``dataset_coco.json``, ``dataset_flickr8k.json``,
  ``dataset_flickr30k.json``, ``data/shapes/dataset_shapes.json``)::

      {"images": [{"cocoid" | "imgid": 0, "split": "test", "filepath": "val2014", "filename": "...",
                   "sentences": [{"raw": "A man riding a bike."}, ...]}, ...]}

  image id = ``cocoid`` when present, else ``imgid``, else the entry's position (as
  :mod:`preprocess.karpathy` numbers store images, so our own results files match);
  references = ``sentences[].raw`` (``tokens`` joined by spaces where ``raw`` is absent);
  ``split`` restricts them to one split (``train`` includes ``restval``, as in preprocessing).
  Other keys of an entry (the shapes generator's ``objects``) are kept as metadata.
* a COCO captions file (``captions_val2014.json``)::

      {"images": [{"id": 391895, "file_name": "COCO_val2014_000000391895.jpg"}, ...],
       "annotations": [{"image_id": 391895, "caption": "A man riding a bike."}, ...]}

Malformed input raises :class:`InputFormatError` naming the file and the field. Ids are
matched as they are written (an int id never matches the string ``"1"``); :func:`match`
lists result ids that have no references and reference ids that have no result, so
nothing is dropped without being counted.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nic.captions_json import COCO, SPLITS, CaptionsFile, CaptionsFormatError, load_captions_json, load_json
from nic.io import atomic_write_text

__all__ = ["InputFormatError", "Matching", "References", "match", "read_references", "read_results",
           "write_results"]

ImageId = Hashable

#: A results or references file is not in the expected format; the message names the file and field.
#: The same class as the caption-file reader's error, so every malformed input is caught alike.
InputFormatError = CaptionsFormatError


@dataclass
class References:
    """Reference captions per image id, as read from a file (or a store).

    Attributes:
        source: the file they came from.
        format: ``"karpathy"``, ``"coco"`` or ``"store"``.
        captions: image id -> raw reference captions (file order; ids in file order).
        files: image id -> image path relative to the dataset's image folder (when known).
        meta: image id -> extra per-image keys (e.g. the shapes generator's ``objects``).
        train_captions: the training split's captions (Karpathy files with a split selected), for novelty.
        split: the split selected, if any.
    """

    source: str
    format: str
    captions: dict[ImageId, list[str]]
    files: dict[ImageId, str] = field(default_factory=dict)
    meta: dict[ImageId, dict[str, Any]] = field(default_factory=dict)
    train_captions: list[str] | None = None
    split: str | None = None

    @property
    def num_captions(self) -> int:
        return sum(len(c) for c in self.captions.values())


@dataclass
class Matching:
    """Which image ids can be scored: those with both a result and references."""

    ids: list[ImageId]  # in the references' order
    results_without_references: list[ImageId]  # in the results' order
    references_without_results: list[ImageId]  # in the references' order
    # filled when the references are tokenized (eval.scoring.drop_empty_references): images of ``ids``
    # whose every reference is empty after tokenization (not scored), and empty reference captions dropped
    references_empty: list[ImageId] = field(default_factory=list)
    empty_reference_captions: int = 0

    def as_dict(self, limit: int = 100) -> dict[str, Any]:
        """Counts and (up to ``limit`` of) the ids, JSON-ready."""
        def listing(ids: list[ImageId]) -> dict[str, Any]:
            return {"count": len(ids), "ids": list(ids[:limit]), "truncated": len(ids) > limit}

        return {"scored": len(self.ids) - len(self.references_empty),
                "results_without_references": listing(self.results_without_references),
                "references_without_results": listing(self.references_without_results),
                "references_empty": listing(self.references_empty),
                "empty_reference_captions": self.empty_reference_captions}


# --------------------------------------------------------------------------- reading


def _check_id(value: Any, where: str) -> ImageId:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InputFormatError(f"{where} must be an integer or a string, got {value!r}")
    return value


def _some(ids: Sequence[ImageId], limit: int = 10) -> str:
    shown = ", ".join(repr(i) for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def read_results(path: str | Path) -> dict[ImageId, str]:
    """Read a COCO-format results file: image id -> caption (file order).

    Raises:
        InputFormatError: not JSON, not a list of ``{"image_id", "caption"}`` objects, an id that is not an
            int or string, a caption that is not a string, or the same image id twice (the toolkit
            scores exactly one caption per image).
    """
    path = Path(path)
    data = load_json(path, "results file")
    if not isinstance(data, list):
        hint = (" (this looks like a references file; pass it as --references)"
                if isinstance(data, dict) and ("annotations" in data or "images" in data) else "")
        raise InputFormatError(f'{path}: expected a list of {{"image_id": ..., "caption": ...}} objects '
                               f"(COCO results format), got a JSON {type(data).__name__}{hint}")
    results: dict[ImageId, str] = {}
    duplicates: list[ImageId] = []
    for i, entry in enumerate(data):
        where = f"{path}: [{i}]"
        if not isinstance(entry, dict):
            raise InputFormatError(f'{where} must be an object {{"image_id": ..., "caption": ...}}, '
                                   f"got {type(entry).__name__}")
        for key in ("image_id", "caption"):
            if key not in entry:
                raise InputFormatError(f"{where} has no {key!r} field (keys: {sorted(entry)})")
        image_id = _check_id(entry["image_id"], f"{where}.image_id")
        if not isinstance(entry["caption"], str):
            raise InputFormatError(f"{where}.caption must be a string, got {entry['caption']!r}")
        if image_id in results:
            duplicates.append(image_id)
            continue
        results[image_id] = entry["caption"]
    if duplicates:
        raise InputFormatError(f"{path}: image_id given more than once ({len(duplicates)} duplicate(s): "
                               f"{_some(duplicates)}); a results file has one caption per image")
    return results


def read_references(path: str | Path, *, split: str | None = None,
                    ignore_split_for_coco: bool = False) -> References:
    """Read reference captions from a Karpathy split file or a COCO captions file (detected by content).

    The file is read by :func:`nic.captions_json.load_captions_json`, the reader preprocessing uses too.

    Args:
        path: the JSON file.
        split: Karpathy files only: keep the images of this split (``train`` includes ``restval``).
        ignore_split_for_coco: read a COCO captions file whole even when ``split`` is given (instead
            of raising), as when the split only says which store was captioned.

    Raises:
        InputFormatError: malformed file (the message names the file and field), or ``split`` given
            for a COCO captions file (which is one split already).
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    file = load_captions_json(path, what="references file")
    if file.layout == COCO:
        if split is not None and not ignore_split_for_coco:
            raise InputFormatError(f"{file.path}: a COCO captions file holds one split already and has no 'split' "
                                   f"field; leave out --split {split} (or use Karpathy's dataset_*.json)")
        return _coco_references(file)
    return _karpathy_references(file, split)


def _karpathy_references(file: CaptionsFile, split: str | None) -> References:
    captions: dict[ImageId, list[str]] = {}
    files: dict[ImageId, str] = {}
    meta: dict[ImageId, dict[str, Any]] = {}
    train: list[str] | None = [] if split not in (None, "train") else None
    for image in file.images():
        where = f"{file.path}: images[{image.index}]"
        if split is not None and image.split is None:
            raise InputFormatError(f"{where} has no 'split' field, so --split {split} cannot select it")
        if train is not None and image.merged_split == "train":
            train.extend(image.texts)
        if split is not None and image.merged_split != split:
            continue
        if image.image_id in captions:
            raise InputFormatError(f"{where}: image id {image.image_id!r} appears twice in the file")
        captions[image.image_id] = image.texts
        if image.file is not None:
            files[image.image_id] = image.file
        if image.meta:
            meta[image.image_id] = image.meta
    return References(str(file.path), "karpathy", captions, files, meta, train_captions=train, split=split)


def _coco_references(file: CaptionsFile) -> References:
    captions: dict[ImageId, list[str]] = {}
    files: dict[ImageId, str] = {}
    for image in file.images():
        captions[image.image_id] = image.texts
        if image.file is not None:
            files[image.image_id] = image.file
    return References(str(file.path), "coco", captions, files)


# --------------------------------------------------------------------------- matching and writing


def match(results: Mapping[ImageId, Any], references: Mapping[ImageId, Sequence[str]]) -> Matching:
    """The ids that have both a result and at least one reference; the others, listed on each side.

    An id whose reference list is empty counts as having no references.
    """
    scored = [k for k, refs in references.items() if refs and k in results]
    without_refs = [k for k in results if not references.get(k)]
    without_results = [k for k, refs in references.items() if refs and k not in results]
    return Matching(scored, without_refs, without_results)


def id_type_hint(results: Mapping[ImageId, Any], references: Mapping[ImageId, Any]) -> str:
    """A hint when nothing matched because one side has string ids and the other integer ids."""
    res_types = {type(k) for k in results}
    ref_types = {type(k) for k in references}
    if res_types and ref_types and res_types.isdisjoint(ref_types):
        names = lambda ts: "/".join(sorted(t.__name__ for t in ts))  # noqa: E731
        return f" (the results' image ids are {names(res_types)}, the references' {names(ref_types)})"
    return ""


def write_results(path: str | Path, image_ids: Sequence[ImageId], captions: Sequence[str]) -> Path:
    """Write captions in the COCO results format (atomically); returns the path."""
    if len(image_ids) != len(captions):
        raise ValueError(f"{len(image_ids)} image ids but {len(captions)} captions")
    rows = [{"image_id": i, "caption": c} for i, c in zip(image_ids, captions)]
    atomic_write_text(path, json.dumps(rows, indent=0, ensure_ascii=False) + "\n")
    return Path(path)
