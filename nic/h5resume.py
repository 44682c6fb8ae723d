"""Resumable HDF5 writing: the one scheme every long-running writer of nic uses.

A file that takes minutes to hours to write (an image store of :mod:`preprocess.stores`, a
feature cache of :mod:`nic.features`) is written so that ``kill -9`` at any moment loses at
most one checkpoint of work, and a file under its final name is always complete::

    <name>.partial         the file being written; its datasets are allocated up front
                           (:meth:`ResumableH5.create`), so writing rows never changes the
                           HDF5 metadata and a killed writer leaves a file that opens cleanly
    <name>.progress.json   the progress record: ``{"format", "fingerprint", ...}``, replaced
                           atomically at each checkpoint, only after the rows it vouches for
                           are fsynced (:meth:`ResumableH5.checkpoint`)
    <name>                 the finished file, renamed into place (:meth:`ResumableH5.commit`)

The ``fingerprint`` identifies the inputs and settings the file is made from: a record (or a
partial file) of another fingerprint is never resumed (:meth:`ResumableH5.read_progress`,
:meth:`ResumableH5.partial_matches`). What a record holds beyond ``format`` and
``fingerprint`` (rows done, problems met, ...) is the writer's business.

Example (the shape of :func:`nic.features.cache_features`)::

    rf = ResumableH5(path, "my-progress")
    record = rf.read_progress(fp)
    if record is None or not rf.partial_matches("fingerprint", fp, "rows", n):
        rf.create({"rows": {"shape": (n, 8), "dtype": np.float32}}, {"fingerprint": fp})
        record = rf.new_record(fp, rows_done=0)
        rf.write_progress(record)
    with h5py.File(rf.partial, "r+") as f:
        ...                                    # write rows, and every so often:
        f.flush(); rf.checkpoint(f, {**record, "rows_done": done})
    rf.commit()                                # fsync, rename into place, drop the record
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from nic.io import atomic_write_text, fsync_path

__all__ = ["ResumableH5", "fsync_h5", "fsync_path", "h5_attr", "partial_path", "progress_path"]


def partial_path(path: str | Path) -> Path:
    """``<path>.partial``: the name a resumable file is written under."""
    path = Path(path)
    return path.with_name(f"{path.name}.partial")


def progress_path(path: str | Path) -> Path:
    """``<path>.progress.json``: the progress record of a resumable file."""
    path = Path(path)
    return path.with_name(f"{path.name}.progress.json")


def fsync_h5(f: h5py.File) -> None:
    """fsync an open HDF5 file (call ``f.flush()`` first; best effort, like :func:`nic.io.fsync_path`)."""
    with contextlib.suppress(Exception):
        os.fsync(f.id.get_vfd_handle())


def h5_attr(path: str | Path, name: str) -> Any:
    """An attribute of an HDF5 file, or None when the file or attribute is missing or unreadable."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        with h5py.File(path, "r") as f:
            value = f.attrs.get(name)
    except OSError:
        return None
    return value.item() if isinstance(value, np.generic) else value


class ResumableH5:
    """The files of one resumable HDF5 file at ``path`` whose progress records are tagged ``format``."""

    def __init__(self, path: str | Path, format: str) -> None:
        self.path = Path(path)
        self.format = format
        self.partial = partial_path(self.path)
        self.progress = progress_path(self.path)

    def __repr__(self) -> str:
        return f"ResumableH5({str(self.path)!r}, {self.format!r})"

    # ------------------------------------------------------------------ progress record
    def new_record(self, fingerprint: str, **fields: Any) -> dict[str, Any]:
        """A fresh progress record: ``{"format", "fingerprint", **fields}`` (in that order)."""
        return {"format": self.format, "fingerprint": fingerprint, **fields}

    def read_progress(self, fingerprint: str) -> dict[str, Any] | None:
        """The progress record when it is readable, of this format and of ``fingerprint``; else None."""
        try:
            record = json.loads(self.progress.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("format") != self.format \
                or record.get("fingerprint") != fingerprint:
            return None
        return record

    def write_progress(self, record: Mapping[str, Any] | str) -> None:
        """Replace the progress record atomically (a str is written as is: an earlier snapshot's JSON)."""
        atomic_write_text(self.progress, record if isinstance(record, str) else json.dumps(record))

    def checkpoint(self, f: h5py.File, record: Mapping[str, Any] | str) -> None:
        """fsync the open partial file ``f`` (already flushed), then record ``record``.

        In this order, so a record never claims rows a crash could lose.
        """
        fsync_h5(f)
        self.write_progress(record)

    # ------------------------------------------------------------------ the partial file
    def create(self, datasets: Mapping[str, Mapping[str, Any]], attrs: Mapping[str, Any]) -> None:
        """A fresh partial file: ``datasets`` (name -> ``create_dataset`` keywords), in order, then ``attrs``.

        Every chunk is allocated now and never filled (sparse on disk), and no timestamps are
        stored, so rows are written at fixed places without touching the metadata, and the
        same calls give the same bytes. The file is fsynced before this returns.
        """
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
        with h5py.File(self.partial, "w") as f:
            for name, options in datasets.items():
                f.create_dataset(name, dcpl=dcpl, track_times=False, **options)
            for key, value in attrs.items():
                f.attrs[key] = value
        fsync_path(self.partial)

    def partial_matches(self, attr: str, fingerprint: str, dataset: str, rows: int) -> bool:
        """Whether the partial file opens, carries ``attr == fingerprint`` and has ``rows`` rows in ``dataset``."""
        try:
            with h5py.File(self.partial, "r") as f:
                return f.attrs.get(attr) == fingerprint and f[dataset].shape[0] == rows
        except (OSError, KeyError):
            return False

    # ------------------------------------------------------------------ into place
    def commit(self, final_record: Mapping[str, Any] | None = None) -> None:
        """fsync the finished partial file and rename it into place, atomically.

        ``final_record``: written as the progress record before the rename and kept (e.g. the
        file's report); None: the progress record is removed after the rename.
        """
        fsync_path(self.partial)
        if final_record is not None:
            self.write_progress(final_record)
        os.replace(self.partial, self.path)
        if final_record is None:
            self.progress.unlink(missing_ok=True)

    def finish_rename(self) -> None:
        """Complete a :meth:`commit` that was killed between its record and its rename."""
        if self.partial.exists():
            os.replace(self.partial, self.path)

    def reopen(self) -> None:
        """Move the finished file back to its partial name, to be rewritten in place."""
        os.replace(self.path, self.partial)

    def discard(self) -> None:
        """Remove the partial file and the progress record (a forced rebuild)."""
        for stale in (self.partial, self.progress):
            stale.unlink(missing_ok=True)
