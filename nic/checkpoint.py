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
    members                exported ensembles only: [{config, decoder}] of the models that
                           decode beside the first one (:mod:`nic.ensemble`)
    training               optimizer, epoch, step, best score, RNG states, ... (for resume);
                           absent from an exported model (:func:`export_model`)

Written under a temporary name and renamed (:mod:`nic.io`): a run killed while saving
keeps its previous checkpoint intact.
"""

from __future__ import annotations

import argparse
import sys
import zipfile
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


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", *,
                    mmap: bool = False) -> dict[str, Any]:
    """Safely load a checkpoint (``weights_only=True``) and check its format.

    ``mmap``: map the file instead of reading it, so tensors are read only when used (a run's
    optimizer state, which captioning never touches, is never materialised); files that are
    not in torch's zip format are read whole.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path}: checkpoint not found (train one with `python train.py`, "
                                "or pass --checkpoint runs/NAME/best.pt)")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
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
                 vocab_size: int | None = None, assign: bool = False, partial: bool = False) -> None:
    """``module.load_state_dict(state)`` (strict), or one ValueError naming ``source`` and what does not fit.

    ``part`` names the weights ("decoder", "encoder"); with ``vocab_size``, a dimension that
    should be the vocabulary's size is said to be so ("decoder.word_embed.weight is 2538x512
    in the weights but the vocabulary has 2540 words"). ``assign``: the tensors, converted to
    the module's dtypes, become its parameters (a module built on the meta device).
    ``partial``: ``state`` may name only some of the module's tensors (an exported model's
    ``encoder_changes``); the others keep their values. Every tensor it names must still fit.
    """
    if isinstance(state, Mapping):
        state = restore_weights(state)  # int8-stored weights (an exported model) -> float
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{source}: the {part} weights are not a mapping of names to tensors")
    expected = module.state_dict()
    problems = [_shape_problem(f"{part}.{k}", tuple(v.shape), tuple(expected[k].shape), vocab_size)
                for k, v in state.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    missing, unexpected = [k for k in expected if k not in state], [k for k in state if k not in expected]
    if missing and not partial:
        problems.append(f"{len(missing)} tensor(s) of the model missing from the weights ({_some(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} tensor(s) in the weights that the model has not ({_some(unexpected)})")
    if problems:
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise ValueError(f"{source}: the {part} weights do not fit the model its config and vocabulary describe: "
                         f"{'; '.join(problems[:3])}{more}. The file's weights, vocabulary and config do not belong "
                         "together (edited, or put together from different runs): use the file the run wrote")
    if assign:
        state = {k: v.to(expected[k].dtype) for k, v in state.items()}  # float16/int8-stored -> the model's
    module.load_state_dict(state, assign=assign, strict=not partial)


def _shape_problem(name: str, got: tuple[int, ...], want: tuple[int, ...], vocab_size: int | None) -> str:
    text = f"{name} is {'x'.join(map(str, got))} in the weights"
    if vocab_size is not None and len(got) == len(want) and any(a != b == vocab_size for a, b in zip(got, want)):
        return f"{text} but the vocabulary has {vocab_size} words"
    return f"{text} but {'x'.join(map(str, want))} in the model"


def _some(names: Sequence[str], limit: int = 3) -> str:
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


WEIGHT_DTYPES = ("float32", "float16", "int8")


def compact_weights(state: Mapping[str, torch.Tensor], dtype: str) -> dict[str, Any]:
    """A state dict stored smaller; :func:`restore_weights` turns it back into float tensors.

    ``float16``: every floating tensor halved. ``int8``: every floating matrix (2 or more
    dimensions) as int8 with one float32 scale per row (``{"int8": q, "scale": s}``, symmetric:
    ``w ~ q * s``, ``|error| <= s / 2``), vectors as float16; integer tensors are kept as they are.
    """
    if dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weights dtype must be one of {', '.join(WEIGHT_DTYPES)}, got {dtype!r}")
    out: dict[str, Any] = {}
    for k, v in state.items():
        if not v.is_floating_point() or dtype == "float32":
            out[k] = v
        elif dtype == "float16" or v.dim() < 2:
            out[k] = v.half()
        else:
            rows = v.float().reshape(v.shape[0], -1)  # (R, C)
            scale = rows.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127  # (R, 1)
            out[k] = {"int8": torch.round(rows / scale).to(torch.int8).reshape(v.shape), "scale": scale}
    return out


def restore_weights(state: Mapping[str, Any]) -> dict[str, Any]:
    """Undo :func:`compact_weights`' int8 storage (float16 tensors load into float32 models as they are)."""
    def restore(v: Any) -> Any:
        if isinstance(v, Mapping) and set(v) == {"int8", "scale"}:
            q, scale = v["int8"], v["scale"]
            return (q.float().reshape(q.shape[0], -1) * scale).reshape(q.shape)
        return v

    return {k: restore(v) for k, v in state.items()}


def checkpoint_file(path: str | Path) -> Path:
    """The checkpoint a path names: the file itself, or a run directory's ``best.pt``."""
    return Path(path) / "best.pt" if Path(path).is_dir() else Path(path)


def feature_input(config: Mapping[str, Any], encoder_name: str) -> tuple:
    """What the features a model reads depend on, from its config as a checkpoint stores it:
    (encoder, grid_size, grid_below_top, image_size). An ensemble's members must agree on it."""
    enc, data = config.get("encoder", {}), config.get("data", {})
    return encoder_name, enc.get("grid_size"), enc.get("grid_below_top"), data.get("image_size")


def export_model(src: str | Path | Sequence[str | Path], dst: str | Path, *, note: dict[str, Any] | None = None,
                 fp16: bool = False, weights: str | None = None) -> Path:
    """Write the inference part of checkpoint ``src`` to ``dst``: no optimizer or RNG state.

    What a model needs to caption (decoder weights, fine-tuned CNN weights if any, vocabulary,
    config, encoder name) and nothing else; packaged ImageNet weights are not copied. ``note``
    (plain data, e.g. the run's test scores) is stored under ``"export"``. Loads like any
    checkpoint (:func:`load_checkpoint`, ``weights_only=True``); cannot be resumed.

    Several ``src`` (files or run directories): one file holding their ensemble
    (:mod:`nic.ensemble`): the first model as usual, the others' configs and decoder weights
    under ``"members"``. They must share the vocabulary and the frozen encoder's input.

    ``weights`` (``fp16=True`` is ``weights="float16"``): store the floating-point weights as
    float16 (half the file) or int8 with a scale per row (a quarter; :func:`compact_weights`).
    Loading turns them back into the float32 model's weights, so only their rounding differs
    from the trained ones: measure the exported file, not the run.
    """
    weights = weights or ("float16" if fp16 else "float32")
    sources = [checkpoint_file(src)] if isinstance(src, (str, Path)) else [checkpoint_file(p) for p in src]
    if not sources:
        raise ValueError("no checkpoint to export")
    parts = [load_checkpoint(p) for p in sources]
    for path, data in zip(sources, parts):
        require_entries(data, ("config", "vocab", "encoder_name", "decoder", "encoder"), path)
    data = parts[0]
    keep = {k: data[k] for k in ("config", "vocab", "encoder_name", "decoder", "encoder")}
    members = []
    for path, other in zip(sources[1:], parts[1:]):
        problem = _ensemble_problem(data, other)
        if problem:
            raise ValueError(f"{path}: cannot join {sources[0]} in an ensemble: {problem}")
        members.append({"config": other["config"], "decoder": other["decoder"]})
    if keep["encoder"] is not None and members:
        raise ValueError(f"{sources[0]}: its CNN was fine-tuned; an ensemble's members must share one frozen encoder")
    if keep["encoder"] is not None:  # fine-tuned: keep only what differs from the packaged weights
        changes = encoder_changes(keep["config"], data["encoder_name"], keep["encoder"])
        if changes is not None:
            keep["encoder"], keep["encoder_changes"] = None, changes
    for part in ("decoder", "encoder", "encoder_changes"):
        if keep.get(part) is not None:
            keep[part] = compact_weights(keep[part], weights)
    if members:
        keep["members"] = [{"config": m["config"], "decoder": compact_weights(m["decoder"], weights)}
                           for m in members]
    trained = [d.get("training", {}).get("state", {}) for d in parts]
    origin = [{"source": str(p), "epoch": t.get("epoch"), "step": t.get("step")} for p, t in zip(sources, trained)]
    keep["export"] = {"source": sources[0].name, "epoch": trained[0].get("epoch"), "step": trained[0].get("step"),
                      **({"ensemble": origin} if members else {}),
                      **({"weights_dtype": weights} if weights != "float32" else {}), **(note or {})}
    save_checkpoint(dst, keep)
    return Path(dst)


def encoder_changes(config: Mapping[str, Any], encoder_name: str,
                    state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """The tensors of a fine-tuned encoder's ``state`` that differ from the weights it was built
    from (the packaged ImageNet weights, or ``encoder.weights``); None when those cannot be read
    here (then the whole encoder is kept). Fine-tuning the top stages changes ~1M of Lite0's
    3.4M parameters (BatchNorm statistics stay frozen), so an exported model holds only those."""
    from nic.encoders import build_encoder  # only exports of fine-tuned models need it

    enc = config.get("encoder", {})
    try:
        base = build_encoder(encoder_name, weights=enc.get("weights"), grid_size=enc.get("grid_size", 0),
                             grid_below_top=enc.get("grid_below_top", 0)).state_dict()
    except (OSError, RuntimeError, ValueError, ImportError):  # the weights are not on this machine
        return None
    if set(base) != set(state):
        return None
    return {k: v for k, v in state.items() if v.shape != base[k].shape or not torch.equal(v.to(base[k].dtype), base[k])}


def _ensemble_problem(first: Mapping[str, Any], other: Mapping[str, Any]) -> str | None:
    """Why ``other`` cannot decode beside ``first`` in one search over one encoder's features (None: it can)."""
    if other["vocab"] != first["vocab"]:
        return "its vocabulary differs (train the members on the same stores)"
    if other["encoder"] is not None or other.get("encoder_changes") is not None:
        return "its CNN was fine-tuned; an ensemble's members must share one frozen encoder"
    mine, theirs = (feature_input(d["config"], d["encoder_name"]) for d in (other, first))
    if mine != theirs:
        return f"its encoder (name, grid_size, grid_below_top, image_size) {mine} differs from {theirs}"
    return None


def main(argv: list[str] | None = None) -> int:
    """``python -m nic.checkpoint export SRC DST``: write the inference-only form of a checkpoint."""
    p = argparse.ArgumentParser(prog="python -m nic.checkpoint", description=main.__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="keep only what captioning needs (no optimizer/RNG state)")
    e.add_argument("src", nargs="+", help="a checkpoint or run directory, e.g. runs/NAME/best.pt; several: "
                                          "one file holding their ensemble")
    e.add_argument("dst", help="the file to write")
    size = e.add_mutually_exclusive_group()
    size.add_argument("--fp16", action="store_true",
                      help="store the weights as float16 (half the size; they load into a float32 model)")
    size.add_argument("--int8", action="store_true",
                      help="store weight matrices as int8 with a scale per row (a quarter of the size)")
    a = p.parse_args(argv)
    try:
        out = export_model(a.src, a.dst, weights="int8" if a.int8 else "float16" if a.fp16 else "float32")
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{out}: {out.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
