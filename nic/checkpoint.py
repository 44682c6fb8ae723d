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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

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


def require_entries(data: Mapping[str, Any], keys: Sequence[str], path: str | Path) -> None:
    """A ValueError naming ``path`` when the checkpoint lacks one of ``keys`` (e.g. "decoder")."""
    missing = [k for k in keys if k not in data]
    if missing:
        raise ValueError(f"{path}: not a complete nic model: no {', '.join(map(repr, missing))} entry "
                         f"(a nic model holds {', '.join(keys)})")


def load_weights(module: nn.Module, state: Any, *, source: str | Path, part: str,
                 vocab_size: int | None = None) -> None:
    """``module.load_state_dict(state)`` (strict), or one ValueError naming ``source`` and what does not fit.

    ``part`` names the weights ("decoder", "encoder"); with ``vocab_size``, a dimension that
    should be the vocabulary's size is said to be so ("decoder.word_embed.weight is 2538x512
    in the weights but the vocabulary has 2540 words").
    """
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{source}: the {part} weights are not a mapping of names to tensors")
    expected = module.state_dict()
    problems = [_shape_problem(f"{part}.{k}", tuple(v.shape), tuple(expected[k].shape), vocab_size)
                for k, v in state.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    missing, unexpected = [k for k in expected if k not in state], [k for k in state if k not in expected]
    if missing:
        problems.append(f"{len(missing)} tensor(s) of the model missing from the weights ({_some(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} tensor(s) in the weights that the model has not ({_some(unexpected)})")
    if problems:
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise ValueError(f"{source}: the {part} weights do not fit the model its config and vocabulary describe: "
                         f"{'; '.join(problems[:3])}{more}. The file's weights, vocabulary and config do not belong "
                         "together (edited, or put together from different runs): use the file the run wrote")
    module.load_state_dict(state)


def _shape_problem(name: str, got: tuple[int, ...], want: tuple[int, ...], vocab_size: int | None) -> str:
    text = f"{name} is {'x'.join(map(str, got))} in the weights"
    if vocab_size is not None and len(got) == len(want) and any(a != b == vocab_size for a, b in zip(got, want)):
        return f"{text} but the vocabulary has {vocab_size} words"
    return f"{text} but {'x'.join(map(str, want))} in the model"


def _some(names: Sequence[str], limit: int = 3) -> str:
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def export_model(src: str | Path, dst: str | Path, *, note: dict[str, Any] | None = None, fp16: bool = False) -> Path:
    """Write the inference part of checkpoint ``src`` to ``dst``: no optimizer or RNG state.

    What a model needs to caption (decoder weights, fine-tuned CNN weights if any, vocabulary,
    config, encoder name) and nothing else; packaged ImageNet weights are not copied. ``note``
    (plain data, e.g. the run's test scores) is stored under ``"export"``. Loads like any
    checkpoint (:func:`load_checkpoint`, ``weights_only=True``); cannot be resumed. ``fp16``
    stores the floating-point weights as float16 (half the file); they are copied into the
    float32 model on loading, so only their rounding differs from the trained weights.
    """
    data = load_checkpoint(src)
    keep = {k: data[k] for k in ("config", "vocab", "encoder_name", "decoder", "encoder")}
    if fp16:  # stored at half size; loading copies them into the float32 model (the values are fp16-rounded)
        for part in ("decoder", "encoder"):
            if keep[part] is not None:
                keep[part] = {k: v.half() if v.is_floating_point() else v for k, v in keep[part].items()}
    step = data.get("training", {}).get("state", {})
    keep["export"] = {"source": Path(src).name, "epoch": step.get("epoch"), "step": step.get("step"),
                      **({"weights_dtype": "float16"} if fp16 else {}), **(note or {})}
    save_checkpoint(dst, keep)
    return Path(dst)


def main(argv: list[str] | None = None) -> int:
    """``python -m nic.checkpoint export SRC DST``: write the inference-only form of a checkpoint."""
    p = argparse.ArgumentParser(prog="python -m nic.checkpoint", description=main.__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="keep only what captioning needs (no optimizer/RNG state)")
    e.add_argument("src", help="a checkpoint, e.g. runs/NAME/best.pt")
    e.add_argument("dst", help="the file to write")
    e.add_argument("--fp16", action="store_true",
                   help="store the weights as float16 (half the size; they load into a float32 model)")
    a = p.parse_args(argv)
    try:
        out = export_model(a.src, a.dst, fp16=a.fp16)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{out}: {out.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
