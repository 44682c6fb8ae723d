"""Turn a dataset's records into a vocabulary and one HDF5 store per split.

The output folder (``store_dir``) holds::

    vocab.json        the vocabulary (built from the train split only)
    train.h5 val.h5 test.h5
    report.json       what was written, truncated and skipped (with reasons), per split
    manifest.json     the settings used; written last, so its presence means "complete"

Re-running with the same settings finds the manifest and does nothing; with different
settings (or after an interrupted run, which leaves no manifest) it rebuilds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nic.io import atomic_write_text
from nic.store import store_path
from nic.vocab import Vocabulary
from preprocess.karpathy import SPLITS, ImageRecord, read_karpathy

MANIFEST_VERSION = 1


def build_stores(
    records: Sequence[ImageRecord],
    *,
    image_dir: str | Path,
    store_dir: str | Path,
    dataset: str,
    image_size: int = 224,
    min_count: int = 5,
    max_len: int = 20,
    progress: bool = True,
) -> dict[str, Any]:
    """Build ``vocab.json`` and the per-split stores in ``store_dir``; return the report."""
    store_dir = Path(store_dir)
    settings = {"dataset": dataset, "image_size": image_size, "min_count": min_count, "max_len": max_len,
                "num_records": len(records), "manifest_version": MANIFEST_VERSION}
    manifest = store_dir / "manifest.json"
    if manifest.exists() and json.loads(manifest.read_text()).get("settings") == settings:
        return json.loads((store_dir / "report.json").read_text())
    manifest.unlink(missing_ok=True)

    by_split: dict[str, list[ImageRecord]] = {s: [] for s in SPLITS}
    for r in records:
        by_split[r.split].append(r)
    if not by_split["train"]:
        raise ValueError(f"{dataset}: no training images found; check the 'split' fields of the input")

    vocab = Vocabulary.build((c for r in by_split["train"] for c in r.captions if c), min_count=min_count)
    vocab.settings.update(max_len=max_len)
    vocab.save(store_dir / "vocab.json")

    report: dict[str, Any] = {"settings": settings, "vocab": {"size": len(vocab), **vocab.stats}, "splits": {}}
    for split in SPLITS:
        if by_split[split]:
            report["splits"][split] = write_split_checked(
                by_split[split], store_path(store_dir, split), vocab=vocab, image_dir=image_dir,
                image_size=image_size, max_len=max_len, dataset=dataset, split=split, progress=progress)
    atomic_write_text(store_dir / "report.json", json.dumps(report, indent=1))
    atomic_write_text(manifest, json.dumps({"settings": settings, "vocab_hash": vocab.hash()}, indent=1))
    return report


def write_split_checked(records: Sequence[ImageRecord], path: Path, **kwargs: Any) -> dict[str, Any]:
    from preprocess.stores import write_split

    result = write_split(records, path, **kwargs)
    if result["images"] == 0:
        raise ValueError(f"{path}: every image of split {kwargs['split']!r} was skipped; see the reasons: "
                         f"{result['skipped_items'][:3]}")
    return result


def summarize(report: dict[str, Any]) -> str:
    """A few human-readable lines about a build report."""
    v = report["vocab"]
    lines = [f"vocabulary: {v['size']} tokens ({v['words_kept']} words kept of {v['distinct_words']}, "
             f"{v['tokens_mapped_to_unk']} train tokens -> <unk>)"]
    for split, s in report["splits"].items():
        lines.append(f"{split:5s}: {s['images']} images, {s['captions']} captions "
                     f"({s['captions_truncated']} truncated), {s['skipped']} problem(s) skipped")
    return "\n".join(lines)


def prepare(data_cfg: Any, *, progress: bool = True) -> Path:
    """Make sure the stores a :class:`nic.config.DataConfig` names exist; return the store dir.

    For the built-in ``shapes`` dataset the images and JSON are generated first when missing.
    """
    root = Path(data_cfg.root)
    json_name = data_cfg.karpathy_json or f"dataset_{data_cfg.dataset}.json"
    json_path = Path(json_name) if Path(json_name).is_absolute() else root / json_name
    if data_cfg.dataset == "shapes" and not json_path.exists():
        from preprocess.shapes import generate_shapes

        generate_shapes(root, progress=progress)
    store_dir = data_cfg.resolved_store_dir()
    records = read_karpathy(json_path)
    image_dir = root / data_cfg.image_dir if data_cfg.image_dir else root
    report = build_stores(records, image_dir=image_dir, store_dir=store_dir, dataset=data_cfg.dataset,
                          image_size=data_cfg.image_size, min_count=data_cfg.min_count,
                          max_len=data_cfg.max_len, progress=progress)
    if progress:
        print(summarize(report))
    return store_dir
