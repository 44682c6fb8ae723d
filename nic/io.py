"""Atomic file writing: a half-written file is never mistaken for a whole one.

Everything nic writes (stores, feature caches, checkpoints, vocabularies, reports) is
first written to a temporary sibling (``name.partial-<pid>``) and then moved into place
with :func:`os.replace`, which is atomic on POSIX and Windows. A crash or Ctrl-C leaves
at worst a ``*.partial-*`` file behind, never a truncated file under the final name.
Large HDF5 files written over minutes (stores, feature caches) use the resumable
variant of this scheme, :mod:`nic.h5resume`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


def partial_path(path: str | Path) -> Path:
    """The temporary name ``path`` is written under before it is moved into place."""
    path = Path(path)
    return path.with_name(f"{path.name}.partial-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` atomically.

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def fsync_path(path: str | Path) -> None:
    """Flush ``path``'s data to the disk (best effort: a file system without fsync is not an error)."""
    with contextlib.suppress(OSError), open(path, "rb+") as f:
        os.fsync(f.fileno())
