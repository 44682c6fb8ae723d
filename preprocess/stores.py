"""Write the HDF5 caption stores (schema: :mod:`nic.store`): streaming, parallel, resumable.

One split is written in two phases, each resumable:

**Decode** (:func:`decode_split`)

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

**Finish** (:func:`finish_split`, once the vocabulary is known)

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

Problems with the input never stop the run: a missing, truncated or undecodable image,
or one over the pixel limit, is skipped, counted and listed with its reason; with
``strict=True`` the first one is fatal instead (:class:`preprocess.karpathy.InputProblem`).
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

from nic.images import DEFAULT_MAX_PIXELS, ImageTooLarge, load_image
from nic.io import atomic_write_text
from nic.store import FORMAT, STR_DTYPE, VERSION
from nic.vocab import Vocabulary
from preprocess.karpathy import ImageRecord, InputProblem

WRITE_BLOCK = 32  # decoded images buffered before one HDF5 write
CAPTION_BLOCK = 4096  # images per block when the caption datasets are written
FLUSH_EVERY = 500  # records between progress checkpoints
IN_FLIGHT_PER_WORKER = 4  # images queued or being decoded per decoding thread
PROGRESS_FORMAT = "nic-store-progress"


def default_workers() -> int:
    """One decoding thread per available CPU core, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


# --------------------------------------------------------------------------- decoding
def decode_image(task: tuple[str, int, int | None]) -> tuple[np.ndarray | None, tuple[str, str] | None]:
    """``(path, size, max_pixels)`` -> ``(pixels (3, S, S), None)`` or ``(None, (kind, reason))``.

    Runs in the decoding threads; never raises for a bad image (the reason is returned).
    """
    path, size, max_pixels = task
    try:
        return load_image(path, size, max_pixels=max_pixels), None
    except FileNotFoundError:
        return None, ("missing_image", "image file not found")
    except ImageTooLarge as e:
        return None, ("image_too_large", f"image too large: {e}")
    except Exception as e:  # noqa: BLE001 - any decoder failure is this image's problem, not the run's
        return None, ("bad_image", f"cannot decode image: {str(e).strip() or type(e).__name__}")


def decode_images(paths: Iterable[str], size: int, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                  workers: int = 1) -> Iterator[tuple[np.ndarray | None, tuple[str, str] | None]]:
    """Decode ``paths`` in order with ``workers`` threads (1: in the calling thread).

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
            yield decode_image((path, size, max_pixels))
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
                pending.append(pool.submit(decode_image, (path, size, max_pixels)))

        try:
            submit(IN_FLIGHT_PER_WORKER * workers)
            while pending:
                result = pending.popleft().result()
                submit(1)
                yield result
        finally:  # drop the queued images, wait for the running ones
            pool.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------------------ fingerprints
def records_digest(records: Sequence[ImageRecord]) -> str:
    """sha256 of everything a store is made from in ``records`` (ids, paths, captions, meta)."""
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps([r.image_id, r.path, r.split, r.captions, r.meta], sort_keys=True,
                            ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def images_fingerprint(records: Sequence[ImageRecord], *, dataset: str, split: str, image_size: int,
                       max_pixels: int | None) -> str:
    """What a split's decoded pixels depend on: the image files named and the decoding settings."""
    h = hashlib.sha256(json.dumps({"dataset": dataset, "split": split, "image_size": image_size,
                                   "max_pixels": max_pixels, "version": VERSION}, sort_keys=True).encode())
    for r in records:
        h.update(json.dumps([r.image_id, r.path], ensure_ascii=False).encode("utf-8") + b"\n")
    return h.hexdigest()


