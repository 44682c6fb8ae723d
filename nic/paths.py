"""The one containment rule for paths that come from users' files.

Every reader of a user-named path (a Karpathy JSON's ``filepath``/``filename``, a custom
captions file's ``image`` column, a references file given to the HTML report, a store's
lock file) goes through this module, so the rule is written once:

1. **The text** (:func:`relative_inside`): absolute paths (POSIX, Windows drive or UNC) and
   any ``..`` component are refused before anything is opened.
2. **The file system** (:func:`resolve_inside`): the joined path is resolved, symbolic links
   included, and must still lie inside the (resolved) root. A symlink inside the dataset
   that points to another file of the dataset is fine; one that leads out of it, directly
   or through a symlinked folder, is refused.
3. **The file** (:func:`open_regular`): only a regular file is read. It is opened without
   blocking, so a FIFO or a device named ``x.jpg`` is refused instead of hanging the job.

:func:`open_lock` opens a lock file without following a symbolic link, so a planted link
can never make nic truncate or create a file elsewhere.
"""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import BinaryIO


class UnsafePath(ValueError):
    """A user-named path that leads outside the folder it must stay in."""


class NotRegularFile(OSError):
    """A path that names a FIFO, a device, a socket or a folder where a file was expected."""


def relative_inside(*parts: str) -> str | None:
    """Join ``parts`` into a "/"-separated relative path, or None when the text escapes.

    Absolute paths (``/x``, ``C:\\x``, ``\\\\server\\x``) and any ``..`` component are
    refused; ``.`` components and empty parts are dropped; None also when nothing is left.
    """
    pieces: list[str] = []
    for part in parts:
        if not part:
            continue
        if PurePosixPath(part).is_absolute() or PureWindowsPath(part).is_absolute() or PureWindowsPath(part).drive:
            return None
        for piece in part.replace("\\", "/").split("/"):
            if piece == "..":
                return None
            if piece not in ("", "."):
                pieces.append(piece)
    return "/".join(pieces) if pieces else None


def resolve_inside(root: str | Path, relative: str | Path) -> Path:
    """``root / relative`` with every symbolic link resolved; :class:`UnsafePath` if it leaves ``root``.

    The text of ``relative`` is checked first (:func:`relative_inside`). A path that does
    not exist resolves as far as it can and is returned (the caller reports it missing).
    """
    rel = relative_inside(str(relative))
    if rel is None:
        raise UnsafePath(f"{relative!s}: the path is absolute or climbs out of {root} with '..'")
    base = Path(root).resolve()
    target = (base / rel).resolve()
    if not target.is_relative_to(base):
        raise UnsafePath(f"{relative!s}: resolves to {target}, outside {base} (through a symbolic link)")
    return target


def open_regular(path: str | Path) -> BinaryIO:
    """Open ``path`` for binary reading only if it is a regular file (never blocks on a FIFO).

    Raises ``FileNotFoundError`` when it does not exist and :class:`NotRegularFile` for a
    FIFO, device, socket or folder.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a folder" if stat.S_ISDIR(mode)
                    else "a socket" if stat.S_ISSOCK(mode) else "a device")
            raise NotRegularFile(f"{path}: is {kind}, not a regular file")
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def open_lock(path: str | Path) -> BinaryIO:
    """Open (creating it, never truncating) the lock file ``path``; refuse a symbolic link.

    Raises :class:`UnsafePath`, naming the path and what to do, when ``path`` is a symbolic
    link (dangling or not: nothing is created or truncated at its target) or anything but a
    regular file (a folder, a FIFO, ...).
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as e:
        if os.path.islink(path):
            raise UnsafePath(f"{path}: the lock file is a symbolic link (to {os.readlink(path)}); remove it: "
                             "nic never follows a symbolic link to its lock file") from None
        if os.path.isdir(path):
            raise UnsafePath(f"{path}: the lock file is a folder; remove it") from None
        raise e
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePath(f"{path}: the lock file is not a regular file; remove it")
    return os.fdopen(fd, "r+b")
