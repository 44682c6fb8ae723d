"""The ONE reader of caption JSON files: Karpathy split files and COCO captions files.

Both preprocessing (building stores) and evaluation (reference captions) read these files
through this module, so the layout, the image-id rule and the error messages are the same
everywhere.

**Karpathy split file** (``dataset_coco.json``, ``dataset_flickr8k.json``,
``dataset_flickr30k.json``, the shapes generator's ``dataset_shapes.json``)::

    {"dataset": "coco",
     "images": [{"filepath": "val2014",              # optional (COCO only): sub-folder
                 "filename": "COCO_val2014_000000391895.jpg",
                 "split": "train" | "val" | "test" | "restval",
                 "imgid": 0, "cocoid": 391895,        # cocoid only for COCO
                 "sentences": [{"raw": "A man ...", "tokens": ["a", "man", ...]}, ...]},
                ...]}

The image id is ``cocoid`` when present, else ``imgid``, else the entry's position. A
sentence is its ``raw`` text, or its ``tokens`` where ``raw`` is absent. Keys other than
:data:`STANDARD_KEYS` (e.g. the shapes generator's ``objects``) are per-image metadata.
COCO's ``restval`` images belong to train when merged (:attr:`CaptionedImage.merged_split`).

**COCO captions file** (``captions_val2014.json``)::

    {"images": [{"id": 391895, "file_name": "COCO_val2014_000000391895.jpg"}, ...],
     "annotations": [{"image_id": 391895, "caption": "A man riding a bike."}, ...]}

It holds one split and has no split field. Images are those with at least one annotation,
in order of their first annotation; ``file_name`` comes from ``images``.

Usage::

    file = load_captions_json(path, what="references file")   # detects the layout
    for image in file.images():                                 # validated, one entry at a time
        image.image_id, image.split, image.file, image.texts, image.meta

Malformed input raises :class:`CaptionsFormatError` (a ``ValueError``) naming the file and
the field, e.g. ``dataset.json: images[3].sentences[0] needs 'raw' (a string) or 'tokens'
(a list of strings)``; a missing file raises ``FileNotFoundError`` naming it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nic.paths import NotRegularFile, open_regular
from nic.store import SPLITS

__all__ = ["COCO", "KARPATHY", "KARPATHY_SPLITS", "SPLITS", "STANDARD_KEYS", "CaptionedImage", "CaptionsFile",
           "CaptionsFormatError", "Sentence", "load_captions_json", "load_json"]

KARPATHY = "karpathy"
COCO = "coco"
KARPATHY_SPLITS = (*SPLITS, "restval")
#: Keys of a Karpathy entry that are not per-image metadata.
STANDARD_KEYS = frozenset({"filepath", "filename", "split", "imgid", "cocoid", "sentids", "sentences", "id"})

ImageId = int | str

_KARPATHY_EXAMPLE = '{"images": [{"filename", "split", "imgid"/"cocoid", "sentences": [{"raw": ...}]}]}'
_COCO_EXAMPLE = '{"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}'
_FIELD_DESCRIPTIONS = {"filename": "'filename' (a string)", "split": "'split'", "sentences": "'sentences'"}


class CaptionsFormatError(ValueError):
    """A caption file is not in the expected layout; the message names the file and the field."""


@dataclass(frozen=True)
class Sentence:
    """One caption as written: its ``raw`` text, or (only where ``raw`` is absent) its ``tokens``."""

    raw: str | None
    tokens: tuple[str, ...] | None = None

    @property
    def text(self) -> str:
        """The raw text; the tokens joined by spaces where there is none."""
        return self.raw if self.raw is not None else " ".join(self.tokens or ())


@dataclass
class CaptionedImage:
    """One image of a caption file and its captions, in file order."""

    index: int  # Karpathy: position in images[]; COCO: position of the image's first annotation
    image_id: ImageId
    sentences: list[Sentence]
    split: str | None = None  # Karpathy: as written ("restval" kept), None when absent; COCO: None
    filename: str | None = None
    filepath: str = ""  # Karpathy's sub-folder ("" when absent)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def texts(self) -> list[str]:
        return [s.text for s in self.sentences]

    @property
    def file(self) -> str | None:
        """``filepath/filename`` as written (not checked for safety), or None without a file name."""
        if self.filename is None:
            return None
        return f"{self.filepath.rstrip('/')}/{self.filename}" if self.filepath else self.filename

    @property
    def merged_split(self) -> str | None:
        """The split with COCO's ``restval`` merged into ``train``."""
        return "train" if self.split == "restval" else self.split


# --------------------------------------------------------------------------- loading


