"""The machine a benchmark ran on, in one line, and its fp32 matmul rate at a workload's own shapes.

Machines of the same kind differ in speed (up to ~2x in fp32 matmul rate), so every bench
prints :func:`describe` beside its timings. A square 512x512 product says little about the
matmuls a training step or a beam-search step really does (a 64-row LSTM step runs far below
a 1,000-row output projection), so the benches also list those products (:class:`Matmul`)
and time exactly them (:func:`matmul_limit`): the step's figure is then printed beside the
rate this machine's torch reaches on the same products in the same run.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Matmul:
    """``count`` products (m, k) @ (k, n) in fp32 (``batch`` > 1: one ``bmm`` of that many).

    ``ta`` / ``tb``: the left / right operand is a transposed view, as in ``x @ W.T`` (a
    Linear's forward: ``tb``) or ``dY.T @ x`` (its weight gradient: ``ta``), so the timed
    product has the layout the step's own one has.
    """

    m: int
    k: int
    n: int
    count: int = 1
    ta: bool = False
    tb: bool = False
    batch: int = 1

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n * self.batch * self.count

    def key(self) -> tuple:
        return (self.m, self.k, self.n, self.ta, self.tb, self.batch)


def _operand(rows: int, cols: int, transposed: bool, batch: int, device) -> torch.Tensor:
    if batch > 1:
        x = torch.randn(batch, cols, rows, device=device) if transposed else torch.randn(batch, rows, cols,
                                                                                        device=device)
        return x.transpose(1, 2) if transposed else x
    return torch.randn(cols, rows, device=device).t() if transposed else torch.randn(rows, cols, device=device)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_matmul(mm: Matmul, *, repeats: int = 10, device: str | torch.device = "cpu") -> float:
    """Best-of-``repeats`` seconds of one product of ``mm``'s shape and layout (``count`` ignored)."""
    a = _operand(mm.m, mm.k, mm.ta, mm.batch, device)
    b = _operand(mm.k, mm.n, mm.tb, mm.batch, device)
    out = torch.empty(mm.batch, mm.m, mm.n, device=device) if mm.batch > 1 else torch.empty(mm.m, mm.n,
                                                                                               device=device)
    fn = torch.bmm if mm.batch > 1 else torch.mm
    fn(a, b, out=out)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn(a, b, out=out)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def matmul_limit(products: Iterable[Matmul], *, repeats: int = 10,
                 device: str | torch.device = "cpu") -> tuple[float, float]:
    """(seconds, GFLOP/s) that these fp32 products take on this machine, each at its best-of time.

    The seconds are the time a step doing exactly these products and nothing else would take:
    a step's figure divided by it is the fraction of the matmul limit the step reaches.
    Products of the same shape are timed once.
    """
    products = list(products)
    times: dict[tuple, float] = {}
    total = 0.0
    for mm in products:
        if mm.key() not in times:
            times[mm.key()] = time_matmul(mm, repeats=repeats, device=device)
        total += times[mm.key()] * mm.count
    flops = sum(mm.flops for mm in products)
    return total, flops / max(total, 1e-12) / 1e9


def linear_products(rows: int, d_in: int, d_out: int, *, grad_input: bool = True,
                    grad_weight: bool = True) -> list[Matmul]:
    """A Linear's products on ``rows`` rows: forward ``x @ W.T``, and in training ``dY @ W`` and ``dY.T @ x``."""
    out = [Matmul(rows, d_in, d_out, tb=True)]
    if grad_input:
        out.append(Matmul(rows, d_out, d_in))
    if grad_weight:
        out.append(Matmul(d_out, rows, d_in, ta=True))
    return out


def matmul_gflops(n: int = 512, repeats: int = 20, device: str | torch.device = "cpu") -> float:
    """Best-of fp32 (n x n) @ (n x n) rate in GFLOP/s on ``device``, with the current thread count."""
    return 2 * n**3 / time_matmul(Matmul(n, n, n), repeats=repeats, device=device) / 1e9


def describe(device: str | torch.device = "cpu") -> str:
    return (f"machine: {torch.get_num_threads()} CPU threads, torch {torch.__version__}, fp32 matmul "
            f"{matmul_gflops(device=device):.1f} GFLOP/s (512x512, best of 20) on {device}")
