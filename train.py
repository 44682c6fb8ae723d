"""Train a captioner, then report test BLEU at the configured beam sizes.

    python train.py                                   # Show and Tell on the built-in shapes data
    python train.py --config configs/nic_flickr8k.yaml
    python train.py --train.epochs=5 --decoder.dropout=0.3   # any config key can be overridden
    python train.py --resume runs/default                     # continue an interrupted run exactly
    torchrun --nproc_per_node 4 train.py --config configs/nic_coco.yaml   # DistributedDataParallel

With no arguments the shapes dataset is generated and preprocessed first when missing.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from eval.bleu_report import evaluate_checkpoint, format_table, relation_note
from nic.config import ConfigError, load_config
from nic.io import atomic_write_text
from nic.runtime import resolve_device
from nic.training import train
from preprocess.build import prepare


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/default.yaml", help="YAML config (default: %(default)s)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its last.pt, with its saved config (+ overrides)")
    p.add_argument("--no-test", action="store_true", help="skip the final test-split BLEU report")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_known_args(argv)


def main(argv: list[str] | None = None) -> None:
    args, overrides = parse_args(argv)
    try:
        cfg = load_config(Path(args.resume) / "config.yaml" if args.resume else args.config, overrides)
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    # the three stages, composed here: stores (preprocess), training (nic), the test report (eval)
    run_dir = train(cfg, resume=args.resume, progress=not args.quiet, prepare_data=prepare)
    if args.no_test or int(os.environ.get("RANK", "0")) != 0:
        return
    report = evaluate_checkpoint(run_dir / "best.pt", split="test", beam_sizes=cfg.eval.beam_sizes,
                                 device=str(resolve_device(cfg.train.device)),
                                 progress=not args.quiet)
    atomic_write_text(run_dir / "test_report.json", json.dumps(report, indent=1))
    print(f"\ntest split, {report['results'][0]['images']} images ({run_dir / 'test_report.json'}):")
    print(format_table(report))
    if relation_note(report):
        print(relation_note(report))


if __name__ == "__main__":
    main()
