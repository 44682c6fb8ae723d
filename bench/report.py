"""Benchmark the evaluation report's results-file path, and measure tokenizer agreement.

    python bench/report.py                          # 5,000 images x 5 references: time the whole path
    python bench/report.py --images 40000 --all-metrics
    python bench/report.py --agreement data/shapes/dataset_shapes.json   # coco_tokenize vs the Java tokenizer

**Timing.** Writes a caption-like corpus (bench/bleu.py's generator: each image a scene with
varied references, the hypothesis a perturbed description) as a COCO results file plus a
Karpathy split file and a COCO captions file, then times
:func:`eval.bleu_report.evaluate_results` on each: read and validate both JSON files, match
ids, tokenize every caption with ``coco_tokenize`` (its cache cleared first), corpus and
per-image BLEU, diversity and novelty, the "human" row. ``--all-metrics`` adds ROUGE-L,
CIDEr and METEOR (its Java start-up included). A second table times the same path as a
fresh ``python -m eval.bleu_report`` process (interpreter start and imports included).

**Agreement.** For every caption of the given Karpathy/COCO files (and the realistic
captions in tests/test_bleu.py and tests/test_report.py, and the benchmark's own
caption-like corpus), compares :func:`eval.coco_tokenize.coco_tokenize` with the
toolkit's Java PTBTokenizer, run the way the toolkit runs it (all captions in one process,
one per line), and prints how many agree and the first differences.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bleu import make_corpus  # noqa: E402  (bench/bleu.py)
from machine import describe  # noqa: E402  (bench/machine.py)

from eval import coco_tokenize as tokenize_module  # noqa: E402
from eval.bleu_report import evaluate_results  # noqa: E402
from eval.coco_tokenize import coco_tokenize, ptb_tokenize_java  # noqa: E402
from eval.results import read_references, write_results  # noqa: E402


def write_corpus(folder: Path, images: int, refs: int, seed: int) -> dict[str, Path]:
    """The corpus as a results file, a Karpathy split file and a COCO captions file."""
    hyps, references = make_corpus(images, refs, seed)
    ids = [100000 + k for k in hyps]
    paths = {"results": folder / "results.json", "karpathy": folder / "dataset_bench.json",
             "coco": folder / "captions_bench.json"}
    write_results(paths["results"], ids, [hyps[k] for k in hyps])
    entries = [{"filename": f"{i}.jpg", "imgid": k, "cocoid": i, "split": "test",
                "sentences": [{"raw": r} for r in references[k]]} for k, i in zip(hyps, ids)]
    paths["karpathy"].write_text(json.dumps({"dataset": "bench", "images": entries}))
    coco = {"images": [{"id": i, "file_name": f"{i}.jpg"} for i in ids],
            "annotations": [{"image_id": i, "id": j * refs + n, "caption": r}
                            for j, (k, i) in enumerate(zip(hyps, ids)) for n, r in enumerate(references[k])]}
    paths["coco"].write_text(json.dumps(coco))
    return paths


def time_in_process(paths: dict[str, Path], metrics: list[str], repeat: int) -> None:
    print(f"\nin-process evaluate_results, metrics {','.join(metrics)}, best of {repeat} (seconds)\n")
    phases = ["read", "tokenize", *metrics]
    print("| references | total | " + " | ".join(phases) + " | BLEU-4 |")
    print("|---|" + "---:|" * (len(phases) + 2))
    for kind in ("karpathy", "coco"):
        best, report = float("inf"), None
        for _ in range(repeat):
            tokenize_module._coco_tokenize.cache_clear()
            start = time.perf_counter()
            report = evaluate_results(paths["results"], paths[kind], metrics=metrics)
            best = min(best, time.perf_counter() - start)
        sec = report["seconds"]
        cells = " | ".join(f"{sec.get(p, 0.0):.2f}" for p in phases)
        print(f"| {kind} | {best:.2f} | {cells} | {report['results'][0]['bleu']['BLEU-4']:.4f} |")


def time_cli(paths: dict[str, Path], metrics: list[str]) -> None:
    print(f"\nfresh process: python -m eval.bleu_report --results ... --metrics {','.join(metrics)} (seconds)\n")
    print("| references | wall |\n|---|---:|")
    for kind in ("karpathy", "coco"):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "eval.bleu_report", "--results", str(paths["results"]),
                        "--references", str(paths[kind]), "--metrics", ",".join(metrics)],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        print(f"| {kind} | {time.perf_counter() - start:.2f} |")


def agreement(files: list[str], show: int = 10) -> None:
    sets: list[tuple[str, list[str]]] = []
    for f in files:
        refs = read_references(f)
        sets.append((f, [c for caps in refs.captions.values() for c in caps]))
    sys.path.insert(0, str(ROOT / "tests"))  # the test modules' captions, only for this measurement
    from test_bleu import REALISTIC_CAPTIONS
    from test_report import RESULTS, TEST_REFS

    sets.append(("tests/test_bleu.py REALISTIC_CAPTIONS", list(REALISTIC_CAPTIONS)))
    sets.append(("tests/test_report.py captions", [c for caps in TEST_REFS.values() for c in caps]
                 + list(RESULTS.values())))
    hyps, refs = make_corpus(5000, 5, 0)
    sets.append(("bench corpus (5,000 x (5 refs + 1 hyp))", [c for k in hyps for c in (*refs[k], hyps[k])]))
    print("\ncoco_tokenize vs the toolkit's Java PTBTokenizer (all captions in one Java run, as the toolkit does)\n")
    print("| captions | n | identical | share | seconds (python) | seconds (java) |\n|---|---:|---:|---:|---:|---:|")
    differences = []
    for name, captions in sets:
        start = time.perf_counter()
        ours = [coco_tokenize(c) for c in captions]
        t_py = time.perf_counter() - start
        start = time.perf_counter()
        java = [c.split() for c in ptb_tokenize_java({0: captions})[0]]
        t_java = time.perf_counter() - start
        same = sum(a == b for a, b in zip(ours, java))
        differences += [(name, c, a, b) for c, a, b in zip(captions, ours, java) if a != b]
        print(f"| {name} | {len(captions)} | {same} | {same / max(len(captions), 1):.4%} | {t_py:.2f} | "
              f"{t_java:.2f} |")
    for name, caption, a, b in differences[:show]:
        print(f"\n{name}: {caption!r}\n  coco_tokenize: {a}\n  java:          {b}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=5000, help="number of images (default 5000)")
    p.add_argument("--refs", type=int, default=5, help="references per image (default 5)")
    p.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    p.add_argument("--repeat", type=int, default=3, help="runs per measurement; the fastest counts (default 3)")
    p.add_argument("--all-metrics", action="store_true", help="also time ROUGE-L, CIDEr and METEOR")
    p.add_argument("--agreement", nargs="*", metavar="FILE.json", default=None,
                   help="instead: tokenizer agreement on these Karpathy/COCO files (+ the test captions)")
    a = p.parse_args(argv)
    if a.agreement is not None:
        agreement(a.agreement)
        return
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_corpus(Path(tmp), a.images, a.refs, a.seed)
        sizes = ", ".join(f"{k} {v.stat().st_size / 1e6:.1f} MB" for k, v in paths.items())
        print(f"{a.images} images x {a.refs} references, seed {a.seed} ({sizes})")
        print(describe())
        time_in_process(paths, ["bleu"], a.repeat)
        if a.all_metrics:
            time_in_process(paths, ["bleu", "rouge", "cider", "meteor"], 1)
        time_cli(paths, ["bleu"])


if __name__ == "__main__":
    main()