def _compact_sentence(obj: dict[str, Any]) -> dict[str, Any]:
    """json object_hook: drop a sentence's ``tokens`` when it has ``raw`` (readers use ``raw`` then).

    Karpathy's COCO file (~140 MB) holds every caption twice; dropping the copy while parsing
    roughly halves the memory the parse needs.
    """
    if "raw" in obj and "tokens" in obj and set(obj) <= {"raw", "tokens", "imgid", "sentid"}:
        del obj["tokens"]
    return obj


def load_json(path: str | Path, what: str = "file", *, not_found_hint: str = "") -> Any:
    """Parse a JSON file; errors name the file (``what`` says what it should have been)."""
    path = Path(path)
    try:
        with open_regular(path) as raw, io.TextIOWrapper(raw, encoding="utf-8") as f:  # never waits on a FIFO
            return json.load(f, object_hook=_compact_sentence)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: {what} not found{not_found_hint}") from None
    except NotRegularFile as e:
        raise CaptionsFormatError(f"{e}; expected a {what}") from None
    except json.JSONDecodeError as e:
        raise CaptionsFormatError(f"{path}: malformed JSON (not valid JSON at line {e.lineno}, column {e.colno}: "
                                  f"{e.msg})") from None
    except UnicodeDecodeError as e:
        raise CaptionsFormatError(f"{path}: malformed JSON (not UTF-8 text: {e}); save it as UTF-8") from None
    except RecursionError:
        raise CaptionsFormatError(f"{path}: malformed JSON (nested too deeply to be a {what})") from None
    except ValueError as e:  # e.g. an integer of over 4300 digits
        raise CaptionsFormatError(f"{path}: malformed JSON ({e})") from None


def _layout(data: Any) -> str | None:
    if isinstance(data, dict) and "annotations" in data:
        return COCO
    if isinstance(data, dict) and isinstance(data.get("images"), list):
        return KARPATHY
    return None


def load_captions_json(path: str | Path, *, what: str = "caption file", expect: str | None = None,
                       not_found_hint: str = "") -> CaptionsFile:
    """Load a Karpathy split file or a COCO captions file, detecting which by content.

    Args:
        what: what the file is to the caller ("references file"), for the messages.
        expect: :data:`KARPATHY` or :data:`COCO` to accept only that layout.
        not_found_hint: appended to the not-found message (where to get the file).

    Raises:
        FileNotFoundError: no such file.
        CaptionsFormatError: not UTF-8 JSON, neither layout, or not the ``expect``-ed one.
    """
    path = Path(path)
    data = load_json(path, what, not_found_hint=not_found_hint)
    layout = _layout(data)
    if expect == KARPATHY and layout == COCO:
        raise CaptionsFormatError(
            f"{path}: this is a COCO annotations file (captions_*.json), not Karpathy's split file; "
            "use dataset_coco.json from Karpathy's caption_datasets.zip (see docs/datasets.md)")
    if expect == COCO and layout == KARPATHY:
        raise CaptionsFormatError(f"{path}: this is a Karpathy split file, not a COCO captions file {_COCO_EXAMPLE}")
    if layout is None:
        expected = {KARPATHY: f"a Karpathy split file, an object with an 'images' list {_KARPATHY_EXAMPLE}",
                    COCO: f"a COCO captions file {_COCO_EXAMPLE}"}
        wanted = expected[expect] if expect else f"{expected[KARPATHY]} or {expected[COCO]}"
        raise CaptionsFormatError(f"{path}: not a {what}: expected {wanted}")
    return CaptionsFile(path, layout, data)


# --------------------------------------------------------------------------- validating


def _image_id(value: Any, where: str, integer_ids: bool) -> ImageId:
    if isinstance(value, bool) or not isinstance(value, int if integer_ids else (int, str)):
        kind = "an integer" if integer_ids else "an integer or a string"
        raise CaptionsFormatError(f"{where} must be {kind}, got {value!r}")
    return value


def _sentence(value: Any, where: str) -> Sentence:
    if isinstance(value, dict) and isinstance(value.get("raw"), str):
        return Sentence(value["raw"])
    tokens = value.get("tokens") if isinstance(value, dict) else None
    if isinstance(tokens, list) and all(isinstance(t, str) for t in tokens):
        return Sentence(None, tuple(tokens))
    raise CaptionsFormatError(f"{where} needs 'raw' (a string) or 'tokens' (a list of strings), got {value!r}"[:300])


def _optional_string(entry: dict[str, Any], key: str, where: str) -> str | None:
    value = entry.get(key)
    if value is not None and not isinstance(value, str):
        raise CaptionsFormatError(f"{where}.{key} must be a string, got {value!r}")
    return value


