"""A run directory's two guards: one training job writes it at a time; a resume trains on the same data.

* :func:`lock_run_dir` holds an exclusive, non-blocking ``flock`` on ``<run>/train.lock``
  (opened with :func:`nic.paths.open_lock`, which never follows a planted symbolic link) for
  the whole job. A second job on the same directory fails at once, naming the directory and
  the pid that holds it, instead of interleaving its checkpoints and logs with the first's.
  Under ``torchrun`` only rank 0 takes the lock and every rank learns the outcome, so all of
  them fail together (no rank waits forever at a barrier).
* :func:`read_resume` loads the checkpoint a resume continues from and compares the settings
  that decide what the stores and feature caches hold (:data:`DATA_KEYS`,
  :data:`ENCODER_KEYS`) with the run's; :func:`check_resume_vocab` compares the checkpoint's
  word list with the one the stores were built with, id by id. A difference is an error
  before any training: otherwise every embedding row would silently stand for another word.
  Where the data lives (``data.root``, ``data.store_dir``, ...) may change; what it is may not.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from nic.checkpoint import checkpoint_file, load_checkpoint, require_entries
from nic.config import Config, config_from_dict, save_config
from nic.distributed import DistInfo, broadcast_object
from nic.io import atomic_write_text
from nic.paths import open_lock
from nic.runtime import environment
from nic.vocab import Vocabulary

LOCK_NAME = "train.lock"
# Settings that change what the stores and feature caches hold (not where they are).
DATA_KEYS = ("dataset", "karpathy_json", "captions_file", "image_size", "min_count", "max_len", "long_captions",
             "captions_per_image", "val_fraction", "test_fraction", "split_seed", "restval", "max_pixels")
ENCODER_KEYS = ("name", "weights", "grid_size", "grid_below_top")
_NEW_RUN = "or start a new run without --resume (e.g. --train.name=NEW)"


class RunDirBusy(RuntimeError):
    """Another training job holds the run directory."""


class ResumeMismatch(ValueError):
    """The checkpoint a resume continues from was trained on other data or features than the run would use."""


# ------------------------------------------------------------------ the lock
@contextlib.contextmanager
def lock_run_dir(run_dir: str | Path, dist_info: DistInfo | None = None) -> Iterator[Path]:
    """Hold ``run_dir``'s lock for the with-block (created with the directory when missing); yields the lock file.

    Raises :class:`RunDirBusy` at once when another job holds it. With ``dist_info`` of a
    distributed job, rank 0 takes the lock and broadcasts the outcome to every rank.
    """
    dist_info = dist_info or DistInfo()
    run_dir = Path(run_dir)
    handle: BinaryIO | None = None
    error: Exception | None = None
    if dist_info.is_main:
        try:
            handle = _acquire(run_dir)
        except Exception as e:  # told to the other ranks below, then raised here
            error = e
    message = broadcast_object(None if error is None else f"{type(error).__name__}: {error}", dist_info)
    if error is not None:
        raise error
    if message is not None:
        raise RunDirBusy(f"rank 0 could not lock the run directory: {message}")
    try:
        yield run_dir / LOCK_NAME
    finally:
        if handle is not None:
            handle.close()  # releases the lock


def _acquire(run_dir: Path) -> BinaryIO:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    handle = open_lock(path)
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        pid = handle.read(32).decode("ascii", "replace").strip()
        handle.close()
        holder = f" (pid {pid})" if pid.isdigit() else ""
        raise RunDirBusy(f"{run_dir}: another training run{holder} is writing this run directory (it holds "
                         f"{path}); wait for it to end or stop it, or give this run another --train.name") from None
    except BaseException:
        handle.close()
        raise
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n".encode("ascii"))
    handle.flush()
    return handle


def write_run_files(run_dir: Path, cfg: Config, vocab: Vocabulary) -> None:
    """The run's resolved ``config.yaml``, ``vocab.json`` and ``env.json`` (versions, commit, command)."""
    save_config(cfg, run_dir / "config.yaml")
    vocab.save(run_dir / "vocab.json")
    atomic_write_text(run_dir / "env.json", json.dumps(environment(), indent=1))


