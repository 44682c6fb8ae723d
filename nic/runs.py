"""Compare training runs: ``python -m nic.runs [runs/]``.

Reads each run directory's ``metrics.jsonl`` (and ``test_report.json`` when present) and
prints one row per run: epochs, steps, training time, the best validation BLEU-1..4 (at
the run's validation beam) and the test BLEU-4 at each reported beam size.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def summarize_run(run_dir: Path) -> dict[str, Any] | None:
    metrics = run_dir / "metrics.jsonl"
    if not metrics.exists():
        return None
    records = []
    for n, line in enumerate(metrics.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        try:
            record = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:  # e.g. a line a running job is writing right now
            record = None
            print(f"{metrics}:{n}: not a JSON line, skipped", file=sys.stderr)
        if isinstance(record, dict) and "epoch" in record and "step" in record:
            records.append(record)
    if not records:
        return None
    best = max(records, key=lambda r: r.get("val_BLEU-4", -1))
    row = {"run": run_dir.name, "epochs": records[-1]["epoch"], "steps": records[-1]["step"],
           "time_min": sum(r.get("epoch_time_s", 0) for r in records) / 60, "best_epoch": best["epoch"],
           **{f"val_BLEU-{n}": best.get(f"val_BLEU-{n}") for n in range(1, 5)}}
    report = run_dir / "test_report.json"
    if report.exists():
        for r in json.loads(report.read_text())["results"]:
            row[f"test_BLEU-4@{r['beam']}"] = r["bleu"]["BLEU-4"]
    return row


def format_runs(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no runs with metrics.jsonl found"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    fmt = {"time_min": "{:.1f}"}

    def cell(row: dict[str, Any], col: str) -> str:
        v = row.get(col)
        if v is None:
            return "-"
        if isinstance(v, float):
            return fmt.get(col, "{:.4f}").format(v)
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r, c) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m nic.runs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", default=["runs"], help="run directories, or folders of them")
    a = p.parse_args(argv)
    dirs: list[Path] = []
    for d in map(Path, a.runs):
        dirs += [d] if (d / "metrics.jsonl").exists() else sorted(x for x in d.glob("*") if x.is_dir())
    rows = [r for r in map(summarize_run, dirs) if r is not None]
    print(format_runs(sorted(rows, key=lambda r: -(r.get("val_BLEU-4") or 0))))


if __name__ == "__main__":
    main()
