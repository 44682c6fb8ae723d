"""Write the HDF5 caption stores (schema: :mod:`nic.store`): streaming, parallel, resumable.

One split is written in two phases, each resumable (the partial file, progress record and
atomic rename are :mod:`nic.h5resume`'s):

**Decode** (:func:`decode_split`, this module)

1. ``<split>.h5.partial`` is created with the ``images`` dataset allocated up front for
   every record (one chunk per image, never filled: sparse on disk). Writing pixels then
   only fills chunks at fixed places and never changes the file's HDF5 metadata, so a kill
   at any moment leaves a partial file that opens cleanly.
2. Decoding threads (:func:`decode_images`: a thread pool, results in input order, a
   bounded number of images in flight) decode each image with
   :func:`nic.images.load_image` (JPEG draft mode, EXIF orientation, RGB, resize) in
   parallel, since Pillow releases the GIL while decoding and resizing; the calling thread
   writes the rows in blocks. Every ``flush_every`` records the file is flushed and
   fsynced, then ``<split>.h5.progress.json`` is replaced atomically with the number of
   records done, rows written, and the problems met so far (each with its reason).

**Finish** (:func:`preprocess.finish.finish_split`, once the vocabulary is known)

3. The per-image and per-caption datasets are written from the records in blocks, the
   attributes are set (``images_fingerprint``; ``fingerprint``, and a ``uid`` derived from
   it), and the file is renamed to ``<split>.h5``; the progress file then says "complete"
   and keeps the split's report.

A re-run with the same images fingerprint (the image list + decoding settings) continues
from the last progress record, so a killed run loses at most ``flush_every`` images of
work and ends with a store identical to an uninterrupted run's (same datasets, values and
attributes, ``uid`` included). Another images fingerprint starts the split over; other
captions or vocabulary only redo step 3. Memory does not grow with the number of images:
pixels stream through in blocks, captions are written in blocks. The images themselves
are not hashed: replace image files in place and you must rebuild with ``--force``.

Problems with the input never stop the run: a missing, truncated or undecodable image, one
in a format nic does not read, one over the pixel limit, a FIFO/device/folder where the
image should be, or a path that leads out of the image folder through a symbolic link, is
skipped, counted and listed with its reason (:func:`decode_image`, in the decoding threads,
is the one per-image failure boundary); with ``strict=True`` the first one is fatal
instead (:class:`preprocess.karpathy.InputProblem`).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import itertools
import json
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from PIL import Image
from tqdm import tqdm

from nic.h5resume import ResumableH5, h5_attr
from nic.images import DEFAULT_MAX_PIXELS, ImageTooLarge, load_image
from nic.paths import NotRegularFile, UnsafePath, resolve_inside
from nic.store import VERSION
from nic.vocab import Vocabulary
from preprocess.finish import finish_split, resumable_store
from preprocess.karpathy import ImageRecord, InputProblem

WRITE_BLOCK = 32  # decoded images buffered before one HDF5 write
FLUSH_EVERY = 500  # records between progress checkpoints
IN_FLIGHT_PER_WORKER = 4  # images queued or being decoded per decoding thread


def default_workers() -> int:
    """One decoding thread per available CPU core, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


