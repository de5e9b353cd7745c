"""dettool::multi_level_roi_align against torchvision's roi_align of each RoI on its mapped level."""
from __future__ import annotations

import pytest
import torch
import torchvision

from dettool.errors import DettoolError
from dettool.ops import multi_level_roi_align
from dettool.trainer.models.roi_extractors.multi_level_roi_align import map_roi_levels

STRIDES = [4, 8, 16, 32]


def make_feats(batch: int = 2, channels: int = 3, size: int = 256, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, channels, size // s, size // s + 2, generator=g) for s in STRIDES]


def make_rois(num: int, batch: int = 2, size: float = 256.0, seed: int = 0) -> torch.Tensor:
    """RoIs of every scale (``sqrt(w * h)`` 4 .. 800 px), some reaching outside the ``size x size`` image."""
    g = torch.Generator().manual_seed(seed)
    scale = 4 * 200 ** torch.rand(num, 1, generator=g)
    aspect = 2 ** (torch.rand(num, 1, generator=g) * 2 - 1)
    side = torch.cat([scale * aspect, scale / aspect], dim=1)
    xy = torch.rand(num, 2, generator=g) * size - side / 4
    index = torch.randint(0, batch, (num, 1), generator=g).float()
    return torch.cat([index, xy, xy + side], dim=1)


def expected(rois, feats, output_size, sampling_ratio, aligned):
    """Each RoI alone through torchvision.ops.roi_align on the level map_roi_levels gives it."""
    levels = map_roi_levels(rois.float(), len(feats), 56)
    out = [torchvision.ops.roi_align(feats[int(lvl)].float(), rois[r:r + 1].float(), output_size,
                                     spatial_scale=1.0 / STRIDES[int(lvl)], sampling_ratio=sampling_ratio,
                                     aligned=aligned) for r, lvl in enumerate(levels)]
    return torch.cat(out) if out else torch.zeros(0, feats[0].shape[1], *output_size)


@pytest.mark.parametrize("sampling_ratio", [0, 2])
@pytest.mark.parametrize("aligned", [True, False])
def test_matches_per_roi_torchvision_on_the_mapped_level(sampling_ratio: int, aligned: bool) -> None:
    feats, rois = make_feats(), make_rois(40)
    assert set(map_roi_levels(rois, 4).tolist()) == {0, 1, 2, 3}
    out = multi_level_roi_align(rois, feats, 7, 5, STRIDES, sampling_ratio, 56, aligned)
    assert out.shape == (40, 3, 7, 5) and out.dtype == torch.float32
    torch.testing.assert_close(out, expected(rois, feats, (7, 5), sampling_ratio, aligned), rtol=1e-6, atol=1e-6)


def test_rois_outside_the_image() -> None:
    feats = make_feats()
    rois = torch.tensor([[0, -300.0, -300, -200, -200],  # fully outside: zeros
                         [1, 200, 230, 420, 400],  # partly outside
                         [0, 250, -40, 300, 20]])
    out = multi_level_roi_align(rois, feats, 7, 7, STRIDES, 2, 56, True)
    assert (out[0] == 0).all()
    torch.testing.assert_close(out, expected(rois, feats, (7, 7), 2, True), rtol=1e-6, atol=1e-6)


def test_negative_area_and_out_of_batch_rois_give_zeros() -> None:
    feats = make_feats()  # batch 2
    rois = torch.tensor([[0, 50.0, 10, 20, 40],  # x2 < x1: negative area, NaN scale
                         [1, 50, 40, 20, 10],  # both flipped: positive area, pooled
                         [-1, 10, 10, 40, 40], [2, 10, 10, 40, 40],  # outside the batch
                         [-0.5, 10, 10, 40, 40], [1.9, 10, 10, 40, 40]])  # truncated to 0 and 1
    out = multi_level_roi_align(rois, feats, 7, 7, STRIDES, 2, 56, True)
    assert (out[[0, 2, 3]] == 0).all()
    valid = [1, 4, 5]
    torch.testing.assert_close(out[valid], expected(rois[valid], feats, (7, 7), 2, True), rtol=0, atol=0)
    assert (out[valid].abs().sum(dim=(1, 2, 3)) > 0).all()


def test_empty_rois() -> None:
    out = multi_level_roi_align(torch.zeros(0, 5), make_feats(), 7, 7, STRIDES, 0, 56, True)
    assert out.shape == (0, 3, 7, 7)


def test_float16_features_pool_in_float32() -> None:
    feats, rois = [f.half() for f in make_feats()], make_rois(20, seed=1)
    out = multi_level_roi_align(rois, feats, 7, 7, STRIDES, 2, 56, True)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out, expected(rois, feats, (7, 7), 2, True).half(), rtol=0, atol=0)


def test_fewer_levels_clamp_to_the_coarsest() -> None:
    feats, rois = make_feats()[:2], make_rois(30, seed=2)
    out = multi_level_roi_align(rois, feats, 4, 4, STRIDES[:2], 0, 56, True)
    levels = map_roi_levels(rois, 2)
    ref = torch.cat([torchvision.ops.roi_align(feats[int(lvl)], rois[r:r + 1], (4, 4), 1.0 / STRIDES[int(lvl)], 0, True)
                     for r, lvl in enumerate(levels)])
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)


def test_mismatched_levels_raise_a_dettool_error() -> None:
    with pytest.raises(DettoolError, match="2 feature levels for 4 featmap_strides"):
        multi_level_roi_align(make_rois(3), make_feats()[:2], 7, 7, STRIDES, 0, 56, True)
    with pytest.raises(DettoolError, match="rois must be"):
        multi_level_roi_align(torch.zeros(3, 4), make_feats(), 7, 7, STRIDES, 0, 56, True)
