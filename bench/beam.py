"""Beam search throughput: batched (B images x k beams in one batch) vs one image at a time.

    python bench/beam.py                                       # trained shapes model if present
    python bench/beam.py --checkpoint runs/default/best.pt --images 200 --beam 20
    python bench/beam.py --random --vocab 10000                # paper-size NIC, random weights
    python bench/beam.py --length-penalty 0                    # plain log-prob scores

Both paths call the same ``nic.search.beam_search`` on the same model and the same
features, with the checkpoint's length penalty (``eval.length_penalty``, what the report
and ``caption.py`` use); the only difference is the batch: all images at once (in chunks
of ``--batch-size``) or a Python loop over single images. Each path runs ``--repeats``
times, alternating, and the best time counts. It also checks that both give the same
captions. Prints captions/s and the ratio; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/beam.py`

from bench.machine import describe  # noqa: E402
from nic.captioner import Captioner  # noqa: E402
from nic.config import Config, DecoderConfig  # noqa: E402
from nic.model import build_model, split_feature_reader  # noqa: E402
from nic.search import beam_search  # noqa: E402


def load_model(args: argparse.Namespace):
    """(decoder, pooled features (N, F), grid (N, P, F) | None, special ids, length penalty, description)."""
    ckpt = Path(args.checkpoint)
    if not args.random and ckpt.exists():
        cap = Captioner.from_checkpoint(ckpt)
        cfg = cap.config
        store = cfg.data.resolved_store_dir() / "test.h5"
        reader = split_feature_reader(cfg, cap.encoder, store, uses_grid=cap.uses_grid,
                                      finetuned=cap.encoder_trained, device="cpu", progress=False)
        n = min(args.images, reader.pooled.shape[0])
        grid = torch.stack([reader.grid_features(i) for i in range(n)]) if cap.uses_grid else None
        ids = (cap.vocab.start_id, cap.vocab.end_id, cap.vocab.pad_id)
        return (cap.decoder, reader.pooled[:n], grid, ids, cap.settings.length_penalty,
                f"{ckpt} ({cfg.decoder.type}, vocab {len(cap.vocab)})")
    torch.manual_seed(0)
    cfg = Config(decoder=DecoderConfig(embed_dim=512, hidden_dim=512))
    decoder = build_model(cfg, args.vocab, pretrained=False).decoder.eval()
    return decoder, torch.randn(args.images, 1280), None, (1, 2, 0), 0.0, f"random NIC 512/512, vocab {args.vocab}"


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="runs/default/best.pt")
    p.add_argument("--random", action="store_true", help="use a random paper-size model instead")
    p.add_argument("--vocab", type=int, default=10000)
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--beam", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=50, help="images per batched call")
    p.add_argument("--max-len", type=int, default=20)
    p.add_argument("--length-penalty", type=float, default=None,
                   help="score = logprob / length ** this (default: the checkpoint's eval.length_penalty)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each path; the best counts")
    a = p.parse_args(argv)
    decoder, pooled, grid, (start_id, end_id, pad_id), length_penalty, desc = load_model(a)
    if a.length_penalty is not None:
        length_penalty = a.length_penalty
    kw = {"start_id": start_id, "end_id": end_id, "pad_id": pad_id, "beam_size": a.beam, "max_len": a.max_len,
          "length_penalty": length_penalty}
    n = pooled.shape[0]

    def batched():
        out = []
        for s in range(0, n, a.batch_size):
            g = grid[s:s + a.batch_size] if grid is not None else None
            out += beam_search(decoder, pooled[s:s + a.batch_size], g, **kw)
        return out

    def one_by_one():
        return [beam_search(decoder, pooled[i:i + 1], grid[i:i + 1] if grid is not None else None, **kw)[0]
                for i in range(n)]

    beam_search(decoder, pooled[:2], grid[:2] if grid is not None else None, **kw)  # warm-up
    t_batched = t_single = math.inf
    for _ in range(max(a.repeats, 1)):
        t, out_b = timed(batched)
        t_batched = min(t_batched, t)
        t, out_s = timed(one_by_one)
        t_single = min(t_single, t)
    same = sum(x[0].tokens == y[0].tokens for x, y in zip(out_b, out_s))
    print(f"model: {desc}; {n} images, beam {a.beam}, max_len {a.max_len}, length penalty {length_penalty}, "
          f"best of {max(a.repeats, 1)}")
    print(describe())
    print("| search | captions/s | seconds |")
    print("|---|---|---|")
    print(f"| one image at a time | {n / t_single:.1f} | {t_single:.2f} |")
    print(f"| batched ({a.batch_size} images x {a.beam} beams) | {n / t_batched:.1f} | {t_batched:.2f} |")
    print(f"speed-up: {t_single / t_batched:.1f}x; identical best captions: {same}/{n}")


if __name__ == "__main__":
    main()
