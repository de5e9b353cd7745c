"""DettoolPSRoIAlign CPU implementation vs torchvision.ops.ps_roi_align.

Tolerances: float32 atol 1e-5 / rtol 1e-5 (the CPU code repeats torchvision's CPU arithmetic, so
the difference is normally 0); float16 features atol 1e-3 / rtol 1e-3 (one float16 rounding of
equal float32 results), and bit-equal to the float32 path rounded once.
"""
from __future__ import annotations

import time

import pytest
import torch
import torchvision
from dettool_op_references import reference_ps_roi_align

from dettool.ops import ps_roi_align

FP32 = dict(atol=1e-5, rtol=1e-5)
FP16 = dict(atol=1e-3, rtol=1e-3)


def random_rois(generator: torch.Generator, num: int, batch: int, image: tuple[int, int],
                min_side: float = 2.0, max_side: float = 400.0) -> torch.Tensor:
    """RoIs of log-uniform sides; some stick out of the image."""
    h, w = image
    log_side = torch.empty(num, 2).uniform_(float(torch.log(torch.tensor(min_side))),
                                            float(torch.log(torch.tensor(max_side))), generator=generator)
    side = torch.exp(log_side)
    x1 = torch.rand(num, generator=generator) * w - side[:, 0] / 4
    y1 = torch.rand(num, generator=generator) * h - side[:, 1] / 4
    index = torch.randint(0, batch, (num,), generator=generator).float()
    return torch.stack([index, x1, y1, x1 + side[:, 0], y1 + side[:, 1]], dim=1)