# --------------------------------------------------------------------------- decoding
def decode_image(task: tuple[str, int, int | None] | tuple[str, int, int | None, str | Path | None]
                 ) -> tuple[np.ndarray | None, tuple[str, str] | None]:
    """``(path, size, max_pixels[, root])`` -> ``(pixels (3, S, S), None)`` or ``(None, (kind, reason))``.

    Runs in the decoding threads and is the per-image failure boundary: it never raises for
    a bad image (the reason is returned). With ``root``, ``path`` is relative to it and
    must stay inside it, symbolic links resolved (:func:`nic.paths.resolve_inside`: a link
    to a file or through a folder outside the dataset is ``unsafe_path``, never opened).
    """
    path, size, max_pixels = task[:3]
    root = task[3] if len(task) > 3 else None
    try:
        if root is not None:
            path = str(resolve_inside(root, path))
        return load_image(path, size, max_pixels=max_pixels), None
    except UnsafePath as e:
        return None, ("unsafe_path", f"unsafe path: {e}; image skipped")
    except FileNotFoundError:
        return None, ("missing_image", "image file not found")
    except NotRegularFile as e:
        return None, ("not_a_file", f"not an image file: {e}")
    except ImageTooLarge as e:
        return None, ("image_too_large", f"image too large: {e}")
    except Exception as e:  # noqa: BLE001 - any decoder failure is this image's problem, not the run's
        return None, ("bad_image", f"cannot decode image: {str(e).strip() or type(e).__name__}")


def decode_images(paths: Iterable[str], size: int, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                  workers: int = 1, root: str | Path | None = None
                  ) -> Iterator[tuple[np.ndarray | None, tuple[str, str] | None]]:
    """Decode ``paths`` in order with ``workers`` threads (1: in the calling thread).

    With ``root``, ``paths`` are relative to it and each must stay inside it (symbolic links
    resolved; :func:`decode_image`).

    Yields :func:`decode_image` results in input order, so the output is deterministic
    whatever the number of workers. At most ``IN_FLIGHT_PER_WORKER * workers`` images are
    submitted ahead of the one being yielded, so memory stays flat even when writing is
    slower than decoding.

    Threads, not processes: Pillow releases the GIL while it decodes a JPEG and while it
    resizes, which is ~80% of the work per image, so the threads decode in parallel; and
    unlike a process pool they cost nothing to start and hand over pixels without copies.
    Closing the generator early (or Ctrl-C) cancels what is queued and waits for the images
    being decoded (milliseconds); the threads die with the process, so a kill -9 leaves no
    worker behind.
    Pillow's block cache (``Image.core.set_blocks_max``) stays as it is, off by default: it
    is not locked against threads in Pillow's GIL builds.
    """
    if workers <= 1:
        for path in paths:
            yield decode_image((path, size, max_pixels, root))
        return
    it = iter(paths)
    pending: collections.deque[Future[tuple[np.ndarray | None, tuple[str, str] | None]]] = collections.deque()
    # load_image hides Pillow's DecompressionBombWarning with warnings.catch_warnings(), which
    # saves and restores the process-wide filter list and so is not thread-safe: overlapping
    # threads restore each other's copies, which can leave the filter behind for good or drop
    # it while another thread still needs it. With the same filter set around the whole pool,
    # every copy a thread restores is the same list; the caller's list is restored at the end.
    with warnings.catch_warnings(), ThreadPoolExecutor(workers, thread_name_prefix="nic-decode") as pool:
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)

        def submit(n: int) -> None:
            for path in itertools.islice(it, n):
                pending.append(pool.submit(decode_image, (path, size, max_pixels, root)))

        try:
            submit(IN_FLIGHT_PER_WORKER * workers)
            while pending:
                result = pending.popleft().result()
                submit(1)
                yield result
        finally:  # drop the queued images, wait for the running ones
            pool.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------------------ fingerprints
def images_fingerprint(records: Sequence[ImageRecord], *, dataset: str, split: str, image_size: int,
                       max_pixels: int | None) -> str:
    """What a split's decoded pixels depend on: the image files named and the decoding settings."""
    h = hashlib.sha256(json.dumps({"dataset": dataset, "split": split, "image_size": image_size,
                                   "max_pixels": max_pixels, "version": VERSION}, sort_keys=True).encode())
    for r in records:
        h.update(json.dumps([r.image_id, r.path], ensure_ascii=False).encode("utf-8") + b"\n")
    return h.hexdigest()