# ------------------------------------------------------------------ resume
@dataclass
class ResumePoint:
    """The checkpoint a run continues from."""

    path: Path
    checkpoint: dict[str, Any]


def read_resume(resume: str | Path | None, cfg: Config) -> ResumePoint | None:
    """Load the checkpoint to resume (a run directory means its ``last.pt``) and check it fits ``cfg``.

    Raises ``ValueError`` for an exported model (no training state) and :class:`ResumeMismatch`
    when a setting of :data:`DATA_KEYS` / :data:`ENCODER_KEYS` differs from the checkpoint's.
    """
    if resume is None:
        return None
    path = Path(resume) / "last.pt" if Path(resume).is_dir() else Path(resume)
    ckpt = load_checkpoint(path)
    if "training" not in ckpt:
        raise ValueError(f"{path}: an exported model, without the training state a resume needs; "
                         "resume from the run directory's last.pt")
    require_entries(ckpt, ("config", "vocab", "decoder", "training"), path)
    saved = config_from_dict(ckpt["config"], source=f"{path} (config)")
    differences = [f"{section}.{key} is {getattr(getattr(saved, section), key)!r} in the checkpoint but "
                   f"{getattr(getattr(cfg, section), key)!r} now"
                   for section, keys in (("data", DATA_KEYS), ("encoder", ENCODER_KEYS)) for key in keys
                   if getattr(getattr(saved, section), key) != getattr(getattr(cfg, section), key)]
    if differences:
        raise ResumeMismatch(f"{path}: cannot resume: {'; '.join(differences)}: the weights were trained on other "
                             "data or features than these settings give. Resume with the checkpoint's settings (drop "
                             f"these overrides; its config.yaml has them), {_NEW_RUN}")
    return ResumePoint(path, ckpt)


def check_resume_vocab(point: ResumePoint, vocab: Vocabulary, vocab_file: str | Path, *,
                       action: str = "resume") -> None:
    """:class:`ResumeMismatch` unless the checkpoint's word list is ``vocab``'s (the stores'), id by id."""
    saved = Vocabulary.from_dict(point.checkpoint["vocab"], source=f"{point.path} (vocab)")
    if saved.itos == vocab.itos:
        return
    n = max(len(saved), len(vocab))
    word = lambda v, i: repr(v.itos[i]) if i < len(v) else "nothing"  # noqa: E731
    differing = [i for i in range(n) if word(saved, i) != word(vocab, i)]
    shown = "; ".join(f"id {i} is {word(saved, i)} in the checkpoint but {word(vocab, i)} now" for i in differing[:3])
    sizes = (f"both {len(vocab)} words" if len(saved) == len(vocab)
             else f"{len(saved)} words in the checkpoint, {len(vocab)} now")
    raise ResumeMismatch(
        f"{point.path}: cannot {action}: its vocabulary is not the one the stores were built with ({vocab_file}; "
        f"{sizes}): {len(differing)} of {n} ids name another word ({shown}{'; ...' if len(differing) > 3 else ''}), "
        "so training on would make their embedding rows stand for other words. The captions (or the settings the "
        f"stores are built with) changed since: rebuild the stores from the captions the checkpoint was trained on, "
        f"{_NEW_RUN if action == 'resume' else 'or start from a checkpoint trained on these stores'}")


def read_init(path: str | Path, vocab: Vocabulary, vocab_file: str | Path) -> ResumePoint:
    """The checkpoint ``train.init_from`` names (a run directory means its ``best.pt``), checked to hold one
    model over the stores' vocabulary."""
    path = checkpoint_file(path)
    if not path.is_file():
        raise FileNotFoundError(f"train.init_from={str(path)!r}: no such checkpoint; give a run's best.pt "
                                "(or its directory) or an exported model file")
    point = ResumePoint(path, load_checkpoint(path))
    if "members" in point.checkpoint:
        raise ValueError(f"{path}: train.init_from needs one model's checkpoint, not an ensemble")
    require_entries(point.checkpoint, ("vocab", "decoder"), path)
    check_resume_vocab(point, vocab, vocab_file, action="start from it")
    return point
