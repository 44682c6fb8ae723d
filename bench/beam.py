"""Beam search throughput: batched (B images x k beams in one batch) vs one image at a time.

    python bench/beam.py                                       # trained shapes model if present
    python bench/beam.py --checkpoint runs/default/best.pt --images 200 --beam 20
    python bench/beam.py --random --vocab 10000                # paper-size NIC, random weights
    python bench/beam.py --length-penalty 0                    # plain log-prob scores
    python bench/beam.py --random --vocab 2500 --single 20     # paper-size NIC at V = 2.5k; 20 single-image checks

Both paths call the same ``nic.search.beam_search`` on the same model and the same
features, with the checkpoint's length penalty (``eval.length_penalty``, what the report
and ``caption.py`` use); the only difference is the batch: all images at once (in chunks
of ``--batch-size``) or a Python loop over single images. Each path runs ``--repeats``
times, alternating, and the best time counts. It also checks that both give the same
captions. Prints captions/s and the ratio; asserts nothing about time.

**The limit.** The batched search is also printed beside this machine's fp32 matmul rate at
its own shapes, measured in the same run: the bench counts the rows every ``decoder.step``
call really runs (images drop out as they finish; at the first step only one beam per image
is distinct, so B rows count there, not B x K), lists the products those rows need (the LSTM
gates, the attention for a decoder that attends, the output projection to V; plus the image
step of ``init_state``), times exactly those with torch (:func:`bench.machine.matmul_limit`)
and prints the search's useful GFLOP/s beside that limit and their ratio. Everything else
(log-softmax, top-k, the bookkeeping) counts as time, not as FLOPs.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/beam.py`

from bench.machine import Matmul, describe, linear_products, matmul_limit  # noqa: E402
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


class RowCounter:
    """A decoder seen through the step API, recording the rows of every ``init_state`` and ``step`` call."""

    def __init__(self, decoder) -> None:
        self.decoder, self.vocab_size = decoder, decoder.vocab_size
        self.calls: list[tuple[str, int]] = []  # ("init" | "step", rows)

    def init_state(self, pooled, grid=None):
        self.calls.append(("init", pooled.shape[0]))
        return self.decoder.init_state(pooled, grid)

    def step(self, tokens, state):
        first = not self.calls or self.calls[-1][0] == "init"
        rows = self.calls[-1][1] if first else tokens.shape[0]  # first step: the K beams of an image are one
        self.calls.append(("step", rows))
        return self.decoder.step(tokens, state)

    def reorder_state(self, state, index):
        return self.decoder.reorder_state(state, index)


def search_products(decoder, calls: list[tuple[str, int]], grid_locations: int) -> list[Matmul] | None:
    """The useful fp32 products of the recorded calls (inference: forward products only); None: unknown decoder."""
    fwd = {"grad_input": False, "grad_weight": False}
    out: list[Matmul] = []
    if hasattr(decoder, "lstm") and decoder.lstm.num_layers == 1:  # Show and Tell
        e, h, f = decoder.lstm.input_size, decoder.lstm.hidden_size, decoder.image_embed.in_features
        for kind, r in calls:
            if kind == "init":  # W_I, then one LSTM step from a zero state (no recurrent product)
                out += linear_products(r, f, e, **fwd) + linear_products(r, e, 4 * h, **fwd)
            else:
                out += linear_products(r, e, 4 * h, **fwd) + linear_products(r, h, 4 * h, **fwd)
                out += linear_products(r, h, decoder.vocab_size, **fwd)
        return out
    if not hasattr(decoder, "att_feature"):
        return None
    d, p = decoder, grid_locations
    e, h, a, c = d.word_embed.embedding_dim, d.cell.hidden_size, d.att_hidden.out_features, d.att_feature.in_features
    for kind, r in calls:
        if kind == "init":  # f_init,h/c, W_I, U a_i, the t = -1 step (image input, zero context not counted)
            out += linear_products(r, d.grid_dim, h, **fwd) * 2 + linear_products(r, d.image_embed.in_features, e,
                                                                                **fwd)
            out += linear_products(r * p, c, a, **fwd) + linear_products(r, e, 4 * h, **fwd)
            out += linear_products(r, h, 4 * h, **fwd)
            continue
        out += [Matmul(r, h, a, tb=True), Matmul(r * p, a, 1, tb=True), Matmul(1, p, c, batch=r),
                Matmul(r, h, 1, tb=True), Matmul(r, e + c, 4 * h, tb=True), Matmul(r, h, 4 * h, tb=True)]
        if d.deep_output:
            out += [Matmul(r, h, e, tb=True), Matmul(r, c, e, tb=True)]
        out += linear_products(r, d.out.in_features, d.vocab_size, **fwd)
    return out


def print_limit(decoder, calls: list[tuple[str, int]], grid_locations: int, seconds: float) -> None:
    """The batched search's useful GFLOP/s beside the fp32 matmul limit at its shapes, timed now."""
    products = search_products(decoder, calls, grid_locations)
    if products is None:
        print("(no matmul limit: the bench does not know this decoder's products)")
        return
    limit_s, limit_rate = matmul_limit(products)
    flops = sum(mm.flops for mm in products)
    rows = sum(r for kind, r in calls if kind == "step")
    print(f"batched search: {rows:,} decoder rows, {flops / 1e9:.1f} GFLOP of useful products, "
          f"{flops / seconds / 1e9:.1f} GFLOP/s; fp32 matmul limit at these shapes {limit_rate:.1f} GFLOP/s "
          f"({limit_s:.2f} s): {limit_s / seconds:.0%} of the limit")


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
    p.add_argument("--single", type=int, default=None,
                   help="images decoded one at a time too (default: all; 0: skip that path)")
    a = p.parse_args(argv)
    decoder, pooled, grid, (start_id, end_id, pad_id), length_penalty, desc = load_model(a)
    if a.length_penalty is not None:
        length_penalty = a.length_penalty
    kw = {"start_id": start_id, "end_id": end_id, "pad_id": pad_id, "beam_size": a.beam, "max_len": a.max_len,
          "length_penalty": length_penalty}
    n = pooled.shape[0]
    n_single = n if a.single is None else min(a.single, n)

    def batched(dec=decoder):
        out = []
        for s in range(0, n, a.batch_size):
            g = grid[s:s + a.batch_size] if grid is not None else None
            out += beam_search(dec, pooled[s:s + a.batch_size], g, **kw)
        return out

    def one_by_one():
        return [beam_search(decoder, pooled[i:i + 1], grid[i:i + 1] if grid is not None else None, **kw)[0]
                for i in range(n_single)]

    counter = RowCounter(decoder)
    batched(counter)  # warm-up, counting the rows each step runs
    t_batched = t_single = math.inf
    for _ in range(max(a.repeats, 1)):
        t, out_b = timed(batched)
        t_batched = min(t_batched, t)
        if n_single:
            t, out_s = timed(one_by_one)
            t_single = min(t_single, t)
    print(f"model: {desc}; {n} images, beam {a.beam}, max_len {a.max_len}, length penalty {length_penalty}, "
          f"best of {max(a.repeats, 1)}")
    print(describe())
    print("| search | captions/s | seconds |")
    print("|---|---|---|")
    if n_single:
        print(f"| one image at a time ({n_single} images) | {n_single / t_single:.1f} | {t_single:.2f} |")
    print(f"| batched ({a.batch_size} images x {a.beam} beams) | {n / t_batched:.1f} | {t_batched:.2f} |")
    if n_single:
        same = sum(x[0].tokens == y[0].tokens for x, y in zip(out_b, out_s))
        print(f"speed-up: {(t_single / n_single) / (t_batched / n):.1f}x; identical best captions: "
              f"{same}/{n_single}")
    print_limit(decoder, counter.calls, grid.shape[1] if grid is not None else 0, t_batched)


if __name__ == "__main__":
    main()
