"""Captioning latency where users wait: the cold start of ``caption.py`` and captioning many photos.

    flock /tmp/nic_cpu.lock python bench/latency.py                    # ~3 minutes on 2 CPU cores
    python bench/latency.py --repeats 7 --photos 100 --per-photo 20

Every figure comes from fresh processes (``subprocess``), timed from start to exit, with the
peak memory (max RSS) the kernel reports for that process (``os.wait4``):

* cold start: a bare ``python -c "import torch"`` and ``python caption.py --img tests/data/cat.jpg``
  (the shipped model, beam 20), alternating, ``--repeats`` times each; the medians and their ratio;
  also ``caption.main`` run with the interpreter's ordinary exit, which caption.py skips;
* many photos: ``--photos`` Flickr8k val photos in one ``caption.py`` call, against one call per
  photo (timed on the first ``--per-photo`` of them; each call is independent) in photos/s, and
  whether the two print the same captions; the one-call run again with ``--int8``.

Each figure is printed beside its limit (issue #17); nothing is asserted. The machine line is
:func:`bench.machine.describe`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as `python bench/latency.py`

from bench.machine import describe  # noqa: E402

PHOTO = "tests/data/cat.jpg"
# caption.py's main() with the interpreter's ordinary exit (caption.py itself skips torch's teardown: exit_now)
TEARDOWN = "import sys, caption; caption.main(sys.argv[1:])"
LIMITS = {"cold": 1.3, "rss_mb": 500, "speedup": 3.0}  # issue #17's acceptance points


def run(args: list[str]) -> tuple[float, float, str]:
    """Run ``python args`` in ROOT: (wall seconds, peak RSS in MB, stdout); raises on a failure."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=err)
        out = proc.stdout.read()  # to the end: the child has exited (reaped below, with its own rusage)
        proc.stdout.close()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        if code != 0:
            err.seek(0)
            raise RuntimeError(f"python {' '.join(args)}: exit {code}\n{err.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024, out.decode()


def val_photos(n: int) -> list[str]:
    """The first ``n`` Flickr8k val photos (Karpathy split, file-name order), relative to ROOT."""
    root = ROOT / "data" / "flickr8k"
    images = json.loads((root / "dataset_flickr8k.json").read_text())["images"]
    names = sorted(im["filename"] for im in images if im["split"] == "val")[:n]
    if len(names) < n:
        raise SystemExit(f"{root}: {len(names)} val photos, {n} asked for")
    return [str((root / "Flicker8k_Dataset" / name).relative_to(ROOT)) for name in names]


def cold_start(repeats: int) -> dict[str, list[tuple[float, float]]]:
    """(wall s, peak RSS MB) of each repeat of a bare torch import and of caption.py on one photo, alternating."""
    runs: dict[str, list[tuple[float, float]]] = {"torch": [], "caption": [], "teardown": []}
    for _ in range(repeats):
        runs["torch"].append(run(["-c", "import torch"])[:2])
        runs["caption"].append(run(["caption.py", "--img", PHOTO])[:2])
        runs["teardown"].append(run(["-c", TEARDOWN, "--img", PHOTO])[:2])
    return runs


def many_photos(photos: list[str], per_photo: int) -> dict[str, object]:
    """photos/s of one call over every photo, of one call per photo (the first ``per_photo``), int8 in one call."""
    one_wall, one_rss, one_out = run(["caption.py", "--img", *photos])
    lines = one_out.splitlines()
    single_wall, single_lines = 0.0, []
    for photo in photos[:per_photo]:
        wall, _, out = run(["caption.py", "--img", photo])
        single_wall += wall
        single_lines += out.splitlines()
    int8_wall, int8_rss, int8_out = run(["caption.py", "--int8", "--img", *photos])
    changed = sum(a != b for a, b in zip(lines, int8_out.splitlines()))
    return {"one_call": len(photos) / one_wall, "one_wall": one_wall, "one_rss": one_rss,
            "per_photo": per_photo / single_wall, "single_wall": single_wall,
            "same": single_lines == lines[:per_photo] and len(lines) == len(photos),
            "int8": len(photos) / int8_wall, "int8_wall": int8_wall, "int8_rss": int8_rss, "int8_changed": changed}


def report(cold: dict[str, list[tuple[float, float]]], many: dict[str, object], n: int, per_photo: int) -> None:
    torch_s, caption_s = (statistics.median(w for w, _ in cold[k]) for k in ("torch", "caption"))
    torch_mb, caption_mb = (max(m for _, m in cold[k]) for k in ("torch", "caption"))
    ratio = caption_s / torch_s
    speedup = many["one_call"] / many["per_photo"]

    def verdict(ok: bool) -> str:
        return "meets" if ok else "MISSES"

    repeats = len(cold["torch"])
    print(f"\ncold start, fresh processes, median of {repeats} (all: wall s / peak MB)")
    print(f"  python -c 'import torch'           {torch_s:6.2f} s   peak {torch_mb:5.0f} MB   "
          f"{' '.join(f'{w:.2f}/{m:.0f}' for w, m in cold['torch'])}")
    print(f"  python caption.py --img {PHOTO}  {caption_s:6.2f} s   peak {caption_mb:5.0f} MB   "
          f"{' '.join(f'{w:.2f}/{m:.0f}' for w, m in cold['caption'])}")
    teardown_s, teardown_mb = statistics.median(w for w, _ in cold["teardown"]), max(m for _, m in cold["teardown"])
    print(f"  the same, ordinary interpreter exit   {teardown_s:6.2f} s   peak {teardown_mb:5.0f} MB   "
          f"{' '.join(f'{w:.2f}/{m:.0f}' for w, m in cold['teardown'])}   (python -c '{TEARDOWN}' --img {PHOTO})")
    print(f"  caption.py / import torch: {ratio:.2f}x   limit {LIMITS['cold']}x   {verdict(ratio <= LIMITS['cold'])}")
    print(f"  caption.py peak memory: {caption_mb:.0f} MB   limit {LIMITS['rss_mb']} MB   "
          f"{verdict(caption_mb <= LIMITS['rss_mb'])}   (a bare import torch: {torch_mb:.0f} MB)")
    print(f"\n{n} Flickr8k val photos (beam 20)")
    print(f"  one call, {n} photos:        {many['one_call']:6.2f} photos/s   ({many['one_wall']:.1f} s, "
          f"peak {many['one_rss']:.0f} MB)")
    print(f"  one call per photo ({per_photo} calls): {many['per_photo']:6.2f} photos/s   "
          f"({many['single_wall']:.1f} s)")
    print(f"  speed-up: {speedup:.1f}x   limit >= {LIMITS['speedup']}x   {verdict(speedup >= LIMITS['speedup'])}   "
          f"same captions: {'yes' if many['same'] else 'NO'}")
    print(f"  one call, {n} photos, --int8: {many['int8']:6.2f} photos/s   ({many['int8_wall']:.1f} s, "
          f"peak {many['int8_rss']:.0f} MB; {many['int8_changed']} of {n} captions differ from float32)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="cold starts of each kind (default: %(default)s)")
    p.add_argument("--photos", type=int, default=100, help="photos in the one-call run (default: %(default)s)")
    p.add_argument("--per-photo", type=int, default=10,
                   help="of those, how many to time one call each (default: %(default)s)")
    a = p.parse_args(argv)
    print(describe())
    photos = val_photos(a.photos)
    cold = cold_start(a.repeats)
    many = many_photos(photos, min(a.per_photo, a.photos))
    report(cold, many, a.photos, min(a.per_photo, a.photos))


if __name__ == "__main__":
    main()
