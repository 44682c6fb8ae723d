"""The machine a benchmark ran on, in one line: CPU threads, torch, and its fp32 matmul rate.

Machines of the same kind differ in speed (up to ~2x in fp32 matmul rate), so every bench
prints this line beside its timings and figures can be compared across machines.
"""

from __future__ import annotations

import time

import torch


def matmul_gflops(n: int = 512, repeats: int = 20, device: str | torch.device = "cpu") -> float:
    """Best-of fp32 (n x n) @ (n x n) rate in GFLOP/s on ``device``, with the current thread count."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def describe(device: str | torch.device = "cpu") -> str:
    return (f"machine: {torch.get_num_threads()} CPU threads, torch {torch.__version__}, fp32 matmul "
            f"{matmul_gflops(device=device):.1f} GFLOP/s (512x512, best of 20) on {device}")