def _karpathy_image(entry: Any, index: int, where: str, require: Sequence[str], integer_ids: bool
                    ) -> CaptionedImage:
    if not isinstance(entry, dict):
        raise CaptionsFormatError(f"{where} must be an object, got {type(entry).__name__}")
    missing = [k for k in require if k not in entry]
    if missing:
        wanted = " and ".join(_FIELD_DESCRIPTIONS.get(k, repr(k)) for k in require)
        raise CaptionsFormatError(f"{where}: expected an object with {wanted} (no {missing[0]!r})")
    id_key = "cocoid" if "cocoid" in entry else "imgid"
    image_id = _image_id(entry.get(id_key, index), f"{where}.{id_key}", integer_ids)
    split = entry.get("split")
    if split is not None and split not in KARPATHY_SPLITS:
        raise CaptionsFormatError(f"{where}: unknown split {split!r} (expected one of {', '.join(KARPATHY_SPLITS)})")
    filename = _optional_string(entry, "filename", where)
    filepath = _optional_string(entry, "filepath", where) or ""
    sentences = entry.get("sentences")
    if sentences is None:
        sentences = []
    if not isinstance(sentences, list):
        raise CaptionsFormatError(f"{where}.sentences must be a list, got {type(sentences).__name__}")
    parsed = [_sentence(s, f"{where}.sentences[{j}]") for j, s in enumerate(sentences)]
    meta = {k: v for k, v in entry.items() if k not in STANDARD_KEYS}
    return CaptionedImage(index, image_id, parsed, split, filename, filepath, meta)


@dataclass
class CaptionsFile:
    """A loaded caption file (see :func:`load_captions_json`)."""

    path: Path
    layout: str  # KARPATHY or COCO
    data: dict[str, Any]
    _consumed: bool = field(default=False, repr=False)  # a Karpathy file's entries were released

    def images(self, *, require: Sequence[str] = (), integer_ids: bool = False) -> Iterator[CaptionedImage]:
        """Validate and yield the file's images, in file order.

        Args:
            require: Karpathy fields every entry must have (e.g. ``("filename", "split")``);
                absent optional fields read as None / ``""`` / no sentences.
            integer_ids: image ids must be integers (otherwise integers or strings).

        A Karpathy file is read one entry at a time and each parsed entry is released as it is
        read (Karpathy's COCO file is ~140 MB), so the images can be iterated once.
        """
        if self.layout == COCO:
            yield from self._coco_images(integer_ids)
            return
        if self._consumed:
            raise RuntimeError(f"{self.path}: images() reads a Karpathy file once (load it again)")
        self._consumed = True
        entries = self.data["images"]
        for index in range(len(entries)):
            entry, entries[index] = entries[index], None  # release the parsed entry as we go
            yield _karpathy_image(entry, index, f"{self.path}: images[{index}]", require, integer_ids)

    def _coco_images(self, integer_ids: bool) -> list[CaptionedImage]:
        annotations = self.data["annotations"]
        if not isinstance(annotations, list):
            raise CaptionsFormatError(f"{self.path}: 'annotations' must be a list, got {type(annotations).__name__}")
        by_id: dict[ImageId, CaptionedImage] = {}
        for i, ann in enumerate(annotations):
            where = f"{self.path}: annotations[{i}]"
            if not isinstance(ann, dict):
                raise CaptionsFormatError(f"{where} must be an object, got {type(ann).__name__}")
            for key in ("image_id", "caption"):
                if key not in ann:
                    raise CaptionsFormatError(f"{where} has no {key!r} field (keys: {sorted(ann)})")
            image_id = _image_id(ann["image_id"], f"{where}.image_id", integer_ids)
            if not isinstance(ann["caption"], str):
                raise CaptionsFormatError(f"{where}.caption must be a string, got {ann['caption']!r}")
            image = by_id.setdefault(image_id, CaptionedImage(i, image_id, []))
            image.sentences.append(Sentence(ann["caption"]))
        images = self.data.get("images", [])
        if not isinstance(images, list):
            raise CaptionsFormatError(f"{self.path}: 'images' must be a list, got {type(images).__name__}")
        for i, entry in enumerate(images):
            if not isinstance(entry, dict) or "id" not in entry:
                raise CaptionsFormatError(f"{self.path}: images[{i}] must be an object with an 'id' field")
            image_id = _image_id(entry["id"], f"{self.path}: images[{i}].id", integer_ids)
            if image_id in by_id and isinstance(entry.get("file_name"), str):
                by_id[image_id].filename = entry["file_name"]
        return list(by_id.values())
