"""Training throughput (words/s) of the decoders at paper sizes, with and without cached features.

    python bench/train.py                      # CPU, both decoders, cached features and images
    python bench/train.py --device cuda        # on a GPU (AMP as in training)
    python bench/train.py --decoders nic --steps 20 --batch-size 64

One optimizer step = forward + backward + Adam update of the decoder on a batch of captions
(synthetic: COCO-like vocabulary of 10,000 words and caption lengths of 8-16 words). "cached"
reads pre-computed CNN features (what training with a frozen encoder does after the first
pass); "images" runs the frozen EfficientNet-Lite0 on 224x224 images in every step (what
training would cost without the feature cache). Prints a Markdown table; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python bench/train.py`

from bench.machine import describe
from nic.config import Config, DecoderConfig
from nic.decoders import DECODERS
from nic.model import build_model


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


def measure(decoder_type: str, *, images: bool, batch_size: int, steps: int, vocab: int, device: torch.device,
            encoder) -> float:
    cfg = Config(decoder=DecoderConfig(type=decoder_type, embed_dim=512, hidden_dim=512, dropout=0.5))
    model = build_model(cfg, vocab, pretrained=False)
    model.encoder = encoder  # one pretrained, frozen CNN shared by every measurement
    decoder = model.decoder
    model.to(device).train()
    encoder.eval()
    opt = torch.optim.Adam(decoder.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    batches = [make_batch(batch_size, vocab, decoder.uses_grid, images, gen) for _ in range(min(steps, 4))]
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()

    def one(batch):
        with amp:
            loss, _ = model(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    one(batches[0])  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    words = 0
    start = time.perf_counter()
    for i in range(steps):
        batch = batches[i % len(batches)]
        one(batch)
        words += int((batch["lengths"] - 1).sum())  # predicted tokens: words + <end>
    if device.type == "cuda":
        torch.cuda.synchronize()
    return words / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--decoders", nargs="+", default=[d for d in ("nic", "attention") if d in DECODERS])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-batch-size", type=int, default=16, help="batch size when running the CNN")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--vocab", type=int, default=10000)
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    encoder = build_model(Config(), a.vocab).encoder.to(device).requires_grad_(False)
    print(f"device {device}, embed 512, LSTM 512, vocab {a.vocab}")
    print(describe(device))
    print("| decoder | input | batch | words/s |")
    print("|---|---|---|---|")
    for d in a.decoders:
        for images in (False, True):
            bs = a.image_batch_size if images else a.batch_size
            rate = measure(d, images=images, batch_size=bs, steps=a.steps if not images else max(3, a.steps // 3),
                           vocab=a.vocab, device=device, encoder=encoder)
            print(f"| {d} | {'images (CNN each step)' if images else 'cached features'} | {bs} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