def store_fingerprint(records: Sequence[ImageRecord], images_fp: str, vocab: Vocabulary, max_len: int) -> str:
    """What a whole store depends on: its pixels, captions and metadata, vocabulary and max_len."""
    text = json.dumps({"images": images_fp, "records": records_digest(records), "vocab": vocab.hash(),
                       "max_len": max_len}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def progress_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(f"{path.name}.progress.json")


def partial_store_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(f"{path.name}.partial")


def kept_indices(state: dict[str, Any]) -> list[int]:
    """Positions of the records whose images were written, in row order."""
    skipped = {p["index"] for p in state["problems"]}
    return [i for i in range(state["records"]) if i not in skipped]


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
    state_file, partial = progress_path(path), partial_store_path(path)
    state = _read_state(state_file, fp, len(records))
    say = tqdm.write if progress else (lambda _msg: None)
    if state is not None and state["decoded"]:
        if h5_attr(partial, "images_fingerprint") == fp or h5_attr(path, "images_fingerprint") == fp:
            return _checked(state, strict, image_dir, path, split)
        state = None
    if state is not None:
        try:
            with h5py.File(partial, "r") as f:
                ok = f.attrs.get("images_fingerprint") == fp and f["images"].shape[0] == len(records)
        except (OSError, KeyError):
            ok = False
        if ok:
            _checked(state, strict, image_dir, path, split, partial=True)
            say(f"{path.name}: resuming at image {state['records_done']:,} of {len(records):,}")
        else:
            if partial.exists():
                say(f"{partial}: unreadable or from other inputs; starting {path.name} over")
            state = None
    if state is None:
        state = {"format": PROGRESS_FORMAT, "fingerprint": fp, "records": len(records), "records_done": 0,
                 "rows_written": 0, "problems": [], "decoded": False, "complete": False}
        _create_partial(partial, len(records), image_size, fp)
        atomic_write_text(state_file, json.dumps(state))
    with h5py.File(partial, "r+", rdcc_nbytes=0) as f:  # whole chunks: no chunk cache needed
        _write_images(f, records, state, state_file, image_dir=image_dir, image_size=image_size,
                      max_pixels=max_pixels, workers=workers, strict=strict, flush_every=flush_every,
                      desc=f"{dataset}/{split}", progress=progress)
    state["decoded"] = True
    atomic_write_text(state_file, json.dumps(state))
    return _checked(state, strict, image_dir, path, split)


def finish_split(records: Sequence[ImageRecord], path: str | Path, state: dict[str, Any], *, vocab: Vocabulary,
                 max_len: int, dataset: str, split: str, image_size: int) -> dict[str, Any]:
    """Step 3: write captions and metadata into the decoded store, then rename it into place.

    A finished store of the same images whose captions, vocabulary or ``max_len`` changed
    is moved back to its partial name and re-captioned: its pixels are not decoded again.
    Returns the split report: ``images``, ``captions``, ``captions_truncated`` (longer than
    ``max_len``: stored truncated, kept whole in ``references``), ``images_skipped``,
    ``skipped`` (number of problems) and ``skipped_items`` (``{"item", "reason", "kind"}``).
    """
    path = Path(path)
    state_file, partial = progress_path(path), partial_store_path(path)
    store_fp = store_fingerprint(records, state["fingerprint"], vocab, max_len)
    if state["complete"] and state.get("store_fingerprint") == store_fp:
        if partial.exists():  # finished, but killed before the rename
            os.replace(partial, path)
        if h5_attr(path, "fingerprint") == store_fp:
            return state["report"]
    if state["complete"]:  # from now on the old report and fingerprint are void
        state.update(complete=False, store_fingerprint=None, report=None)
        atomic_write_text(state_file, json.dumps(state))
    if not partial.exists():
        if h5_attr(path, "images_fingerprint") != state["fingerprint"]:
            raise RuntimeError(f"{path}: no decoded images to finish; delete {state_file} and re-run")
        os.replace(path, partial)  # re-caption a finished store: keep its pixels
    with h5py.File(partial, "r+") as f:
        report = _finish(f, records, state, vocab=vocab, max_len=max_len, dataset=dataset, split=split,
                         image_size=image_size, fingerprint=store_fp)
    _fsync(partial)
    state.update(complete=True, store_fingerprint=store_fp, report=report)
    atomic_write_text(state_file, json.dumps(state))
    os.replace(partial, path)
    return report


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


def _create_partial(partial: Path, n: int, size: int, fingerprint: str) -> None:
    """A fresh partial store whose ``images`` chunks are all allocated now (see the module doc)."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    with h5py.File(partial, "w") as f:
        f.create_dataset("images", (n, 3, size, size), np.uint8, maxshape=(None, 3, size, size),
                         chunks=(1, 3, size, size), dcpl=dcpl, track_times=False)
        f.attrs["images_fingerprint"] = fingerprint
    _fsync(partial)


def _write_images(f: h5py.File, records: Sequence[ImageRecord], state: dict[str, Any], state_file: Path, *,
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

    def sync_and_record(text: str) -> None:
        _fsync_handle(f)
        atomic_write_text(state_file, text)

    def checkpoint(records_done: int, *, wait: bool = False) -> None:
        nonlocal rows
        if block:
            images[rows: rows + len(block)] = np.stack(block)  # (b, 3, S, S)
            rows += len(block)
            block.clear()
        f.flush()
        state.update(records_done=records_done, rows_written=rows)
        pending.append(syncer.submit(sync_and_record, json.dumps(state)))
        for job in [j for j in pending if wait or j.done()]:
            job.result()  # a failed fsync or progress write (disk full, ...) stops the run here
            pending.remove(job)

    paths = (str(image_dir / r.path) for r in records[done:])
    bar = tqdm(total=len(records), initial=done, desc=desc, unit="img", disable=not progress, smoothing=0.05)
    last = done
    decoded = contextlib.closing(decode_images(paths, image_size, max_pixels=max_pixels, workers=workers))
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


def _finish(f: h5py.File, records: Sequence[ImageRecord], state: dict[str, Any], *, vocab: Vocabulary,
            max_len: int, dataset: str, split: str, image_size: int, fingerprint: str) -> dict[str, Any]:
    """Write the per-image and per-caption datasets and the attributes; return the split report."""
    if "fingerprint" in f.attrs:  # a half-rewritten file must never carry a finished store's fingerprint
        del f.attrs["fingerprint"]
        f.flush()
    kept = kept_indices(state)
    n = len(kept)
    if n != state["rows_written"]:
        raise RuntimeError(f"internal error: {n} images kept but {state['rows_written']} rows written")
    f["images"].resize(n, axis=0)
    m = sum(len(records[i].captions) for i in kept)
    width = max_len + 2
    for name in ("image_ids", "filenames", "image_meta", "captions", "caption_lengths", "caption_image",
                 "references"):
        if name in f:  # an earlier attempt died while finishing
            del f[name]
    ds = {
        "image_ids": f.create_dataset("image_ids", (n,), np.int64, track_times=False),
        "filenames": f.create_dataset("filenames", (n,), STR_DTYPE, track_times=False),
        "image_meta": f.create_dataset("image_meta", (n,), STR_DTYPE, track_times=False),
        "captions": f.create_dataset("captions", (m, width), np.int32, chunks=(min(max(m, 1), 8192), width),
                                     track_times=False),
        "caption_lengths": f.create_dataset("caption_lengths", (m,), np.int32, track_times=False),
        "caption_image": f.create_dataset("caption_image", (m,), np.int32, track_times=False),
        "references": f.create_dataset("references", (m,), STR_DTYPE, track_times=False),
    }
    row = cap = n_trunc = 0
    for start in range(0, n, CAPTION_BLOCK):
        block = [records[i] for i in kept[start: start + CAPTION_BLOCK]]
        ds["image_ids"][row: row + len(block)] = np.array([r.image_id for r in block], dtype=np.int64)
        ds["filenames"][row: row + len(block)] = [r.path for r in block]
        ds["image_meta"][row: row + len(block)] = [json.dumps(r.meta, ensure_ascii=False) for r in block]
        tokens = [(row + j, t) for j, r in enumerate(block) for t in r.captions]
        ids = np.zeros((len(tokens), width), dtype=np.int32)  # (b, L), <pad> = 0
        lengths = np.zeros(len(tokens), dtype=np.int32)
        for k, (_, t) in enumerate(tokens):
            n_trunc += len(t) > max_len
            encoded = vocab.encode(t[:max_len])
            ids[k, : len(encoded)] = encoded
            lengths[k] = len(encoded)
        ds["captions"][cap: cap + len(tokens)] = ids
        ds["caption_lengths"][cap: cap + len(tokens)] = lengths
        ds["caption_image"][cap: cap + len(tokens)] = np.array([img for img, _ in tokens], dtype=np.int32)
        ds["references"][cap: cap + len(tokens)] = [" ".join(t) for _, t in tokens]
        row += len(block)
        cap += len(tokens)
    uid = hashlib.sha256(f"uid:{fingerprint}".encode()).hexdigest()[:32]
    f.attrs.update(format=FORMAT, version=VERSION, dataset=dataset, split=split, image_size=image_size,
                   max_len=max_len, vocab_hash=vocab.hash(), uid=uid, num_images=n, num_captions=m,
                   fingerprint=fingerprint)
    f.flush()
    items = [{"item": p["item"], "reason": p["reason"], "kind": p["kind"]} for p in state["problems"]]
    return {"split": split, "images": n, "captions": m, "captions_truncated": n_trunc,
            "images_skipped": len(records) - n, "skipped": len(items), "skipped_items": items}


# ---------------------------------------------------------------------------- helpers
def _read_state(state_file: Path, fingerprint: str, n: int) -> dict[str, Any] | None:
    """The progress record if it belongs to these inputs and is consistent, else None."""
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or state.get("format") != PROGRESS_FORMAT \
            or state.get("fingerprint") != fingerprint or state.get("records") != n:
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


def h5_attr(path: Path, name: str) -> Any:
    """An attribute of an HDF5 file, or None when the file or attribute is missing or unreadable."""
    if not path.exists():
        return None
    try:
        with h5py.File(path, "r") as f:
            value = f.attrs.get(name)
    except OSError:
        return None
    return value.item() if isinstance(value, np.generic) else value


def _fsync_handle(f: h5py.File) -> None:
    with contextlib.suppress(Exception):
        os.fsync(f.id.get_vfd_handle())


def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError), open(path, "rb+") as fh:
        os.fsync(fh.fileno())

