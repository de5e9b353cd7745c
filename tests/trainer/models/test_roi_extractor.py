"""MultiLevelRoIAlign: MMDetection's level mapping and equality with torchvision's roi_align."""
from __future__ import annotations

import math

import torch
from torchvision.ops import roi_align

from dettool.trainer.models.roi_extractors import MultiLevelRoIAlign, map_roi_levels

STRIDES = (4, 8, 16, 32)


def _square(side: float) -> list[float]:
    return [0.0, 10.0, 10.0, 10.0 + side, 10.0 + side]


def test_level_mapping_at_the_112_224_448_boundaries():
    sides = [16.0, 111.0, 112.0, 223.0, 224.0, 447.0, 448.0, 1000.0]
    rois = torch.tensor([_square(s) for s in sides])
    assert map_roi_levels(rois, 4).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    # the scale is sqrt(w * h): a 56 x 224 box has scale 112
    assert map_roi_levels(torch.tensor([[0.0, 0.0, 0.0, 56.0, 224.0]]), 4).tolist() == [1]
    # clamped to the number of levels
    assert map_roi_levels(rois, 2).tolist() == [0, 0, 1, 1, 1, 1, 1, 1]
    assert MultiLevelRoIAlign.map_roi_levels(rois, 4).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_forward_equals_roi_align_on_the_mapped_level():
    g = torch.Generator().manual_seed(0)
    size = 640
    feats = [torch.randn(2, 3, size // s, size // s, generator=g) for s in STRIDES]
    feats.append(torch.randn(2, 3, 10, 10, generator=g))  # an extra (P6-like) level is ignored
    r = 40
    # sides log-uniform in [16, 600] so that every level gets RoIs
    wh = torch.exp(torch.empty(r, 2).uniform_(math.log(16), math.log(600), generator=g))
    xy = torch.rand(r, 2, generator=g) * (size - wh)
    rois = torch.cat([torch.randint(0, 2, (r, 1), generator=g).float(), xy, xy + wh], dim=1)
    levels = map_roi_levels(rois, 4)
    assert levels.unique().tolist() == [0, 1, 2, 3]
    out = MultiLevelRoIAlign(output_size=7, strides=STRIDES, sampling_ratio=2)(feats, rois)
    assert out.shape == (r, 3, 7, 7)
    for i in range(r):
        lvl = int(levels[i])
        expected = roi_align(feats[lvl], rois[i:i + 1], (7, 7), spatial_scale=1 / STRIDES[lvl], sampling_ratio=2,
                             aligned=True)
        torch.testing.assert_close(out[i:i + 1], expected)


def test_forward_with_no_rois_and_gradient():
    feats = [torch.randn(1, 4, 64 // s, 64 // s, requires_grad=True) for s in STRIDES]
    extractor = MultiLevelRoIAlign(output_size=5)
    out = extractor(feats, torch.zeros((0, 5)))
    assert out.shape == (0, 4, 5, 5)
    out = extractor(feats, torch.tensor([[0.0, 4.0, 4.0, 40.0, 36.0]]))
    out.sum().backward()
    assert feats[0].grad.abs().sum() > 0 and feats[1].grad is None  # only the mapped level is read
