"""Latency measurement: warm-up calls are not timed, synchronize brackets every timed call."""
from __future__ import annotations

import time

import pytest
import torch

from dettool.runtime.backend import Backend
from dettool.runtime.latency import measure_latency, percentile


class SleepyBackend(Backend):
    """Sleeps ``delay`` seconds per call; records the call order."""

    name = "sleepy"

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.events: list[str] = []

    def infer(self, images, metas):
        self.events.append(f"infer{images.shape[0]}")
        time.sleep(self.delay)
        return []

    def synchronize(self) -> None:
        self.events.append("sync")


def test_percentile_interpolates():
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([1.0, 2.0], 90) == pytest.approx(1.9)
    assert percentile([5.0], 90) == 5.0


def test_measure_latency_counts_and_units():
    backend = SleepyBackend(0.01)
    batches = [(torch.zeros(2, 3, 4, 4), [{}, {}]), (torch.ones(2, 3, 4, 4), [{}, {}])]
    steps = []
    stats = measure_latency(backend, batches, warmup=2, iters=3, on_step=lambda: steps.append(1))
    assert backend.events == ["sync", "infer2", "sync"] * 5
    assert len(steps) == 5
    assert (stats.batch_size, stats.warmup, stats.iters) == (2, 2, 3)
    assert 10.0 <= stats.p50_ms <= stats.p90_ms < 1000.0
    assert stats.images_per_s == pytest.approx(2 / (stats.mean_ms / 1e3))
    with pytest.raises(ValueError):
        measure_latency(backend, batches, warmup=0, iters=0)
