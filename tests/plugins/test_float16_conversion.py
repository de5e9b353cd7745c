"""The CPU implementations' float <-> float16 conversion vs numpy (round to nearest even)."""
from __future__ import annotations

import numpy as np
import torch


def test_float_to_half_matches_numpy(cpu_ops):
    g = torch.Generator().manual_seed(30)
    values = torch.cat([
        torch.randn(100_000, generator=g) * 10.0 ** torch.randint(-9, 6, (100_000,), generator=g),
        torch.tensor([0.0, -0.0, 65504.0, 65519.99, 65520.0, 1e6, -1e6, 2.0 ** -24, 2.0 ** -25, 3 * 2.0 ** -25,
                      2.0 ** -14, 1 + 2.0 ** -11, float("inf"), float("-inf")]),
        # every float16 value and the midpoints between neighbours (ties to even)
        torch.from_numpy(np.arange(0, 0x7C00, dtype=np.uint16).view(np.float16).astype(np.float32)),
        torch.from_numpy((np.arange(0, 0x7BFF, dtype=np.uint16).view(np.float16).astype(np.float64)
                          + np.arange(1, 0x7C00, dtype=np.uint16).view(np.float16).astype(np.float64)) / 2
                         ).float(),
    ])
    got = cpu_ops.float_to_half(values).numpy().view(np.uint16)
    with np.errstate(over="ignore"):  # overflow to inf is the point
        want = values.numpy().astype(np.float16).view(np.uint16)
    assert np.array_equal(got, want)
    assert np.isnan(cpu_ops.float_to_half(torch.tensor([float("nan")])).float().numpy()).all()


def test_half_to_float_is_exact(cpu_ops):
    bits = np.arange(0, 1 << 16, dtype=np.uint32).astype(np.uint16)
    halves = torch.from_numpy(bits.view(np.float16).copy())
    got = cpu_ops.half_to_float(halves).numpy()
    want = bits.view(np.float16).astype(np.float32)
    finite = ~np.isnan(want)
    assert np.array_equal(got[finite], want[finite])
    assert np.isnan(got[~finite]).all()
