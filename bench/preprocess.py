"""Preprocessing throughput and peak memory: nic's store writer against a plain loop.

    python bench/preprocess.py                          # N = 500 and 2000, S = 224
    python bench/preprocess.py --n 500 2000 --update-docs

N photo-like 640x480 JPEGs (quality 90, ~100-150 kB each like COCO's: smooth colour fields,
shapes, edges and sensor-like noise; every image different) are generated once into
``--data-dir`` and reused. Each measurement then runs in a fresh child process:

* ``plain``: one process; ``Image.open(p).convert("RGB").resize((S, S), BICUBIC)`` at full
  size and one HDF5 write per image (same chunked layout), the file fsynced at the end
  like nic's (the same bytes reach the disk in both) - the loop most captioning
  repositories run;
* ``nic, 1 thread``: :func:`preprocess.stores.write_split` with ``workers=1`` (JPEG draft
  mode decoding, no decoding threads): what draft mode alone buys;
* ``nic, W threads``: the same with W decoding threads (the default: one per core).

Each row reports images/s over the whole write (thread start-up, checkpoints with fsync
and the caption datasets included), the speed-up over ``plain`` at the same N, and the peak
RSS of the measurement: the child's own ``VmHWM`` from /proc (``ru_maxrss`` would also count
the bench's memory copied at fork), or the summed RSS of the child and any processes it
starts (sampled from /proc every 100 ms) when that is higher. The CPU time other processes
used during each run is measured too (/proc/stat); a warning says when it was more than a
fifth of a core during a run that was kept. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import h5py
import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402
from nic.vocab import Vocabulary  # noqa: E402
from preprocess.karpathy import ImageRecord  # noqa: E402
from preprocess.stores import default_workers, write_split  # noqa: E402

W, H = 640, 480


# ------------------------------------------------------------------------- test images
def generate(data_dir: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` different photo-like JPEGs in ``data_dir`` (existing ones are reused)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    paths = [data_dir / f"{i:06d}.jpg" for i in range(n)]
    todo = [i for i, p in enumerate(paths) if not p.exists()]
    if not todo:
        return paths
    rng = np.random.default_rng(seed)
    # a few large smooth colour fields (low-frequency noise, upsampled), cropped differently per image
    fields = []
    for _ in range(6):
        low = rng.uniform(0, 255, (12, 16, 3)).astype(np.uint8)
        fields.append(np.asarray(Image.fromarray(low).resize((2 * W, 2 * H), Image.BICUBIC), dtype=np.int16))
    noise = rng.normal(0, 9, (2 * H, 2 * W, 3)).astype(np.int16)
    for i in todo:
        r = np.random.default_rng(seed * 1_000_003 + i)
        y, x = int(r.integers(0, H)), int(r.integers(0, W))
        base = fields[int(r.integers(len(fields)))][y: y + H, x: x + W]
        ny, nx = int(r.integers(0, H)), int(r.integers(0, W))
        img = Image.fromarray((base + noise[ny: ny + H, nx: nx + W]).clip(0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(int(r.integers(4, 12))):  # objects with edges
            x0, y0 = int(r.integers(-100, W)), int(r.integers(-100, H))
            box = [x0, y0, x0 + int(r.integers(20, 300)), y0 + int(r.integers(20, 300))]
            colour = tuple(int(c) for c in r.integers(0, 256, 3))
            (draw.ellipse if r.random() < 0.5 else draw.rectangle)(box, fill=colour)
        ny, nx = int(r.integers(0, H)), int(r.integers(0, W))  # texture on the objects too
        arr = np.asarray(img, dtype=np.int16) + noise[ny: ny + H, nx: nx + W] // 2
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(paths[i], quality=90)
    return paths


# ------------------------------------------------------------------------ measurements
def run_plain(paths: list[Path], out: Path, size: int) -> None:
    """The baseline: full-size decode, resize, one write per image, one process."""
    with h5py.File(out, "w") as f:
        ds = f.create_dataset("images", (len(paths), 3, size, size), np.uint8, chunks=(1, 3, size, size))
        for i, p in enumerate(paths):
            with Image.open(p) as im:
                arr = np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC))
            ds[i] = arr.transpose(2, 0, 1)
        f.flush()
        os.fsync(f.id.get_vfd_handle())  # on disk when done, as nic's writer guarantees


def run_nic(paths: list[Path], out: Path, size: int, workers: int) -> None:
    records = [ImageRecord(image_id=i, path=p.name, split="train", captions=[["a", "photo"]])
               for i, p in enumerate(paths)]
    vocab = Vocabulary.build([["a", "photo"]], min_count=1)
    write_split(records, out, vocab=vocab, image_dir=paths[0].parent, image_size=size, max_len=20,
                dataset="bench", split="train", workers=workers, progress=False)


def tree_rss_mib(root_pid: int) -> float:
    """Summed RSS of ``root_pid`` and all its descendants (Linux /proc; cheap: no full /proc scan)."""
    total_kib, frontier, seen = 0, [root_pid], set()
    while frontier:
        pid = frontier.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            with open(f"/proc/{pid}/status") as fh:
                total_kib += next((int(line.split()[1]) for line in fh if line.startswith("VmRSS:")), 0)
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as fh:
                    frontier += [int(c) for c in fh.read().split()]
        except (OSError, ValueError):
            continue
    return total_kib / 1024


def child_main(args: argparse.Namespace) -> None:
    """One measurement, in its own process; prints a JSON line."""
    paths = [Path(args.data_dir) / f"{i:06d}.jpg" for i in range(args.n[0])]
    peak = 0.0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, tree_rss_mib(os.getpid()))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = Path(args.out) / "store.h5"
    busy0, own0 = busy_cpu_seconds(), os.times()
    start = time.perf_counter()
    if args.child == "plain":
        run_plain(paths, out, args.size)
    else:
        run_nic(paths, out, args.size, args.workers)
    seconds = time.perf_counter() - start
    busy1, own1 = busy_cpu_seconds(), os.times()
    stop.set()
    sampler.join()
    with open("/proc/self/status") as fh:  # high-water mark of this process since exec
        hwm = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024
    own = sum(own1[:4]) - sum(own0[:4])  # user + system, this process and its reaped children
    print(json.dumps({"seconds": seconds, "peak_mib": max(peak, hwm),
                      "other_cores": max(0.0, (busy1 - busy0 - own) / seconds)}))


def busy_cpu_seconds() -> float:
    """CPU time the whole machine has spent busy since boot (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as fh:
        ticks = [int(t) for t in fh.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def measure(mode: str, n: int, args: argparse.Namespace, workers: int = 1) -> dict[str, float]:
    """The best of ``--repeat`` runs (fastest; its memory figures), each in a fresh child process."""
    runs = [measure_once(mode, n, args, workers) for _ in range(args.repeat)]
    return max(runs, key=lambda r: r["images_per_s"])


def measure_once(mode: str, n: int, args: argparse.Namespace, workers: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(dir=args.tmp_dir) as tmp:
        cmd = [sys.executable, __file__, "--child", mode, "--n", str(n), "--data-dir", str(args.data_dir),
               "--size", str(args.size), "--workers", str(workers), "--out", tmp]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        if proc.returncode:
            raise SystemExit(f"measurement {mode} N={n} failed ({proc.returncode})")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["images_per_s"] = n / result["seconds"]
    return result


def markdown(rows: list[dict]) -> str:
    lines = ["| pipeline | N | images/s | vs plain | peak RSS (MiB) |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['n']} | {r['images_per_s']:.0f} | {r['speedup']:.1f}x | "
                     f"{r['peak_mib']:.0f} |")
    return "\n".join(lines)


def update_docs(path: Path, section: str) -> None:
    """Replace (or add) the ``## Preprocessing`` section of ``path``; other sections are left alone."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "## Preprocessing"), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        new = "\n".join(lines[:start] + section.rstrip("\n").splitlines() + ([""] + lines[end:] if end < len(lines)
                                                                              else [])) + "\n"
    path.write_text(new, encoding="utf-8")


def docs_section(args: argparse.Namespace, sizes: list[int], table: str) -> str:
    """The ``## Preprocessing`` section of docs/benchmarks.md: how it was measured, and the table."""
    import PIL

    return (
        "## Preprocessing\n\n"
        f"`python bench/preprocess.py --n {' '.join(map(str, args.n))}` (best of {args.repeat} runs) on this "
        f"machine ({os.cpu_count()} CPU "
        f"cores, Pillow {PIL.__version__}): writing a store of S = {args.size} images from {W}x{H} JPEGs "
        f"(quality 90, mean {np.mean(sizes) / 1024:.0f} kB, all different). `plain` decodes each JPEG at full "
        "size, resizes and writes it in one process; `nic` is `preprocess.stores.write_split` (JPEG draft-mode "
        "decoding, then decoding threads). Images/s over the whole write; memory as the peak RSS (one process: "
        "the decoding threads share it). Both pipelines fsync the store before they stop. Memory for pixels "
        "does not grow with N: images stream through in blocks, and a fixed number of images is in flight to "
        "the decoding threads; what grows is bookkeeping, ~1-2 kB an image (the records, HDF5's index of the "
        "image chunks). Most of the gain of one thread comes from draft-mode decoding (a 640x480 JPEG is "
        "decoded at 320x240, so both the decode and the resize do less work). The decoding threads run in "
        "parallel because Pillow releases the GIL while it decodes and while it resizes (~85% of the CPU time "
        "of an image); unlike the process pool nic used before, they start at once and hand pixels over "
        "without copies, so the speed-up no longer depends on N (the pool took ~0.25 s to start, a quarter "
        "of a run at N = 500, and copied every image through shared memory: 2.6x at N = 500, 3.7x at "
        "N = 2000). The rest of the work (file parsing, array conversion, the HDF5 writes: ~0.5 ms an image) "
        "holds the GIL, which bounds the threads at roughly 2,000 images/s however many cores (estimated "
        "from a profile, not measured here). On a shared virtual machine the figures move by "
        "10-15% from run to run.\n\n" + table + "\n"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=[500, 2000], help="numbers of images (default: 500 2000)")
    p.add_argument("--size", type=int, default=224, help="stored image side (default: %(default)s)")
    p.add_argument("--workers", type=int, default=0, help="decoding threads; 0: one per core (default)")
    p.add_argument("--repeat", type=int, default=3, help="runs per measurement, the fastest is kept (default: 3)")
    p.add_argument("--data-dir", default=str(Path(tempfile.gettempdir()) / "nic-bench-jpegs"),
                   help="where the generated JPEGs are kept (default: %(default)s)")
    p.add_argument("--tmp-dir", default=None, help="where the stores are written (default: the system's)")
    p.add_argument("--update-docs", action="store_true", help="write the table into docs/benchmarks.md")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child_main(args)
        return
    workers = args.workers or default_workers()
    t = time.perf_counter()
    paths = generate(Path(args.data_dir), max(args.n))
    sizes = [p.stat().st_size for p in paths[: max(args.n)]]
    print(f"{max(args.n)} JPEGs {W}x{H} in {args.data_dir} (mean {np.mean(sizes) / 1024:.0f} kB; "
          f"ready in {time.perf_counter() - t:.0f} s); {os.cpu_count()} CPU cores, S = {args.size}", file=sys.stderr)
    rows = []
    for n in args.n:
        plain = measure("plain", n, args)
        rows.append({"name": "plain (full decode, 1 process)", "n": n, **plain, "speedup": 1.0})
        for name, w in (("nic, 1 thread (draft decode)", 1), (f"nic, {workers} threads", workers)):
            r = measure("nic", n, args, workers=w)
            rows.append({"name": name, "n": n, **r, "speedup": r["images_per_s"] / plain["images_per_s"]})
        print(f"N = {n} done", file=sys.stderr)
    table = markdown(rows)
    print(table)
    print(describe())
    other = max(r["other_cores"] for r in rows)
    if other > 0.2:
        print(f"warning: other processes kept {other:.1f} of {os.cpu_count()} CPU cores busy during some of the kept "
              "runs: these figures are not those of an idle machine", file=sys.stderr)
    if args.update_docs:
        update_docs(ROOT / "docs" / "benchmarks.md", docs_section(args, sizes, table))
        print("updated docs/benchmarks.md", file=sys.stderr)


if __name__ == "__main__":
    main()