# ---------------------------------------------------------------------------- writing
def write_split(
    records: Sequence[ImageRecord],
    path: str | Path,
    *,
    vocab: Vocabulary,
    image_dir: str | Path,
    image_size: int,
    max_len: int,
    dataset: str,
    split: str,
    workers: int = 1,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    strict: bool = False,
    flush_every: int = FLUSH_EVERY,
    progress: bool = True,
) -> dict[str, Any]:
    """Write (or resume, or reuse) one split's store at ``path`` with a given vocabulary.

    :func:`decode_split` then :func:`finish_split`; returns the split's report.
    """
    state = decode_split(records, path, image_dir=image_dir, image_size=image_size, dataset=dataset, split=split,
                         workers=workers, max_pixels=max_pixels, strict=strict, flush_every=flush_every,
                         progress=progress)
    return finish_split(records, path, state, vocab=vocab, max_len=max_len, dataset=dataset, split=split,
                        image_size=image_size)


def decode_split(
    records: Sequence[ImageRecord],
    path: str | Path,
    *,
    image_dir: str | Path,
    image_size: int,
    dataset: str,
    split: str,
    fingerprint: str | None = None,
    workers: int = 1,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    strict: bool = False,
    flush_every: int = FLUSH_EVERY,
    progress: bool = True,
) -> dict[str, Any]:
    """Step 1 and 2 of the module docstring: decode every image of the split into the partial store.

    Resumes from ``<path>.progress.json`` when it belongs to the same images
    (``fingerprint``, default :func:`images_fingerprint`); returns the progress record:
    ``records``, ``rows_written`` and ``problems`` (``{"index", "item", "reason", "kind"}``).
    """
    path, image_dir = Path(path), Path(image_dir)
    fp = fingerprint or images_fingerprint(records, dataset=dataset, split=split, image_size=image_size,
                                           max_pixels=max_pixels)
    store = resumable_store(path)
    state = _read_state(store, fp, len(records))
    say = tqdm.write if progress else (lambda _msg: None)
    if state is not None and state["decoded"]:
        if h5_attr(store.partial, "images_fingerprint") == fp or h5_attr(path, "images_fingerprint") == fp:
            return _checked(state, strict, image_dir, path, split)
        state = None
    if state is not None:
        if store.partial_matches("images_fingerprint", fp, "images", len(records)):
            _checked(state, strict, image_dir, path, split, partial=True)
            say(f"{path.name}: resuming at image {state['records_done']:,} of {len(records):,}")
        else:
            if store.partial.exists():
                say(f"{store.partial}: unreadable or from other inputs; starting {path.name} over")
            state = None
    if state is None:
        state = store.new_record(fp, records=len(records), records_done=0, rows_written=0, problems=[],
                                 decoded=False, complete=False)
        store.create({"images": _images_dataset(len(records), image_size)}, {"images_fingerprint": fp})
        store.write_progress(state)
    with h5py.File(store.partial, "r+", rdcc_nbytes=0) as f:  # whole chunks: no chunk cache needed
        _write_images(f, records, state, store, image_dir=image_dir, image_size=image_size,
                      max_pixels=max_pixels, workers=workers, strict=strict, flush_every=flush_every,
                      desc=f"{dataset}/{split}", progress=progress)
    state["decoded"] = True
    store.write_progress(state)
    return _checked(state, strict, image_dir, path, split)


def _checked(state: dict[str, Any], strict: bool, image_dir: Path, path: Path, split: str, *,
             partial: bool = False) -> dict[str, Any]:
    """Apply ``strict`` to problems met by an earlier run; refuse a split with no image left."""
    if strict and state["problems"]:
        p = state["problems"][0]
        raise InputProblem(f"{image_dir / p['item']}: {p['reason']} (--strict: bad input is fatal; an earlier "
                           "run without --strict skipped it)")
    if not partial and state["rows_written"] == 0:
        raise ValueError(f"{path}: every image of split {split!r} was skipped; see the reasons: "
                         f"{[p['item'] + ': ' + p['reason'] for p in state['problems'][:3]]}")
    return state


