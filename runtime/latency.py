"""Latency of ``Backend.infer`` on preloaded batches: percentiles and throughput after warm-up.

Only ``infer`` is timed (``time.perf_counter`` around it, ``backend.synchronize()`` before and
after so queued device work is counted); data loading and evaluation are outside the clock.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from dettool.runtime.backend import Backend


@dataclass(frozen=True)
class LatencyStats:
    """Per-batch latency of ``iters`` timed calls.

    Attributes:
        batch_size: images per call.
        iters: timed calls (after ``warmup`` untimed ones).
        p50_ms, p90_ms, mean_ms: latency of one call, milliseconds.
        images_per_s: throughput, ``batch_size * iters / total time``.
    """

    batch_size: int
    warmup: int
    iters: int
    p50_ms: float
    p90_ms: float
    mean_ms: float
    images_per_s: float

    def to_dict(self) -> dict:
        return asdict(self)


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated ``q``-th percentile (``q`` in [0, 100]) of a non-empty list."""
    s = sorted(values)
    k = (len(s) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def measure_latency(backend: Backend, batches: list[tuple[torch.Tensor, list[dict]]], warmup: int, iters: int,
                    on_step: Callable[[], None] | None = None) -> LatencyStats:
    """Time ``backend.infer`` on ``batches`` (cycled), ``warmup`` untimed calls then ``iters`` timed.

    Args:
        backend: the backend to time.
        batches: preloaded ``(images [B, 3, H, W], metas)`` of one batch size ``B``; images are
            moved to ``backend.device`` before timing.
        warmup, iters: untimed and timed calls (``iters >= 1``).
        on_step: called after every call (progress bars).
    """
    if iters < 1:
        raise ValueError("iters must be at least 1")
    batches = [(images.to(backend.device), metas) for images, metas in batches]
    times = []
    for i in range(warmup + iters):
        images, metas = batches[i % len(batches)]
        backend.synchronize()
        start = time.perf_counter()
        backend.infer(images, metas)
        backend.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
        if on_step is not None:
            on_step()
    batch_size = batches[0][0].shape[0]
    return LatencyStats(batch_size, warmup, iters, 1e3 * percentile(times, 50), 1e3 * percentile(times, 90),
                        1e3 * sum(times) / len(times), batch_size * len(times) / sum(times))
