"""Training throughput (words/s) of the decoders at paper sizes, beside this machine's fp32 matmul limit.

    python bench/train.py                                  # CPU, both decoders, V = 10k and 2.5k, cached features
    python bench/train.py --inputs cached images           # also with the CNN run in every step
    python bench/train.py --device cuda                    # on a GPU (AMP as in training)
    python bench/train.py --decoders nic --vocab 10000 --steps 20 --batch-size 64

One optimizer step = forward + backward + Adam update (fused, as ``nic.training`` builds it)
of the decoder on a batch of captions (synthetic: caption lengths of 8-16 words). "cached"
reads pre-computed CNN features (what training with a frozen encoder does after the first
pass); "images" runs the frozen EfficientNet-Lite0 on 224x224 images in every step.

**The limit.** For every batch the bench lists the matrix products the step has to do for
the words it really predicts (:func:`nic_products`, :func:`attention_products`: the
LSTM gates, the attention, the output projection to V, and their backward; padded positions
and the t = -1 step's product with a zero state are not counted), times exactly those
products with torch (:func:`bench.machine.matmul_limit`, in this run) and prints the step's
useful GFLOP/s beside that limit and their ratio: the fraction of the machine's fp32 matmul
rate that training reaches. Elementwise work (gates, softmax, dropout, Adam) counts as time,
not as FLOPs. Each configuration runs ``--repeats`` rounds of ``--steps`` steps; the best
round counts. Prints a Markdown table; asserts nothing.

**SCST** (``--scst-images``, a second table): images/s of self-critical training steps
(:mod:`nic.scst`: 5 samples per image, their CIDEr-D rewards, the policy-gradient update)
beside cross-entropy's, counting an image's 5 reference captions as one image of an epoch,
with the decoder's dropout off (``scst.dropout: false``) and on (the Flickr8k recipe's).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/train.py`

from bench.machine import Matmul, describe, linear_products, matmul_limit  # noqa: E402
from nic.config import (  # noqa: E402
    Config,
    DecoderConfig,
    ScstConfig,  # noqa: E402
)
from nic.decoders import DECODERS  # noqa: E402
from nic.model import build_model  # noqa: E402
from nic.scst import ScstObjective  # noqa: E402
from nic.vocab import Vocabulary  # noqa: E402


def make_batch(batch_size: int, vocab: int, grid: bool, images: bool, gen: torch.Generator) -> dict[str, torch.Tensor]:
    lengths = torch.randint(8, 17, (batch_size,), generator=gen) + 2  # + <start>, <end>
    t = int(lengths.max())
    captions = torch.randint(4, vocab, (batch_size, t), generator=gen)
    captions[:, 0] = 1
    for i, n in enumerate(lengths.tolist()):
        captions[i, n - 1] = 2
        captions[i, n:] = 0
    batch = {"captions": captions, "lengths": lengths}
    if images:
        batch["images"] = torch.randint(0, 256, (batch_size, 3, 224, 224), dtype=torch.uint8, generator=gen)
    else:
        batch["pooled"] = torch.randn(batch_size, 1280, generator=gen)
        if grid:
            batch["grid"] = torch.randn(batch_size, 49, 1280, generator=gen)
    return batch


def _active_rows(lengths: torch.Tensor) -> list[int]:
    """Rows still inside their caption at each word step t = 0, 1, ...: words = lengths - 1 per caption."""
    words = (lengths - 1).tolist()
    return [sum(w > t for w in words) for t in range(max(words))]


def nic_products(decoder, lengths: torch.Tensor) -> list[Matmul]:
    """The useful fp32 products of one Show and Tell training step (one LSTM layer).

    N = words predicted; the LSTM reads B + N inputs (the image, then <start> w1 ..); its
    recurrent product runs on the n_t captions still going at step t (none at t = -1, whose
    state is zero); weight gradients are one product over all positions.
    """
    b, n_words = len(lengths), int((lengths - 1).sum())
    e, h, v, f = decoder.lstm.input_size, decoder.lstm.hidden_size, decoder.vocab_size, decoder.image_embed.in_features
    out = linear_products(b, f, e, grad_input=False)  # W_I on the pooled feature (no gradient into it)
    out += linear_products(b + n_words, e, 4 * h)  # LSTM input gates, every position
    for n in _active_rows(lengths):  # recurrent gates, step by step
        out += [Matmul(n, h, 4 * h, tb=True), Matmul(n, 4 * h, h)]
    out.append(Matmul(4 * h, n_words, h, ta=True))  # recurrent weight gradient
    return out + linear_products(n_words, h, v)  # output projection


def attention_products(decoder, lengths: torch.Tensor, grid_locations: int) -> list[Matmul]:
    """The useful fp32 products of one Show, Attend and Tell training step (query h_{t-1}, no deep output).

    Per caption: f_init,h/c and U on the grid, W_I, the t = -1 LSTM step (its input is the
    image embedding; the zero context is not counted). Per word step on the n_t captions
    still going: the attention (W h, w^T tanh(..) over P locations, the context as a batched
    product, the gate), the LSTM gates; the output projection on the N real words.
    """
    d, p = decoder, grid_locations
    b, n_words = len(lengths), int((lengths - 1).sum())
    e, h, a, v = d.word_embed.embedding_dim, d.cell.hidden_size, d.att_hidden.out_features, d.vocab_size
    c, f = d.att_feature.in_features, d.image_embed.in_features
    out = linear_products(b, d.grid_dim, h, grad_input=False) * 2 + linear_products(b, f, e, grad_input=False)
    out += linear_products(b * p, c, a, grad_input=False)  # U a_i, once per image
    out += linear_products(b, e, 4 * h) + [Matmul(b, h, 4 * h, tb=True), Matmul(b, 4 * h, h)]  # t = -1
    for n in _active_rows(lengths):
        out += [Matmul(n, h, a, tb=True), Matmul(n, a, h),  # W h_{t-1}
                Matmul(n * p, a, 1, tb=True), Matmul(n * p, 1, a),  # w^T tanh(U a + W h)
                Matmul(1, p, c, batch=n), Matmul(1, c, p, batch=n),  # context = alpha @ grid
                Matmul(n, h, 1, tb=True), Matmul(n, 1, h),  # gate
                Matmul(n, e + c, 4 * h, tb=True), Matmul(n, 4 * h, e + c),  # LSTM input gates
                Matmul(n, h, 4 * h, tb=True), Matmul(n, 4 * h, h)]  # recurrent gates
    out += [Matmul(a, n_words, h, ta=True), Matmul(1, n_words * p, a, ta=True), Matmul(1, n_words, h, ta=True),
            Matmul(4 * h, n_words, e + c, ta=True), Matmul(4 * h, n_words + b, h, ta=True)]  # weight gradients
    return out + linear_products(n_words, h, v)


def step_products(decoder, batch: dict[str, torch.Tensor]) -> list[Matmul]:
    if decoder.uses_grid:
        return attention_products(decoder, batch["lengths"], batch["grid"].shape[1])
    return nic_products(decoder, batch["lengths"])


def measure(decoder_type: str, *, images: bool, batch_size: int, steps: int, repeats: int, vocab: int,
            device: torch.device, encoder) -> dict[str, float]:
    """Best round of ``steps`` optimizer steps: words/s, and with cached features the useful GFLOP/s and limit."""
    cfg = Config(decoder=DecoderConfig(type=decoder_type, embed_dim=512, hidden_dim=512, dropout=0.5))
    model = build_model(cfg, vocab, pretrained=False)
    model.encoder = encoder  # one pretrained, frozen CNN shared by every measurement
    decoder = model.decoder
    model.to(device).train()
    encoder.eval()
    opt = torch.optim.Adam(decoder.parameters(), lr=1e-4, fused=device.type in ("cpu", "cuda"))  # as nic.training
    gen = torch.Generator().manual_seed(0)
    batches = [make_batch(batch_size, vocab, decoder.uses_grid, images, gen) for _ in range(min(steps, 4))]
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()

    def one(batch):
        with amp:
            loss, _ = model(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for batch in batches:  # warm-up
        one(batch)
    best = float("inf")
    for _ in range(max(repeats, 1)):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(steps):
            one(batches[i % len(batches)])
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    words = sum(int((batches[i % len(batches)]["lengths"] - 1).sum()) for i in range(steps))  # words + <end>
    result = {"words_s": words / best, "captions_s": batch_size * steps / best}
    if not images:
        products = [mm for i in range(steps) for mm in step_products(decoder, batches[i % len(batches)])]
        limit_s, limit_rate = matmul_limit(products, device=device)
        flops = sum(mm.flops for mm in products)
        result.update(mflop_word=flops / words / 1e6, gflops=flops / best / 1e9, limit=limit_rate,
                      fraction=limit_s / best)
    return result


def measure_scst(decoder_type: str, *, batch_images: int, steps: int, repeats: int, vocab: int, device: torch.device,
                 samples: int = 5, temperature: float = 0.5, max_len: int = 16, dropout: bool = False
                 ) -> dict[str, float]:
    """Best round of ``steps`` SCST steps (:class:`nic.scst.ScstObjective`) on cached features: images/s.

    Synthetic: 5 references of 12 words per image; the output layer's ``<end>`` bias is raised so
    that the (untrained) decoder's samples end after ~12 words, like the cross-entropy captions.
    """
    cfg = Config(decoder=DecoderConfig(type=decoder_type, embed_dim=512, hidden_dim=512, dropout=0.5))
    decoder = build_model(cfg, vocab, pretrained=False).decoder.to(device)
    words = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", *(f"w{i}" for i in range(vocab - 4))])
    with torch.no_grad():  # p(<end>) ~ 1/12 per step at this temperature
        decoder.out.bias[words.end_id] += temperature * math.log(vocab / 11)
    gen = torch.Generator().manual_seed(0)
    n_images = batch_images * 4
    refs = [[[f"w{int(i)}" for i in torch.randint(0, 300, (12,), generator=gen)] for _ in range(5)]
            for _ in range(n_images)]
    objective = ScstObjective(refs, words, ScstConfig(samples=samples, temperature=temperature, dropout=dropout),
                              max_len=max_len, seed=0)
    pooled = torch.randn(n_images, 1280, generator=gen).to(device)
    grid = torch.randn(n_images, 49, 1280, generator=gen).to(device) if decoder.uses_grid else None
    opt = torch.optim.Adam(decoder.parameters(), lr=1e-5, fused=device.type in ("cpu", "cuda"))
    lengths: list[float] = []

    def one(i: int) -> None:
        rows = list(range((i % 4) * batch_images, (i % 4 + 1) * batch_images))
        loss, n_words, _ = objective(decoder, pooled[rows], grid[rows] if grid is not None else None, rows, epoch=i)
        lengths.append(n_words / (batch_images * samples))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(4):  # warm-up
        one(i)
    best = float("inf")
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        for i in range(steps):
            one(i)
        best = min(best, time.perf_counter() - start)
    return {"images_s": batch_images * steps / best, "sample_words": sum(lengths) / len(lengths)}


def scst_table(a: argparse.Namespace, device: torch.device, xe: dict[tuple[str, int], dict[str, float]]) -> None:
    """SCST images/s beside cross-entropy's (an image's 5 reference captions per epoch)."""
    print(f"\nSCST (K = 5 samples per image, temperature 0.5, max 16 words, CIDEr-D rewards, mean-of-others "
          f"baseline; {a.scst_images} images per step) vs cross-entropy (5 captions per image):")
    print("| decoder | vocab | cross-entropy images/s | SCST images/s | SCST / cross-entropy | words per sample "
          "| SCST images/s, scst.dropout on |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for (d, vocab), r in xe.items():
        s, on = (measure_scst(d, batch_images=a.scst_images, steps=max(2, a.steps // 2), repeats=a.repeats,
                              vocab=vocab, device=device, dropout=dropout) for dropout in (False, True))
        xe_images = r["captions_s"] / 5
        print(f"| {d} | {vocab:,} | {xe_images:,.1f} | {s['images_s']:,.1f} | {s['images_s'] / xe_images:.2f} | "
              f"{s['sample_words']:.1f} | {on['images_s']:,.1f} |", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--decoders", nargs="+", default=[d for d in ("nic", "attention") if d in DECODERS])
    p.add_argument("--inputs", nargs="+", choices=("cached", "images"), default=["cached"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-batch-size", type=int, default=16, help="batch size when running the CNN")
    p.add_argument("--steps", type=int, default=8, help="optimizer steps per timed round")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds; the best counts")
    p.add_argument("--vocab", type=int, nargs="+", default=[10000, 2500])
    p.add_argument("--device", default="cpu")
    p.add_argument("--scst-images", type=int, default=16, help="images per SCST step (0: skip the SCST table)")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    encoder = build_model(Config(), a.vocab[0]).encoder.to(device).requires_grad_(False)
    print(f"device {device}, embed 512, LSTM 512, attention 512 over a 7x7x1280 grid; best of {a.repeats} rounds "
          f"of {a.steps} steps")
    print(describe(device))
    print("| decoder | input | vocab | batch | words/s | MFLOP/word | GFLOP/s | matmul limit at these shapes | "
          "fraction |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    xe: dict[tuple[str, int], dict[str, float]] = {}
    for d in a.decoders:
        for vocab in a.vocab:
            for inputs in a.inputs:
                images = inputs == "images"
                bs = a.image_batch_size if images else a.batch_size
                r = measure(d, images=images, batch_size=bs, steps=a.steps if not images else max(3, a.steps // 3),
                            repeats=a.repeats, vocab=vocab, device=device, encoder=encoder)
                limits = (f"{r['mflop_word']:.1f} | {r['gflops']:.1f} | {r['limit']:.1f} GFLOP/s | "
                          f"{r['fraction']:.0%}") if "limit" in r else "- | - | - | -"
                label = "images (CNN each step)" if images else "cached features"
                print(f"| {d} | {label} | {vocab:,} | {bs} | {r['words_s']:,.0f} | {limits} |", flush=True)
                if not images:
                    xe[d, vocab] = r
    if a.scst_images and xe:
        scst_table(a, device, xe)


if __name__ == "__main__":
    main()
