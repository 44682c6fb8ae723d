"""BLEU report: caption a split with a checkpoint at one or more beam sizes and score it.

    python -m eval.bleu_report --checkpoint runs/default/best.pt --split test --beam 1 3 20

Prints a table of corpus BLEU-1..4 (computed as the COCO caption toolkit does, over all
references of each image, see :mod:`eval.bleu`), the share of distinct captions and the
vocabulary used (a model that says the same thing for every image is visible at a
glance), and for the shapes dataset how often the captions name the right colour+shape
pairs, counts, sizes and spatial relations. A "human" row scores each image's first
reference against its other references: the agreement between people, for scale.
Writes everything (and every caption) to JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from eval.bleu import corpus_bleu
from nic.io import atomic_write_text


def diversity(captions: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]]) -> dict[str, float]:
    """Distinct-caption share, vocabulary used, and mean length against the references'."""
    n = max(len(captions), 1)
    ref_lengths = [len(r) for refs in references for r in refs]
    return {
        "distinct": len({" ".join(c) for c in captions}) / n,
        "vocab_used": len({w for c in captions for w in c}),
        "mean_length": sum(len(c) for c in captions) / n,
        "ref_mean_length": sum(ref_lengths) / max(len(ref_lengths), 1),
    }


def human_agreement(references: Sequence[Sequence[Sequence[str]]]) -> dict[str, Any] | None:
    """BLEU of each image's first reference against its other references (images with >= 2)."""
    pairs = [(refs[0], refs[1:]) for refs in references if len(refs) >= 2]
    if not pairs:
        return None
    hyps, refs = zip(*pairs)
    return {"bleu": corpus_bleu(hyps, refs).as_dict(), **diversity(hyps, refs)}


def shapes_scores(captions: Sequence[Sequence[str]], meta: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Correctness against the shapes generator's ground truth, when the store has it."""
    if not meta or "objects" not in meta[0]:
        return None
    from eval.shapes_metrics import score_corpus

    return score_corpus([list(c) for c in captions], [m["objects"] for m in meta[: len(captions)]])


def evaluate_checkpoint(checkpoint: str | Path, *, split: str = "test", beam_sizes: Sequence[int] = (20,),
                        limit: int = 0, length_penalty: float | None = None, max_len: int | None = None,
                        store_dir: str | Path | None = None, device: str = "cpu",
                        progress: bool = True) -> dict[str, Any]:
    """Decode ``split`` with ``checkpoint`` at each beam size and score it."""
    from nic.captioner import Captioner
    from nic.evaluation import decode_split
    from nic.features import FeatureReader, cache_features
    from nic.store import StoreReader, store_path

    captioner = Captioner.from_checkpoint(checkpoint, device=device)
    cfg = captioner.config
    path = store_path(store_dir or cfg.data.resolved_store_dir(), split)
    store = StoreReader(path)
    if store.attrs["vocab_hash"] != captioner.vocab.hash():
        raise ValueError(f"{path}: built with a different vocabulary than {checkpoint}; "
                         "evaluate on the stores the model was trained with")
    features = None
    if cfg.encoder.freeze:
        cache = cache_features(captioner.encoder, path, grid=captioner.uses_grid, dtype=cfg.encoder.feature_dtype,
                               device=device, progress=progress)
        features = FeatureReader(cache, grid=captioner.uses_grid)
    meta = store.image_meta()
    report: dict[str, Any] = {"checkpoint": str(checkpoint), "split": split, "store": str(path), "results": []}
    references = None
    for k in beam_sizes:
        decoded = decode_split(captioner, store, features, limit=limit, beam_size=k, progress=progress,
                               desc=f"{split} beam {k}", batch_size=cfg.eval.batch_size,
                               length_penalty=cfg.eval.length_penalty if length_penalty is None else length_penalty,
                               max_len=max_len or cfg.eval.max_len)
        references = decoded.references
        row = {"beam": k, "images": len(decoded.best), "bleu": decoded.bleu().as_dict(),
               **diversity(decoded.best, references), "shapes": shapes_scores(decoded.best, meta),
               "captions": [" ".join(c) for c in decoded.best]}
        report["results"].append(row)
    report["human"] = human_agreement(references or store.references())
    return report


def format_table(report: dict[str, Any]) -> str:
    """The report as a fixed-width text table (also valid Markdown)."""
    rows = [(f"beam {r['beam']}", r) for r in report["results"]]
    if report.get("human"):
        rows.append(("human (ref 1 vs rest)", report["human"]))
    has_shapes = any(r.get("shapes") for _, r in rows)
    head = "| decoding | BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 | distinct | vocab | length |"
    if has_shapes:
        head += " colour+shape | count | relation |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, r in rows:
        b = r["bleu"]
        line = (f"| {name} | {b['BLEU-1']:.3f} | {b['BLEU-2']:.3f} | {b['BLEU-3']:.3f} | {b['BLEU-4']:.3f} "
                f"| {r['distinct']:.1%} | {r['vocab_used']} | {r['mean_length']:.1f} |")
        if has_shapes:
            s = r.get("shapes") or {}
            line += "".join(f" {s[k]:.1%} |" if s.get(k) is not None else " - |"
                            for k in ("color_shape", "count", "relation"))
        lines.append(line)
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m eval.bleu_report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="runs/default/best.pt", help="checkpoint file or run directory")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="split to caption")
    p.add_argument("--beam", type=int, nargs="+", default=[20], help="beam sizes (default: 20)")
    p.add_argument("--limit", type=int, default=0, help="only the first N images (0: all)")
    p.add_argument("--length-penalty", type=float, default=None, help="override the config's length penalty")
    p.add_argument("--max-len", type=int, default=None, help="override the maximum caption length")
    p.add_argument("--store-dir", default=None, help="stores folder (default: the checkpoint config's)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    p.add_argument("--out", default=None, help="write the full report (and every caption) to this JSON file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    a = parse_args(argv)
    report = evaluate_checkpoint(a.checkpoint, split=a.split, beam_sizes=a.beam, limit=a.limit,
                                 length_penalty=a.length_penalty, max_len=a.max_len, store_dir=a.store_dir,
                                 device=a.device)
    print(format_table(report))
    if a.out:
        atomic_write_text(a.out, json.dumps(report, indent=1))
        print(f"report written to {a.out}")
    return report


if __name__ == "__main__":
    main()