def _images_dataset(n: int, size: int) -> dict[str, Any]:
    """The ``images`` dataset of a partial store: one chunk per image, all allocated at creation (module doc)."""
    return {"shape": (n, 3, size, size), "dtype": np.uint8, "maxshape": (None, 3, size, size),
            "chunks": (1, 3, size, size)}


def _write_images(f: h5py.File, records: Sequence[ImageRecord], state: dict[str, Any], store: ResumableH5, *,
                  image_dir: Path, image_size: int, max_pixels: int | None, workers: int, strict: bool,
                  flush_every: int, desc: str, progress: bool) -> None:
    """Decode records[records_done:] and write their pixels, checkpointing ``state``."""
    images = f["images"]
    done, rows = state["records_done"], state["rows_written"]
    block: list[np.ndarray] = []

    # Checkpoints: pixels up to here are flushed to the OS now; the fsync and the progress
    # record that vouches for them follow in a background thread, in order, so decoding never
    # waits on the disk. The record is written only after its fsync: it never claims rows a
    # crash could lose.
    syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nic-checkpoint")
    pending: list[Future[None]] = []

    def checkpoint(records_done: int, *, wait: bool = False) -> None:
        nonlocal rows
        if block:
            images[rows: rows + len(block)] = np.stack(block)  # (b, 3, S, S)
            rows += len(block)
            block.clear()
        f.flush()
        state.update(records_done=records_done, rows_written=rows)
        pending.append(syncer.submit(store.checkpoint, f, json.dumps(state)))
        for job in [j for j in pending if wait or j.done()]:
            job.result()  # a failed fsync or progress write (disk full, ...) stops the run here
            pending.remove(job)

    paths = (r.path for r in records[done:])  # relative: decode_image keeps each one inside image_dir
    bar = tqdm(total=len(records), initial=done, desc=desc, unit="img", disable=not progress, smoothing=0.05)
    last = done
    decoded = contextlib.closing(decode_images(paths, image_size, max_pixels=max_pixels, workers=workers,
                                               root=image_dir))
    with syncer, bar, decoded as results:  # leaving waits for the checkpoints in flight
        for i, (pixels, problem) in enumerate(results, start=done):
            if problem is not None:
                kind, reason = problem
                if strict:
                    checkpoint(i, wait=True)  # keep the work done so far: a fixed input resumes here
                    raise InputProblem(f"{image_dir / records[i].path}: {reason} (--strict: bad input is fatal; "
                                       "leave --strict out to skip and report such images)")
                state["problems"].append({"index": i, "item": records[i].path, "reason": reason, "kind": kind})
                bar.set_postfix(skipped=len(state["problems"]), refresh=False)
            else:
                block.append(pixels)
                if len(block) == WRITE_BLOCK:
                    images[rows: rows + len(block)] = np.stack(block)  # (b, 3, S, S)
                    rows += len(block)
                    block.clear()
            bar.update()
            if i + 1 - last >= flush_every:
                checkpoint(i + 1)
                last = i + 1
        checkpoint(len(records), wait=True)


# ---------------------------------------------------------------------------- helpers
def _read_state(store: ResumableH5, fingerprint: str, n: int) -> dict[str, Any] | None:
    """The progress record if it belongs to these inputs and is consistent, else None."""
    state = store.read_progress(fingerprint)
    if state is None or state.get("records") != n:
        return None
    done, rows, problems = state.get("records_done"), state.get("rows_written"), state.get("problems")
    if not (isinstance(done, int) and isinstance(rows, int) and isinstance(problems, list) and 0 <= done <= n):
        return None
    if rows != done - sum(1 for p in problems if p.get("index", n) < done):
        return None
    state["problems"] = [p for p in problems if p["index"] < done]
    state["decoded"] = bool(state.get("decoded")) and done == n
    state["complete"] = bool(state.get("complete")) and state["decoded"]
    return state
