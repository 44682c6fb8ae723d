"""Checkpoints: one file with everything needed to rebuild, use or resume a model.

Contents (plain containers of tensors and Python scalars, so the file loads with
``torch.load(..., weights_only=True)`` and never runs pickled code)::

    format, version        "nic-checkpoint", 1
    config                 the resolved Config as a dict (rebuilds encoder and decoder)
    vocab                  the vocabulary as a dict (nic.vocab JSON)
    encoder_name           registry name of the encoder
    decoder                decoder state dict
    encoder                encoder state dict when it was trained (fine-tuned), else None
                           (then the encoder's packaged ImageNet weights are used)
    training               optimizer, epoch, step, best score, RNG states, ... (for resume);
                           absent from an exported model (:func:`export_model`)

Written under a temporary name and renamed (:mod:`nic.io`): a run killed while saving
keeps its previous checkpoint intact.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from nic.io import atomic_path

FORMAT = "nic-checkpoint"
VERSION = 1


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Atomically write ``payload`` (format/version are added) to ``path``."""
    data = {"format": FORMAT, "version": VERSION, **payload}
    with atomic_path(path) as tmp:
        torch.save(data, tmp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Safely load a checkpoint (``weights_only=True``) and check its format."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path}: checkpoint not found (train one with `python train.py`, "
                                "or pass --checkpoint runs/NAME/best.pt)")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated/corrupt file or a pickle with arbitrary objects
        # torch's own message may advise weights_only=False for an untrusted file: never repeat that
        text = str(e)
        if "Unsupported global" in text:
            reason = "it holds pickled objects other than tensors and plain containers, which a safe load refuses"
        elif "WeightsUnpickler" in text or "weights_only" in text:
            reason = "not a PyTorch file, or a truncated or corrupt one"
        else:
            reason = text.strip().splitlines()[0] if text.strip() else "unreadable"
        raise ValueError(f"{path}: cannot be loaded as a nic checkpoint ({type(e).__name__}: {reason}); "
                         "expected a file written by nic (runs/NAME/best.pt or an exported model)") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path}: not a nic checkpoint (no format={FORMAT!r} entry)")
    if data.get("version") != VERSION:
        raise ValueError(f"{path}: checkpoint version {data.get('version')} is not supported (expected {VERSION})")
    return data


def export_model(src: str | Path, dst: str | Path, *, note: dict[str, Any] | None = None) -> Path:
    """Write the inference part of checkpoint ``src`` to ``dst``: no optimizer or RNG state.

    What a model needs to caption (decoder weights, fine-tuned CNN weights if any, vocabulary,
    config, encoder name) and nothing else; packaged ImageNet weights are not copied. ``note``
    (plain data, e.g. the run's test scores) is stored under ``"export"``. Loads like any
    checkpoint (:func:`load_checkpoint`, ``weights_only=True``); cannot be resumed.
    """
    data = load_checkpoint(src)
    keep = {k: data[k] for k in ("config", "vocab", "encoder_name", "decoder", "encoder")}
    step = data.get("training", {}).get("state", {})
    keep["export"] = {"source": Path(src).name, "epoch": step.get("epoch"), "step": step.get("step"),
                      **(note or {})}
    save_checkpoint(dst, keep)
    return Path(dst)


def main(argv: list[str] | None = None) -> int:
    """``python -m nic.checkpoint export SRC DST``: write the inference-only form of a checkpoint."""
    p = argparse.ArgumentParser(prog="python -m nic.checkpoint", description=main.__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="keep only what captioning needs (no optimizer/RNG state)")
    e.add_argument("src", help="a checkpoint, e.g. runs/NAME/best.pt")
    e.add_argument("dst", help="the file to write")
    a = p.parse_args(argv)
    try:
        out = export_model(a.src, a.dst)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{out}: {out.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
