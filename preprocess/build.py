"""Turn a dataset's records into a vocabulary and one HDF5 store per split.

The output folder (``store_dir``) holds::

    vocab.json                 the vocabulary (built from the train split's captions)
    train.h5 val.h5 test.h5    the stores (schema: nic.store)
    <split>.h5.progress.json   progress while a split is written (resume point), then its report
    report.json                what was written, truncated and skipped (with reasons), per split
    manifest.json              fingerprint of inputs + settings; written last: "complete"

Steps (:func:`build_stores`):

1. caption selection (:func:`select_captions`, for every dataset): empty captions and
   duplicates (the same words as an earlier caption of the image) are dropped (counted and
   reported); for the train split,
   captions longer than ``max_len`` are dropped when ``long_captions="drop"`` (counted;
   the default ``"truncate"`` keeps them, cut to ``max_len`` words), and at most
   ``captions_per_image`` captions are kept per image (0: all). Val/test keep every
   (distinct) caption so BLEU sees every reference. An image left without a caption is skipped (reported).
2. the images of every split are decoded into partial stores (resumable, :mod:`preprocess.stores`);
3. the vocabulary, from the train captions of the images really stored: words seen >=
   ``min_count`` times;
   ``vocab.json`` records these settings and the counts (words kept, tokens mapped to
   ``<unk>``, captions dropped/truncated).
4. captions are written into each store, which is then renamed into place
   (:mod:`preprocess.finish`). Changing only caption settings (``min_count``,
   ``max_len``, ...) re-captions finished stores without decoding their images again.

A fingerprint of the records, vocabulary and settings decides what can be reused: the
same inputs and settings find ``manifest.json`` and do nothing; an interrupted run
resumes (finished splits are kept, a half-written one continues where it stopped);
anything else rebuilds. Only one process may build a ``store_dir`` at a time (a lock file).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from nic.h5resume import h5_attr
from nic.images import DEFAULT_MAX_PIXELS
from nic.io import atomic_write_text
from nic.paths import open_lock
from nic.store import SPLITS, check_store, store_path
from nic.vocab import Vocabulary
from preprocess import stores
from preprocess.finish import finish_split, kept_indices, records_digest, resumable_store
from preprocess.karpathy import DatasetFormatError, ImageRecord, InputProblem, ProblemLog, read_karpathy
from preprocess.stores import decode_split, default_workers, images_fingerprint

MANIFEST_VERSION = 2
KARPATHY_DATASETS = ("coco", "flickr8k", "flickr30k")
DATASETS = ("shapes", *KARPATHY_DATASETS, "custom")
LONG_CAPTIONS = ("truncate", "drop")


def select_captions(records: Sequence[ImageRecord], problems: ProblemLog, *, max_len: int,
                    long_captions: str = "truncate", captions_per_image: int = 0, duplicates_fatal: bool = True
                    ) -> tuple[list[ImageRecord], dict[str, dict[str, int]]]:
    """Apply the caption rules (module docstring, step 1); return the records kept and counts per split.

    The one place where captions are dropped, so every count matches the problems listed.
    ``duplicates_fatal``: a duplicate caption stops a strict run (False for Karpathy's files,
    which have a few: Flickr8k's 19 in 40,000; reported and stored once all the same).
    """
    counts: dict[str, Counter[str]] = {s: Counter() for s in SPLITS}
    kept = []
    for r in records:
        c = counts[r.split]
        nonempty = [t for t in r.captions if t]
        n_empty = len(r.captions) - len(nonempty)
        c["captions_dropped_empty"] += n_empty
        good = list({tuple(t): t for t in nonempty}.values())  # each distinct caption once, in order
        n_dup = len(nonempty) - len(good)
        c["captions_dropped_duplicate"] += n_dup
        if n_empty and good:
            problems.add(r.split, r.path, "empty_caption", f"{n_empty} empty caption(s)")
        if n_dup:
            problems.add(r.split, r.path, "duplicate_caption", f"{n_dup} duplicate caption(s) (the same words as "
                         "another caption of this image); stored once", fatal=duplicates_fatal)
        reason = "no usable caption; image skipped" + (f" ({n_empty} empty caption(s))" if n_empty else "")
        if r.split == "train":
            if long_captions == "drop":
                short = [t for t in good if len(t) <= max_len]
                c["captions_dropped_long"] += len(good) - len(short)
                if good and not short:
                    reason = f"every caption is longer than max_len={max_len} (--long-captions drop); image skipped"
                good = short
            if captions_per_image and len(good) > captions_per_image:
                c["captions_over_limit"] += len(good) - captions_per_image
                good = good[:captions_per_image]
        if not good:
            problems.add(r.split, r.path, "no_captions", reason)
            continue
        kept.append(r if len(good) == len(r.captions) else replace(r, captions=good))
    return kept, {s: dict(c) for s, c in counts.items()}


def build_vocab(train: Sequence[ImageRecord], counts: dict[str, int], *, min_count: int, max_len: int,
                long_captions: str, captions_per_image: int) -> Vocabulary:
    """The vocabulary of the stored train captions, with the settings and counts recorded in it."""
    vocab = Vocabulary.build((t for r in train for t in r.captions), min_count=min_count)
    vocab.settings.update(max_len=max_len, long_captions=long_captions, captions_per_image=captions_per_image)
    vocab.stats["captions_truncated"] = sum(len(t) > max_len for r in train for t in r.captions)
    vocab.stats.update({k: counts.get(k, 0) for k in ("captions_dropped_long", "captions_dropped_empty",
                                                       "captions_dropped_duplicate", "captions_over_limit")})
    return vocab


def check_layout(records: Sequence[ImageRecord], image_dir: Path, source: str = "") -> None:
    """Fail at once when the image folder is wrong: none of a sample of the images exists."""
    if not records:
        return
    if not image_dir.is_dir():
        raise DatasetFormatError(f"image folder {image_dir} not found{' (images of ' + source + ')' if source else ''}"
                                 "; see docs/datasets.md for each dataset's layout")
    step = max(1, len(records) // 50)
    sample = records[::step][:50]
    if not any(_exists(image_dir / r.path) for r in sample):
        examples = ", ".join(str(image_dir / r.path) for r in sample[:3])
        raise DatasetFormatError(f"none of {len(sample)} sampled images exists (e.g. {examples}); check the image "
                                 "folder (--image-dir) against docs/datasets.md")


def _exists(path: Path) -> bool:
    """``path.exists()``, False where it cannot be looked at (a folder without permission, ...)."""
    try:
        return path.exists()
    except OSError:
        return False


@contextlib.contextmanager
def _locked(store_dir: Path) -> Iterator[None]:
    """One builder per store_dir: a second concurrent run fails instead of interleaving writes."""
    store_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open_lock(store_dir / ".lock") as fh:  # never truncates; refuses a symbolic link
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RuntimeError(f"{store_dir}: another preprocessing run is writing here; wait for it to end") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_stores(
    records: Sequence[ImageRecord],
    *,
    image_dir: str | Path,
    store_dir: str | Path,
    dataset: str,
    image_size: int = 224,
    min_count: int = 5,
    max_len: int = 20,
    long_captions: str = "truncate",
    captions_per_image: int = 0,
    workers: int = 1,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    strict: bool = False,
    problems: ProblemLog | None = None,
    flush_every: int | None = None,
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Build ``vocab.json`` and the per-split stores in ``store_dir``; return the report.

    ``problems`` carries what the dataset reader already skipped (it is merged into the
    report); ``workers`` decoding threads (0: one per core); ``strict`` makes the first
    bad input item fatal; ``flush_every`` images between progress checkpoints (None: the
    default of :mod:`preprocess.stores`); ``force`` rebuilds even when complete stores exist.
    """
    if long_captions not in LONG_CAPTIONS:
        raise ValueError(f"long_captions must be one of {LONG_CAPTIONS}, got {long_captions!r}")
    if captions_per_image < 0 or max_len < 1 or min_count < 1:
        raise ValueError("captions_per_image must be >= 0, max_len and min_count >= 1")
    store_dir, image_dir = Path(store_dir), Path(image_dir)
    workers = workers or default_workers()
    problems = problems if problems is not None else ProblemLog(strict=strict)
    if strict and problems.items:
        p = problems.items[0]
        raise InputProblem(f"{p['item']}: {p['reason']} (--strict: bad input is fatal)")
    problems.strict = strict
    selected, counts = select_captions(records, problems, max_len=max_len, long_captions=long_captions,
                                       captions_per_image=captions_per_image, duplicates_fatal=dataset == "custom")
    by_split = _by_split(selected, dataset)
    image_fps = {s: images_fingerprint(by_split[s], dataset=dataset, split=s, image_size=image_size,
                                       max_pixels=max_pixels) for s in SPLITS if by_split[s]}
    settings = {"dataset": dataset, "image_size": image_size, "max_len": max_len, "max_pixels": max_pixels,
                "min_count": min_count, "long_captions": long_captions, "captions_per_image": captions_per_image,
                "manifest_version": MANIFEST_VERSION}
    fingerprint = hashlib.sha256(json.dumps(
        {"settings": settings, "images": image_fps, "records": {s: records_digest(by_split[s]) for s in image_fps}},
        sort_keys=True).encode()).hexdigest()
    if not force and _manifest_matches(store_dir / "manifest.json", fingerprint, store_dir):
        return json.loads((store_dir / "report.json").read_text(encoding="utf-8"))
    with _locked(store_dir):
        (store_dir / "manifest.json").unlink(missing_ok=True)
        _clear_stale(store_dir, image_fps, force)
        check_layout(selected, image_dir)
        return _write_build(by_split, image_fps, counts, problems, settings, fingerprint, store_dir=store_dir,
                            image_dir=image_dir, workers=workers, strict=strict, progress=progress,
                            flush_every=flush_every or stores.FLUSH_EVERY)


def _by_split(selected: Sequence[ImageRecord], dataset: str) -> dict[str, list[ImageRecord]]:
    """The selected records of each split, in order; a dataset without training images is an error."""
    by_split: dict[str, list[ImageRecord]] = {s: [] for s in SPLITS}
    for r in selected:
        by_split[r.split].append(r)
    if not by_split["train"]:
        raise ValueError(f"{dataset}: no training images found; check the 'split' fields of the input")
    return by_split


def _clear_stale(store_dir: Path, image_fps: dict[str, str], force: bool) -> None:
    """Remove stores of other images (they must not sit beside the new vocabulary); all of them when forced."""
    for split in SPLITS:
        path = store_path(store_dir, split)
        if force:
            resumable_store(path).discard()
        if path.exists() and (force or h5_attr(path, "images_fingerprint") != image_fps.get(split)):
            path.unlink()


def _write_build(by_split: dict[str, list[ImageRecord]], image_fps: dict[str, str], counts: dict[str, dict[str, int]],
                 problems: ProblemLog, settings: dict[str, Any], fingerprint: str, *, store_dir: Path, image_dir: Path,
                 workers: int, strict: bool, progress: bool, flush_every: int) -> dict[str, Any]:
    """Decode every split, build the vocabulary, finish the stores, then write the report and the manifest."""
    dataset, image_size, max_len = settings["dataset"], settings["image_size"], settings["max_len"]
    states = {split: decode_split(
        by_split[split], store_path(store_dir, split), image_dir=image_dir, image_size=image_size,
        dataset=dataset, split=split, fingerprint=image_fps[split], workers=workers,
        max_pixels=settings["max_pixels"], strict=strict, flush_every=flush_every, progress=progress)
        for split in image_fps}
    # the vocabulary comes from the train captions that are really stored (images decoded)
    train = [by_split["train"][i] for i in kept_indices(states["train"])]
    vocab = build_vocab(train, counts["train"], min_count=settings["min_count"], max_len=max_len,
                        long_captions=settings["long_captions"], captions_per_image=settings["captions_per_image"])
    vocab.save(store_dir / "vocab.json")
    split_reports = {split: finish_split(by_split[split], store_path(store_dir, split), states[split],
                                         vocab=vocab, max_len=max_len, dataset=dataset, split=split,
                                         image_size=image_size) for split in image_fps}
    report = _report(settings, fingerprint, vocab, split_reports, counts, problems)
    atomic_write_text(store_dir / "report.json", json.dumps(report, indent=1, ensure_ascii=False))
    store_fps = {split: states[split]["store_fingerprint"] for split in image_fps}
    atomic_write_text(store_dir / "manifest.json", json.dumps({"fingerprint": fingerprint, "settings": settings,
                                                              "vocab_hash": vocab.hash(), "splits": store_fps},
                                                             indent=1))
    return report


def _report(settings: dict[str, Any], fingerprint: str, vocab: Vocabulary, split_reports: dict[str, dict[str, Any]],
            counts: dict[str, dict[str, int]], problems: ProblemLog) -> dict[str, Any]:
    """Merge the reader's/selection's problems with each split's decoding problems."""
    splits = {}
    everything: list[dict[str, str]] = []
    for split in SPLITS:
        early = [{k: p[k] for k in ("item", "reason", "kind")} for p in problems.for_split(split)]
        s = split_reports.get(split, {"split": split, "images": 0, "captions": 0, "captions_truncated": 0,
                                      "images_skipped": 0, "skipped": 0, "skipped_items": []})
        items = early + s["skipped_items"]
        images_skipped = s["images_skipped"] + sum(p["kind"] in ("no_captions", "unsafe_path") for p in early)
        splits[split] = {**s, **counts[split],
                         "images_skipped": images_skipped, "skipped": len(items), "skipped_items": items}
        everything += [{"split": split, **p} for p in items]
    everything += [p for p in problems.items if p["split"] not in SPLITS]  # e.g. rows with no split yet
    return {
        "settings": settings,
        "fingerprint": fingerprint,
        "vocab": {"size": len(vocab), **vocab.stats, "settings": vocab.settings},
        "splits": {s: r for s, r in splits.items() if r["images"] or r["skipped"]},
        "problems": {"total": len(everything), "by_kind": dict(sorted(Counter(p["kind"] for p in everything).items()))},
    }


def _manifest_matches(manifest: Path, fingerprint: str, store_dir: Path) -> bool:
    """True when a complete build of exactly these inputs and settings is in ``store_dir``."""
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        if data.get("fingerprint") != fingerprint or not (store_dir / "report.json").exists():
            return False
        for split, split_fp in data["splits"].items():
            path = store_path(store_dir, split)
            check_store(path)
            if h5_attr(path, "fingerprint") != split_fp:
                return False
    except (OSError, ValueError, KeyError, AttributeError):
        return False
    return True


def summarize(report: dict[str, Any], report_file: str | Path | None = None) -> str:
    """A few human-readable lines about a build report."""
    v = report["vocab"]
    lines = [f"vocabulary: {v['size']} tokens ({v['words_kept']} of {v['distinct_words']} distinct words seen >= "
             f"{v['settings'].get('min_count', '?')} times; {v['tokens_mapped_to_unk']} train tokens -> <unk>)"]
    for split, s in report["splits"].items():
        extra = ""
        if s.get("captions_dropped_long"):
            extra += f", {s['captions_dropped_long']} too long dropped"
        if s.get("captions_dropped_duplicate"):
            extra += f", {s['captions_dropped_duplicate']} duplicates dropped"
        if s.get("captions_over_limit"):
            extra += f", {s['captions_over_limit']} over the per-image limit"
        lines.append(f"{split:5s}: {s['images']} images, {s['captions']} captions "
                     f"({s['captions_truncated']} truncated{extra}), {s['images_skipped']} image(s) skipped")
    p = report["problems"]
    if p["total"]:
        kinds = ", ".join(f"{n} {k}" for k, n in p["by_kind"].items())
        where = f"; each is listed with its reason in {report_file}" if report_file else ""
        lines.append(f"problems: {p['total']} skipped ({kinds}){where}")
    else:
        lines.append("problems: none")
    return "\n".join(lines)


# --------------------------------------------------------------------------- entry
def read_records(data_cfg: Any, problems: ProblemLog, *, progress: bool = True) -> tuple[list[ImageRecord], Path]:
    """Read the dataset a DataConfig names; return its records and image folder.

    ``custom`` reads a captions file (:mod:`preprocess.custom`); every other name (coco,
    flickr8k, flickr30k, shapes, or your own label) a Karpathy-split JSON file.
    """
    root = Path(data_cfg.root)
    dataset = data_cfg.dataset  # any name but custom/shapes: a Karpathy-split JSON under that label
    image_dir = root / data_cfg.image_dir if data_cfg.image_dir else root
    if dataset == "custom":
        from preprocess.custom import read_custom

        if not data_cfg.captions_file:
            raise ValueError("dataset 'custom' needs a captions file: --captions FILE (data.captions_file), a CSV or "
                             "JSONL of image,caption[,split] rows; see docs/datasets.md")
        return read_custom(_under(root, data_cfg.captions_file), val_fraction=data_cfg.val_fraction,
                           test_fraction=data_cfg.test_fraction, seed=data_cfg.split_seed, problems=problems), image_dir
    json_path = _under(root, data_cfg.karpathy_json or f"dataset_{dataset}.json")
    if dataset == "shapes" and not json_path.exists():
        from preprocess.shapes import generate_shapes

        generate_shapes(root, progress=progress)
    return read_karpathy(json_path, restval=data_cfg.restval, problems=problems), image_dir


def _under(root: Path, name: str) -> Path:
    return Path(name) if Path(name).is_absolute() else root / name


def _input_key(data_cfg: Any) -> dict[str, Any]:
    """Cheap identity of a DataConfig's inputs (file stats + settings), for the fast "nothing to do"."""
    root = Path(data_cfg.root)
    if data_cfg.dataset == "custom":
        source = _under(root, data_cfg.captions_file or "")
    else:
        source = _under(root, data_cfg.karpathy_json or f"dataset_{data_cfg.dataset}.json")
    st = source.stat()
    image_dir = root / data_cfg.image_dir if data_cfg.image_dir else root
    paths = ("root", "karpathy_json", "captions_file", "image_dir", "store_dir")  # compared resolved, below
    fields = {k: v for k, v in vars(data_cfg).items()
              if k not in (*paths, "num_workers", "preprocess_workers", "strict")}
    return {"source": str(source.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "image_dir": str(image_dir.resolve()), "store_dir": str(data_cfg.resolved_store_dir().resolve()),
            "config": fields}


def prepare(data_cfg: Any, *, progress: bool = True, report: str | Path | None = None, force: bool = False,
            flush_every: int | None = None) -> Path:
    """Make sure the stores a :class:`nic.config.DataConfig` names exist; return the store dir.

    For the built-in ``shapes`` dataset the images and JSON are generated first when missing.
    ``report``: also copy the build report (``<store_dir>/report.json``) there; ``force``:
    rebuild even if complete; ``flush_every``: images between progress checkpoints.
    """
    store_dir = data_cfg.resolved_store_dir()
    key = None
    with contextlib.suppress(OSError):  # e.g. shapes not generated yet
        key = _input_key(data_cfg)
    fast = None if force else _fast_path(store_dir, key)
    if fast is not None:
        _finish(fast, store_dir, report, progress)
        return store_dir
    problems = ProblemLog(strict=data_cfg.strict)
    records, image_dir = read_records(data_cfg, problems, progress=progress)
    result = build_stores(
        records, image_dir=image_dir, store_dir=store_dir, dataset=data_cfg.dataset, image_size=data_cfg.image_size,
        min_count=data_cfg.min_count, max_len=data_cfg.max_len, long_captions=data_cfg.long_captions,
        captions_per_image=data_cfg.captions_per_image, workers=data_cfg.preprocess_workers,
        max_pixels=data_cfg.max_pixels or None, strict=data_cfg.strict, problems=problems, force=force,
        flush_every=flush_every, progress=progress)
    with contextlib.suppress(OSError, ValueError):
        key = key or _input_key(data_cfg)
        data = json.loads((store_dir / "manifest.json").read_text(encoding="utf-8"))
        if data.get("fingerprint") == result["fingerprint"]:
            data["inputs"] = key
            atomic_write_text(store_dir / "manifest.json", json.dumps(data, indent=1))
    _finish(result, store_dir, report, progress)
    return store_dir


def _fast_path(store_dir: Path, key: dict[str, Any] | None) -> dict[str, Any] | None:
    """The saved report when the manifest records exactly these input files and settings."""
    if key is None:
        return None
    try:
        data = json.loads((store_dir / "manifest.json").read_text(encoding="utf-8"))
        if data.get("inputs") != json.loads(json.dumps(key)) or not _manifest_matches(
                store_dir / "manifest.json", data["fingerprint"], store_dir):
            return None
        return json.loads((store_dir / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError):
        return None


def _finish(report: dict[str, Any], store_dir: Path, copy_to: str | Path | None, progress: bool) -> None:
    report_file = store_dir / "report.json"
    if copy_to is not None and Path(copy_to).resolve() != report_file.resolve():
        Path(copy_to).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(report_file, copy_to)
        report_file = Path(copy_to)
    if progress:
        print(summarize(report, report_file))