def features_for(generator: torch.Generator, batch: int, channels: int, k: int, image: tuple[int, int],
                 stride: int) -> torch.Tensor:
    return torch.randn(batch, channels * k * k, image[0] // stride, image[1] // stride, generator=generator)


def run_both(cpu_ops, features, rois, k, spatial_scale, sampling_ratio):
    args = (features, rois, k, spatial_scale, sampling_ratio)
    return cpu_ops.ps_roi_align(*args), reference_ps_roi_align(*args)


@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_random_rois_match_torchvision(cpu_ops, k, sampling_ratio):
    g = torch.Generator().manual_seed(30 + k)
    image = (256, 320)
    features = features_for(g, 2, 5, k, image, 16)
    rois = random_rois(g, 200, 2, image)
    got, want = run_both(cpu_ops, features, rois, k, 1 / 16, sampling_ratio)
    assert got.shape == (200, 5, k, k)
    torch.testing.assert_close(got, want, **FP32)
    # On these RoIs torchvision is defined everywhere: the reference is torchvision itself.
    torch.testing.assert_close(got, torchvision.ops.ps_roi_align(features, rois, k, 1 / 16, sampling_ratio), **FP32)
    torch.testing.assert_close(got, ps_roi_align(features, rois, k, 1 / 16, sampling_ratio), **FP32)


def test_bin_reads_its_channel(cpu_ops):
    """Input channel i holds the constant i: bin (ph, pw) of output channel c reads (c * k + ph) * k + pw."""
    k, channels = 3, 4
    features = torch.arange(channels * k * k, dtype=torch.float32).view(1, -1, 1, 1).expand(2, -1, 9, 11).contiguous()
    rois = torch.tensor([[0, 1.0, 1, 8, 7], [1, 0, 0, 11, 9]])
    got = cpu_ops.ps_roi_align(features, rois, k, 1.0, 2)
    want = torch.arange(channels * k * k, dtype=torch.float32).view(1, channels, k, k).expand(2, -1, -1, -1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-6)


def test_rois_outside_the_image(cpu_ops):
    g = torch.Generator().manual_seed(40)
    features = features_for(g, 1, 3, 3, (64, 64), 4)
    rois = torch.tensor([
        [0, -300, -300, -200, -200],  # far outside: zeros
        [0, 500, 500, 700, 650],       # far outside on the other side: zeros
        [0, -20, -20, 30, 30],         # across the top-left corner
        [0, 40, 44, 90, 95],           # across the bottom-right corner
        [0, -1, -1, 65, 65],           # the whole image and a bit
        [0, -100, 5, 130, 20],         # long, thin and larger than the map
    ], dtype=torch.float32)
    for sampling_ratio in (0, 2):
        got, want = run_both(cpu_ops, features, rois, 3, 0.25, sampling_ratio)
        torch.testing.assert_close(got, want, **FP32)
        assert (got[:2] == 0).all() and (got[2:] != 0).any(dim=(1, 2, 3)).all()


def test_degenerate_rois(cpu_ops):
    """Zero-size RoIs (adaptive sampling takes no point: 0, where torchvision returns NaN; a fixed
    sampling_ratio samples the point), and inverted ones (negative sides), pooled as torchvision
    does, also when they cross the border of the map."""
    g = torch.Generator().manual_seed(41)
    features = features_for(g, 2, 2, 3, (48, 48), 1)
    rois = torch.tensor([
        [0, 10, 10, 10, 10],    # a point
        [1, 20, 5, 20, 30],     # zero width
        [1, 5, 20, 30, 20],     # zero height
        [0, 30, 30, 10, 10],    # both sides inverted
        [1, 30, 30, 10, 40],    # one side inverted
        [0, 20, 20, -6, -6],    # inverted across the top-left border
        [1, 60, 20, 40, 10],    # inverted across the right border
    ], dtype=torch.float32)
    with torch.no_grad():
        nan_rows = torch.isnan(torchvision.ops.ps_roi_align(features, rois, 3, 1.0, 0)).flatten(1).all(dim=1)
    assert nan_rows.tolist() == [True, True, True, False, False, False, False]
    for sampling_ratio in (0, 1, 2, 3):
        got, want = run_both(cpu_ops, features, rois, 3, 1.0, sampling_ratio)
        torch.testing.assert_close(got, want, **FP32)
        assert not torch.isnan(got).any()
        if sampling_ratio == 0:
            assert (got == 0).all()  # no sampling point, or a negative grid: torchvision's 0 (or -0)
        else:
            torch.testing.assert_close(got, torchvision.ops.ps_roi_align(features, rois, 3, 1.0, sampling_ratio),
                                       **FP32)
            assert (got[[0, 3, 5, 6]] != 0).any(dim=(1, 2, 3)).all()


def test_absurd_rois_finish_quickly(cpu_ops):
    """TensorRT times the plugin on arbitrary inputs: a RoI of +-1e8 pixels has the largest adaptive
    grid, 65536 x 65536 samples per bin, of which only those on the map are visited."""
    features = torch.randn(1, 4 * 9, 32, 32, generator=torch.Generator().manual_seed(42))
    rois = torch.tensor([[0, -1e8, -1e8, 1e8, 1e8], [0, -1e8, 2, 1e8, 30], [0, -3e38, -3e38, 3e38, 3e38]],
                        dtype=torch.float32)
    start = time.perf_counter()
    got = cpu_ops.ps_roi_align(features, rois, 3, 1.0, 0)
    assert time.perf_counter() - start < 5.0
    assert torch.isfinite(got).all()


def test_no_rois(cpu_ops):
    features = features_for(torch.Generator().manual_seed(43), 2, 4, 7, (64, 64), 4)
    got = cpu_ops.ps_roi_align(features, torch.zeros((0, 5)), 7, 0.25, 0)
    assert got.shape == (0, 4, 7, 7)


def test_batch_index_outside_the_batch_gives_zeros(cpu_ops):
    g = torch.Generator().manual_seed(44)
    features = features_for(g, 2, 2, 3, (64, 64), 4)
    rois = torch.tensor([[2, 0, 0, 30, 30], [-1, 0, 0, 30, 30], [1.7, 0, 0, 30, 30], [-0.5, 0, 0, 30, 30]],
                        dtype=torch.float32)
    got, want = run_both(cpu_ops, features, rois, 3, 0.25, 2)
    assert (got[:2] == 0).all() and (got[2:] != 0).any(dim=(1, 2, 3)).all()  # 1.7 -> image 1, -0.5 -> image 0
    torch.testing.assert_close(got, want, **FP32)
    torch.testing.assert_close(got[2:], torchvision.ops.ps_roi_align(features, rois[2:], 3, 0.25, 2), **FP32)


@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_float16_features(cpu_ops, k, sampling_ratio):
    g = torch.Generator().manual_seed(45)
    image = (256, 256)
    features = features_for(g, 2, 4, k, image, 8).half()
    rois = random_rois(g, 150, 2, image)
    got, want = run_both(cpu_ops, features, rois, k, 0.125, sampling_ratio)
    assert got.dtype == torch.float16
    torch.testing.assert_close(got, want, **FP16)
    # float16 features are read into float32 and the result is rounded once.
    assert torch.equal(got, cpu_ops.ps_roi_align(features.float(), rois, k, 0.125, sampling_ratio).half())


def test_invalid_calls_are_rejected(cpu_ops):
    features = torch.zeros(1, 10, 8, 8)
    with pytest.raises(ValueError, match="multiple of output_size"):
        cpu_ops.ps_roi_align(features, torch.zeros(1, 5), 3, 1.0, 0)
    features = torch.zeros(1, 9, 8, 8)
    for k, scale, sampling_ratio in ((0, 1.0, 0), (3, 1.0, -1), (3, 0.0, 0), (3, float("nan"), 0),
                                     (3, float("inf"), 0)):
        with pytest.raises(ValueError, match="output_size|spatial_scale|sampling_ratio"):
            cpu_ops.ps_roi_align(features, torch.zeros(1, 5), k, scale, sampling_ratio)
