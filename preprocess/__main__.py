"""``python -m preprocess``: build the vocabulary and HDF5 stores for a dataset.

The dataset and every preprocessing setting are the ``data`` section of the run config
(:class:`nic.config.DataConfig`), given exactly as to ``train.py``: a YAML file
(``--config``) and ``--data.key=value`` overrides. So ``python -m preprocess --config C``
builds the stores ``python train.py --config C`` trains on. Examples (docs/datasets.md has
the whole path from downloaded files to a trained model)::

    # the built-in synthetic dataset (generated first when missing)
    python -m preprocess --data.dataset=shapes --data.root=data/shapes

    # the stores of a training config (its data section), with an override
    python -m preprocess --config configs/nic_coco.yaml --data.preprocess_workers=4

    # COCO / Flickr8k / Flickr30k from Karpathy's split files
    python -m preprocess --data.dataset=coco --data.root=data/coco --data.image_size=299
    python -m preprocess --data.dataset=flickr8k --data.root=data/flickr8k --data.image_dir=Flicker8k_Dataset
    python -m preprocess --data.dataset=flickr30k --data.root=data/flickr30k --data.image_dir=flickr30k-images

    # your own photos: a folder of images + a CSV/JSONL of image,caption[,split] rows
    python -m preprocess --data.dataset=custom --data.root=data/mine --data.captions_file=captions.csv \\
        --data.image_dir=photos

The short flags of earlier versions still work and mean the same overrides
(``--dataset coco`` is ``--data.dataset=coco``, ``--strict`` is ``--data.strict=true``; the
list is below). Overrides apply in command-line order, the last one wins.

An interrupted run (Ctrl-C, kill -9, a crash) resumes where it stopped when the same
command is run again. Bad input items (missing or corrupt images, empty captions, ...)
are skipped and listed with their reasons in <store-dir>/report.json (--data.strict=true:
fatal). Exit status: 0 done, 1 bad input or layout (message on stderr), 2 bad command line
(an unknown key or a wrong type, named), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from dataclasses import fields

from nic.config import ConfigError, DataConfig, load_config
from preprocess.build import LONG_CAPTIONS, prepare
from preprocess.karpathy import RESTVAL_CHOICES, DatasetFormatError, InputProblem

# Short flags -> the DataConfig key they set (each takes one value; --strict takes none).
ALIASES = {
    "--dataset": "dataset", "--root": "root", "--karpathy-json": "karpathy_json", "--captions": "captions_file",
    "--image-dir": "image_dir", "--restval": "restval", "--val-fraction": "val_fraction",
    "--test-fraction": "test_fraction", "--split-seed": "split_seed", "--min-count": "min_count",
    "--max-len": "max_len", "--long-captions": "long_captions", "--captions-per-image": "captions_per_image",
    "--store-dir": "store_dir", "--image-size": "image_size", "--workers": "preprocess_workers",
    "--max-pixels": "max_pixels",
}
FLAG_ALIASES = {"--strict": "strict"}
# Settings with a fixed set of values: another value is a command-line error (exit status 2).
CHOICES = {"restval": RESTVAL_CHOICES, "long_captions": LONG_CAPTIONS}


def parser() -> argparse.ArgumentParser:
    aliases = ", ".join(f"{flag} X = --data.{key}=X" for flag, key in ALIASES.items())
    p = argparse.ArgumentParser(
        prog="python -m preprocess", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s [--config FILE] [--data.key=value ...] [--report PATH] [--checkpoint-every N] [--force] "
              "[--quiet]",
        epilog=f"data settings (docs/datasets.md, Options): {', '.join(f.name for f in fields(DataConfig))}\n\n"
               f"short flags: {aliases}, --strict = --data.strict=true")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="YAML config whose data section to build (default: the DataConfig defaults)")
    p.add_argument("--report", default=None, metavar="PATH",
                   help="also write the build report (every skipped item with its reason) here "
                        "(always written to <store-dir>/report.json)")
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                   help="images between progress checkpoints that a killed run resumes from (default: 500)")
    p.add_argument("--force", action="store_true", help="rebuild even when complete stores for these inputs exist")
    p.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    return p


def expand_aliases(argv: list[str], p: argparse.ArgumentParser) -> list[str]:
    """``argv`` with every short flag replaced by its ``--data.key=value`` override, in place."""
    out: list[str] = []
    it = iter(argv)
    for token in it:
        flag, eq, value = token.partition("=")
        if flag in FLAG_ALIASES and not eq:
            out.append(f"--data.{FLAG_ALIASES[flag]}=true")
        elif flag in ALIASES:
            if not eq:
                value = next(it, None)
                if value is None or value.startswith("--"):
                    p.error(f"argument {flag}: expected one argument")
            out.append(f"--data.{ALIASES[flag]}={_yaml_value(ALIASES[flag], value)}")
        else:
            out.append(token)
    return out


def _yaml_value(key: str, value: str) -> str:
    """``value`` as the override text: a text setting keeps its text as given (quoted, so YAML does
    not read "yes" as true or "0123" as a number); numbers and flags are read as YAML, as in overrides."""
    hint = typing.get_type_hints(DataConfig)[key]
    return json.dumps(value) if hint is str or str in typing.get_args(hint) else value


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, DataConfig]:
    """The options that are not data settings, and the DataConfig the config file and overrides make."""
    p = parser()
    args, overrides = p.parse_known_args(expand_aliases(sys.argv[1:] if argv is None else list(argv), p))
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as e:
        p.error(str(e))
    for key, choices in CHOICES.items():
        value = getattr(cfg.data, key)
        if value not in choices:
            p.error(f"data.{key}: invalid choice: {value!r} (choose from {', '.join(map(repr, choices))})")
    return args, cfg.data


def main(argv: list[str] | None = None) -> int:
    a, data_cfg = parse_args(argv)
    try:
        store_dir = prepare(data_cfg, progress=not a.quiet, report=a.report, force=a.force,
                            flush_every=a.checkpoint_every)
    except (DatasetFormatError, InputProblem, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume where it stopped", file=sys.stderr)
        return 130
    if not a.quiet:
        print(f"stores written to {store_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
