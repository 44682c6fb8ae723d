"""The report's decode part: a checkpoint's captions of a split, one row per beam size.

Everything that runs the model lives here: opening the checkpoint and the split's store,
the feature cache (:func:`nic.model.split_feature_reader`, the one cache policy), batched
beam search (:func:`nic.evaluation.decode_split`) and the shapes forced-choice test, which
scores captions with the model (:func:`relation_choice`).

How captions are decoded is owned by :class:`nic.decoding.DecodeSettings`: the report
decodes with exactly the checkpoint's settings (:attr:`nic.captioner.Captioner.settings`,
its ``eval`` section) with the beam size set and the explicit overrides applied
(:func:`report_settings`); an override of None keeps the checkpoint's value, so
``max_len=0`` and ``length_penalty=0.0`` are honoured.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from eval.results import write_results
from eval.scoring import ReportError, Row, StoreImages
from eval.shapes_metrics import relation_contrasts
from nic.captioner import Captioner
from nic.decoding import DecodeSettings
from nic.evaluation import decode_split, split_features
from nic.features import FeatureReader
from nic.model import split_feature_reader
from nic.store import StoreReader, store_path

__all__ = ["DecodedSplit", "decode_checkpoint", "open_split", "relation_choice", "report_settings",
           "store_train_captions", "write_rows"]


@dataclass
class DecodedSplit:
    """A split captioned by a checkpoint: the model, its store and feature cache, and one row per beam size."""

    captioner: Captioner
    store: StoreReader
    features: FeatureReader | None
    rows: list[Row]
    split: str

    @property
    def num_images(self) -> int:
        """Images decoded (the first ``limit`` of the store, or all)."""
        return len(self.rows[0].captions) if self.rows else 0

    @property
    def image_ids(self) -> list[int]:
        return [int(x) for x in self.store.image_ids[: self.num_images]]

    @property
    def grid_side(self) -> int | None:
        """Side of the attention grid, for attention maps; None when the decoder does not attend."""
        return self.captioner.encoder.grid_side if self.captioner.uses_grid else None

    def images(self) -> StoreImages:
        """The decoded images as the score part takes them."""
        n = self.num_images
        return StoreImages(source=str(self.store.path), image_ids=self.image_ids,
                           references=self.store.references()[:n], meta=self.store.image_meta()[:n],
                           files=self.store.filenames()[:n],
                           train_captions=lambda: store_train_captions(self.store.path, self.split))


def report_settings(captioner: Captioner, beam_size: int, *, length_penalty: float | None = None,
                    max_len: int | None = None) -> DecodeSettings:
    """How the report decodes at ``beam_size``: the checkpoint's settings with the given overrides.

    None keeps the checkpoint's value (its config's ``eval.length_penalty`` / ``eval.max_len``);
    any other value, 0 included, replaces it.
    """
    return captioner.settings.replace(beam_size=beam_size, length_penalty=length_penalty, max_len=max_len)


def open_split(checkpoint: str | Path | Sequence[str | Path], split: str, *, store_dir: str | Path | None = None,
               device: str = "cpu", progress: bool = True, int8: bool = False
               ) -> tuple[Captioner, StoreReader, FeatureReader | None]:
    """The checkpoint's captioner, the split's store and its feature cache (None: the CNN runs on images).

    Several checkpoints: their ensemble (:meth:`nic.captioner.Captioner.from_checkpoints`).
    ``int8``: the decoder quantized (:meth:`nic.captioner.Captioner.quantize_int8`, as ``caption.py --int8``).

    Raises:
        ReportError: the checkpoint cannot be used (its weights do not fit its vocabulary, ...).
        ValueError: the store was built with another vocabulary than the checkpoint's.
    """
    try:
        captioner = Captioner.from_checkpoints(checkpoint, device=device)
        if int8:
            captioner.quantize_int8()
    except ValueError as e:  # the message names the file and what is wrong with it
        raise ReportError(str(e)) from None
    cfg = captioner.config
    path = store_path(cfg.data.resolved_store_dir() if store_dir is None else store_dir, split)
    store = StoreReader(path)
    if store.attrs["vocab_hash"] != captioner.vocab.hash():
        raise ValueError(f"{path}: built with a different vocabulary than {checkpoint}; "
                         "evaluate on the stores the model was trained with")
    # a model whose top CNN stages were fine-tuned on a cached trunk reuses that trunk cache
    features = split_feature_reader(cfg, captioner.encoder, path, uses_grid=captioner.uses_grid,
                                    finetuned=captioner.encoder_trained, device=device, progress=progress)
    return captioner, store, features


def decode_checkpoint(checkpoint: str | Path | Sequence[str | Path], *, split: str = "test",
                      beam_sizes: Sequence[int] = (20,), limit: int = 0, length_penalty: float | None = None,
                      max_len: int | None = None,
                      store_dir: str | Path | None = None, device: str | None = "cpu",
                      progress: bool = True, int8: bool = False) -> DecodedSplit:
    """Caption ``split`` (its first ``limit`` images; 0: all) with ``checkpoint`` at each beam size.

    ``length_penalty`` and ``max_len`` override the checkpoint's (None: keep them, see
    :func:`report_settings`); ``device`` None picks CUDA when available.
    """
    if not beam_sizes or any(k < 1 for k in beam_sizes):
        raise ReportError(f"beam sizes must be positive integers, got {list(beam_sizes)}")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    captioner, store, features = open_split(checkpoint, split, store_dir=store_dir, device=device,
                                            progress=progress, int8=int8)
    try:
        per_beam = [report_settings(captioner, k, length_penalty=length_penalty, max_len=max_len) for k in beam_sizes]
    except ValueError as e:  # e.g. a negative max_len
        raise ReportError(f"decoding settings: {e}") from None
    rows = []
    for k, settings in zip(beam_sizes, per_beam):
        try:
            decoded = decode_split(captioner, store, features, settings, limit=limit, progress=progress,
                                   desc=f"{split} beam {k}", batch_size=captioner.config.eval.batch_size)
        except ValueError as e:  # e.g. nic.search refusing a beam this machine cannot hold, before allocating
            raise ReportError(f"--beam {k}: {e}") from None
        rows.append(Row(f"beam {k}", k, {i: c[0].text for i, c in enumerate(decoded.captions)},
                        {i: c[0] for i, c in enumerate(decoded.captions)}, dataclasses.asdict(settings)))
    return DecodedSplit(captioner, store, features, rows, split)


def write_rows(path: str | Path, decoded: DecodedSplit) -> list[str]:
    """Write each row's captions in the COCO results format, with the dataset's image ids.

    One row: ``path`` itself; several: one file per beam size, ``NAME.beamK.json``.
    """
    written = []
    ids = decoded.image_ids
    for row in decoded.rows:
        out = Path(path)
        if len(decoded.rows) > 1:
            out = out.with_name(f"{out.stem}.beam{row.beam}{out.suffix or '.json'}")
        write_results(out, ids, [row.captions[i] for i in range(len(ids))])
        written.append(str(out))
    return written


def store_train_captions(store_file: str | Path, split: str) -> set[str] | None:
    """The training store's references (already nic.vocab.tokenize output), for novelty; None if absent."""
    train_path = store_path(Path(store_file).parent, "train")
    if split == "train" or not train_path.exists():
        return None
    return {" ".join(r) for refs in StoreReader(train_path).references() for r in refs}


def relation_choice(captioner: Captioner, store: StoreReader, features: FeatureReader | None, *, limit: int = 0,
                    batch_size: int = 50) -> dict[str, Any] | None:
    """Forced-choice spatial relations on shapes (see :func:`eval.shapes_metrics.relation_contrasts`).

    For every relation true of an image, does the model give the true caption a higher
    probability than the same caption with the inverse relation? None without ground truth.
    """
    meta = store.image_meta()[: limit or None]
    if not meta or any("objects" not in m for m in meta):
        return None
    correct = pairs = images = 0
    for rows, pooled, grid in split_features(captioner, store, features, limit=limit, batch_size=batch_size):
        true, false, owner = [], [], []
        for b, i in enumerate(rows.tolist()):
            contrasts = relation_contrasts(meta[i]["objects"])
            images += bool(contrasts)
            for t, f in contrasts:
                true.append(t)
                false.append(f)
                owner.append(b)
        if owner:
            idx = torch.tensor(owner)
            g = grid[idx] if grid is not None else None
            correct += int((captioner.score(pooled[idx], g, true) > captioner.score(pooled[idx], g, false)).sum())
            pairs += len(owner)
    return {"accuracy": correct / pairs if pairs else None, "pairs": pairs, "images": images}
