"""How long the demo will take on this machine, said before it starts: a one-second matrix-multiply warm-up,
scaled against the same warm-up and the demo's measured time on the reference machine (2 idle cores).

Training and generation on a CPU are bound by matrix multiplies of the model's shapes, so the warm-up
uses them (fp32, the threads torch will use). The range is wide on purpose: another process on the
machine slows the demo down more than it slows a one-second warm-up.
"""

from __future__ import annotations

import time

# Measured on the reference machine (2 cores, idle): the warm-up's GFLOP/s, and each profile's minutes.
REFERENCE_GFLOPS = 92.0
REFERENCE_MINUTES = {"quick": 6.8, "full": 11.9}


def matmul_gflops(seconds: float = 1.0) -> float:
    """fp32 GFLOP/s of (16 x 576) @ (576 x 1536) products: a decode step's MLP shape for the embedded model."""
    import torch

    a, b = torch.randn(16, 576), torch.randn(576, 1536)
    for _ in range(20):  # warm up the allocator and the kernels
        a @ b
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(50):
            a @ b
        done += 50
    return done * 2 * 16 * 576 * 1536 / (time.perf_counter() - started) / 1e9


def estimate_minutes(profile: str) -> tuple[float, float]:
    """(low, high) minutes for a demo profile on this machine."""
    ratio = REFERENCE_GFLOPS / max(matmul_gflops(), 1e-3)
    expected = REFERENCE_MINUTES[profile] * ratio
    return expected * 0.85, expected * 1.3
