"""DettoolMultiLevelRoIAlign CPU implementation vs torchvision.ops.roi_align + the FPN level rule.

Tolerances: float32 atol 1e-6 / rtol 1e-5 (the CPU code repeats torchvision's CPU arithmetic, so
the difference is normally 0); float16 features rtol 1e-3 / atol 1e-3 (one float16 rounding of
equal float32 results: at most 1 ulp apart), and bit-equal to the float32 path rounded once.
"""
from __future__ import annotations

import time

import pytest
import torch
from dettool_op_references import map_roi_levels, reference_multi_level_roi_align, rescale_rois

from dettool.ops import multi_level_roi_align

STRIDES = [4, 8, 16, 32]
FP32 = dict(atol=1e-6, rtol=1e-5)
FP16 = dict(atol=1e-3, rtol=1e-3)


def pyramid(generator: torch.Generator, batch: int, channels: int, image: tuple[int, int],
            strides=STRIDES) -> list[torch.Tensor]:
    return [torch.randn(batch, channels, image[0] // s, image[1] // s, generator=generator) for s in strides]


def random_rois(generator: torch.Generator, num: int, batch: int, image: tuple[int, int],
                min_side: float = 2.0, max_side: float = 500.0) -> torch.Tensor:
    """RoIs of log-uniform sides spanning every level; some stick out of the image."""
    h, w = image
    side = torch.exp(torch.empty(num, 2).uniform_(float(torch.log(torch.tensor(min_side))),
                                                  float(torch.log(torch.tensor(max_side))), generator=generator))
    x1 = torch.rand(num, generator=generator) * w - side[:, 0] / 4
    y1 = torch.rand(num, generator=generator) * h - side[:, 1] / 4
    index = torch.randint(0, batch, (num,), generator=generator).float()
    return torch.stack([index, x1, y1, x1 + side[:, 0], y1 + side[:, 1]], dim=1)


def run_both(cpu_ops, rois, feats, strides=STRIDES, output_size=(7, 7), sampling_ratio=0, finest_scale=56,
             aligned=True, roi_scale_factor=1.0):
    args = (rois, feats, strides, output_size, sampling_ratio, finest_scale, aligned, roi_scale_factor)
    return cpu_ops.multi_level_roi_align(*args), reference_multi_level_roi_align(*args)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_random_rois_match_torchvision(cpu_ops, aligned, sampling_ratio):
    g = torch.Generator().manual_seed(10)
    image = (256, 320)
    feats = pyramid(g, 2, 8, image)
    rois = random_rois(g, 300, 2, image)
    levels = map_roi_levels(rois, 4, 56)
    assert set(levels.tolist()) == {0, 1, 2, 3}  # every level is exercised
    got, want = run_both(cpu_ops, rois, feats, sampling_ratio=sampling_ratio, aligned=aligned)
    torch.testing.assert_close(got, want, **FP32)


def test_non_square_output_and_five_levels(cpu_ops):
    g = torch.Generator().manual_seed(11)
    image = (256, 256)
    strides = [4, 8, 16, 32, 64]
    feats = pyramid(g, 1, 3, image, strides)
    rois = random_rois(g, 100, 1, image, max_side=900.0)
    got, want = run_both(cpu_ops, rois, feats, strides, output_size=(5, 3), finest_scale=28)
    torch.testing.assert_close(got, want, **FP32)


def test_rois_outside_the_image(cpu_ops):
    g = torch.Generator().manual_seed(12)
    feats = pyramid(g, 1, 4, (128, 128))
    rois = torch.tensor([
        [0, -300, -300, -200, -200],  # far outside: zeros
        [0, 500, 500, 700, 650],       # far outside on the other side: zeros
        [0, -20, -20, 30, 30],         # across the top-left corner
        [0, 100, 110, 180, 190],       # across the bottom-right corner
        [0, -1, -1, 129, 129],         # the whole image and a bit
    ], dtype=torch.float32)
    for aligned in (True, False):
        got, want = run_both(cpu_ops, rois, feats, aligned=aligned)
        torch.testing.assert_close(got, want, **FP32)
        assert (got[:2] == 0).all()


def test_degenerate_rois(cpu_ops):
    """Zero-size RoIs (level 0; adaptive sampling of 0 points gives 0 when aligned), huge ones
    (clamped to the coarsest level), and inverted ones (negative area: no level, zeros)."""
    g = torch.Generator().manual_seed(13)
    feats = pyramid(g, 2, 4, (128, 128))
    rois = torch.tensor([
        [0, 10, 10, 10, 10],
        [1, 50, 20, 50, 60],
        [1, 0, 0, 20000, 20000],
        [0, 63.5, 63.5, 64.5, 64.5],
        [0, 30, 30, 10, 50],  # x2 < x1: negative area
        [1, 30, 30, 10, 10],  # both inverted: positive area, pooled as torchvision does
    ], dtype=torch.float32)
    for aligned in (True, False):
        for sampling_ratio in (0, 1):
            got, want = run_both(cpu_ops, rois, feats, sampling_ratio=sampling_ratio, aligned=aligned)
            torch.testing.assert_close(got, want, **FP32)
            assert (got[4] == 0).all()


def test_rois_far_larger_than_their_map(cpu_ops):
    """RoIs many times the size of their feature map, inside it, across it and past one side:
    most of torchvision's adaptive samples are off the map, where they add 0. The CPU code visits
    only those on the map and must sum exactly what torchvision sums."""
    g = torch.Generator().manual_seed(18)
    feats = [torch.randn(1, 3, 16, 24, generator=g)]
    rois = torch.tensor([
        [0, -300, -300, 300, 300],   # the map in the middle of a RoI 25-40 times its size
        [0, -500, 3, 100, 9],        # long and thin, across the map
        [0, 10, -250, 14, 5],        # mostly above the map
        [0, 20, 2, 600, 15],         # from inside to far right
        [0, 2, 3, 14, 11],           # inside the map
        [0, 900, 900, 1500, 1500],   # off the map: zeros
    ], dtype=torch.float32)
    for aligned in (True, False):
        for output_size in ((7, 7), (2, 3)):
            got, want = run_both(cpu_ops, rois, feats, strides=[1], output_size=output_size, aligned=aligned)
            torch.testing.assert_close(got, want, **FP32)
            assert (got[:5] != 0).any(dim=(1, 2, 3)).all() and (got[5] == 0).all()


def test_inverted_rois_across_the_border(cpu_ops):
    """RoIs with both sides inverted (positive area, pooled as torchvision does) that cross the
    map's border, with several sampling points per bin: their samples run backwards, and only those
    on the map are visited (the search for them once assumed they run forwards)."""
    g = torch.Generator().manual_seed(25)
    feats = [torch.randn(1, 2, 16, 16, generator=g)]
    rois = torch.tensor([[0, 20, 20, -6, -6], [0, 14, 30, 2, 2], [0, 18, 8, -3, 2], [0, 10, 10, 2, 2]],
                        dtype=torch.float32)
    for sampling_ratio in (1, 2, 3, 4):
        for aligned in (True, False):
            got, want = run_both(cpu_ops, rois, feats, strides=[1], output_size=(2, 2), sampling_ratio=sampling_ratio,
                                 aligned=aligned)
            torch.testing.assert_close(got, want, **FP32)


def test_absurd_rois_finish_quickly(cpu_ops):
    """TensorRT times the plugin on arbitrary inputs. A RoI of +-1e8 pixels has the largest adaptive
    grid, 65536 x 65536 samples per bin: hours of work when every sample was visited, a few per bin
    on a 32 x 32 map now."""
    feats = [torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(19))]
    rois = torch.tensor([[0, -1e8, -1e8, 1e8, 1e8], [0, -1e8, 2, 1e8, 30], [0, -3e38, -3e38, 3e38, 3e38]],
                        dtype=torch.float32)
    start = time.perf_counter()
    got = cpu_ops.multi_level_roi_align(rois, feats, [1], (7, 7), 0, 56, True)
    assert time.perf_counter() - start < 5.0
    assert torch.isfinite(got).all()


def test_level_boundaries(cpu_ops):
    """RoI scales at and around 112, 224, 448 (finest_scale 56) land on the reference's level."""
    g = torch.Generator().manual_seed(14)
    feats = pyramid(g, 1, 2, (512, 512))
    sides = torch.tensor([111.0, 111.999, 112.0, 112.001, 223.99, 224.0, 447.9, 448.0, 448.1])
    rois = torch.stack([torch.zeros_like(sides), torch.full_like(sides, 8.0), torch.full_like(sides, 8.0),
                        8.0 + sides, 8.0 + sides], dim=1)
    assert map_roi_levels(rois, 4, 56).tolist() == [0, 0, 1, 1, 1, 2, 2, 3, 3]
    got, want = run_both(cpu_ops, rois, feats)
    torch.testing.assert_close(got, want, **FP32)


def test_no_rois(cpu_ops):
    g = torch.Generator().manual_seed(15)
    feats = pyramid(g, 2, 4, (64, 64))
    got = cpu_ops.multi_level_roi_align(torch.zeros((0, 5)), feats, STRIDES, (7, 7), 0, 56, True)
    assert got.shape == (0, 4, 7, 7)


def test_batch_index_outside_the_batch_gives_zeros(cpu_ops):
    g = torch.Generator().manual_seed(16)
    feats = pyramid(g, 2, 4, (64, 64))
    rois = torch.tensor([[2, 0, 0, 30, 30], [-1, 0, 0, 30, 30], [1.7, 0, 0, 30, 30]], dtype=torch.float32)
    got, want = run_both(cpu_ops, rois, feats)
    assert (got[:2] == 0).all() and (got[2] != 0).any()  # 1.7 truncates to image 1
    torch.testing.assert_close(got, want, **FP32)


@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_float16_features(cpu_ops, sampling_ratio):
    g = torch.Generator().manual_seed(17)
    image = (256, 256)
    feats = [f.half() for f in pyramid(g, 2, 8, image)]
    rois = random_rois(g, 200, 2, image)
    got, want = run_both(cpu_ops, rois, feats, sampling_ratio=sampling_ratio)
    assert got.dtype == torch.float16
    torch.testing.assert_close(got, want, **FP16)
    # float16 features are read into float32 and the result is rounded once.
    fp32 = cpu_ops.multi_level_roi_align(rois, [f.float() for f in feats], STRIDES, (7, 7), sampling_ratio, 56, True)
    assert torch.equal(got, fp32.half())


# roi_scale_factor (Double-Head R-CNN): the level of the RoI as given, pooling of the rescaled RoI.

@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_roi_scale_factor_matches_the_reference_and_the_torch_op(cpu_ops, aligned, sampling_ratio):
    g = torch.Generator().manual_seed(20)
    image = (256, 320)
    feats = pyramid(g, 2, 8, image)
    rois = random_rois(g, 300, 2, image)
    got, want = run_both(cpu_ops, rois, feats, sampling_ratio=sampling_ratio, aligned=aligned, roi_scale_factor=1.3)
    torch.testing.assert_close(got, want, **FP32)
    op = multi_level_roi_align(rois, feats, 7, 7, STRIDES, sampling_ratio, 56, aligned, 1.3)
    torch.testing.assert_close(got, op, **FP32)
    assert not torch.equal(got, cpu_ops.multi_level_roi_align(rois, feats, STRIDES, (7, 7), sampling_ratio, 56,
                                                               aligned))


def test_roi_scale_factor_1_is_version_1(cpu_ops):
    g = torch.Generator().manual_seed(21)
    feats = pyramid(g, 2, 4, (128, 160))
    rois = random_rois(g, 100, 2, (128, 160))
    v1 = cpu_ops.multi_level_roi_align(rois, feats, STRIDES, (7, 7), 2, 56, True)
    assert torch.equal(cpu_ops.multi_level_roi_align(rois, feats, STRIDES, (7, 7), 2, 56, True, 1.0), v1)
    torch.testing.assert_close(v1, reference_multi_level_roi_align(rois, feats, STRIDES, (7, 7), 2, 56, True), **FP32)


def test_roi_scale_factor_on_borders_degenerate_rois_and_level_boundaries(cpu_ops):
    """Rescaled RoIs that leave the image, zero-size, inverted and out-of-batch RoIs, and scales
    just under a level boundary (their rescaled boxes would map one level up)."""
    g = torch.Generator().manual_seed(22)
    feats = pyramid(g, 2, 4, (128, 128))
    rois = torch.tensor([
        [0, 0, 0, 40, 30], [1, 100, 100, 128, 128], [0, -20, -20, 30, 30], [1, 0, 0, 128, 128],
        [0, 10, 10, 10, 10], [1, 50, 20, 50, 60], [0, 30, 30, 10, 50], [1, 30, 30, 10, 10],
        [2, 0, 0, 50, 50], [-1, 0, 0, 50, 50], [1.7, 0, 0, 50, 50],
        [0, 8, 8, 119.9, 119.9], [1, 4, 4, 227.9, 227.9],
    ], dtype=torch.float32)
    assert map_roi_levels(rois[-2:], 4, 56).tolist() == [0, 1]
    assert map_roi_levels(rescale_rois(rois[-2:], 1.3), 4, 56).tolist() == [1, 2]
    for aligned in (True, False):
        for sampling_ratio in (0, 1):
            got, want = run_both(cpu_ops, rois, feats, sampling_ratio=sampling_ratio, aligned=aligned,
                                 roi_scale_factor=1.3)
            torch.testing.assert_close(got, want, **FP32)
            assert (got[[6, 8, 9]] == 0).all()


@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_roi_scale_factor_float16_features(cpu_ops, sampling_ratio):
    g = torch.Generator().manual_seed(23)
    image = (256, 256)
    feats = [f.half() for f in pyramid(g, 2, 8, image)]
    rois = random_rois(g, 200, 2, image)
    got, want = run_both(cpu_ops, rois, feats, sampling_ratio=sampling_ratio, roi_scale_factor=0.8)
    assert got.dtype == torch.float16
    torch.testing.assert_close(got, want, **FP16)
    fp32 = cpu_ops.multi_level_roi_align(rois, [f.float() for f in feats], STRIDES, (7, 7), sampling_ratio, 56, True,
                                         0.8)
    assert torch.equal(got, fp32.half())


@pytest.mark.parametrize("factor", [0.0, -1.3, float("nan"), float("inf")])
def test_roi_scale_factor_must_be_positive_and_finite(cpu_ops, factor):
    feats = pyramid(torch.Generator().manual_seed(24), 1, 2, (64, 64))
    with pytest.raises(ValueError, match="roi_scale_factor"):
        cpu_ops.multi_level_roi_align(torch.zeros(1, 5), feats, STRIDES, (7, 7), 0, 56, True, factor)
