"""The fast CPU RoIAlign backward equals torchvision's autograd gradient."""
from __future__ import annotations

import pytest
import torch
from torchvision.ops import roi_align as tv_roi_align

from dettool.trainer.models.ops.roi_align_cpu_grad import roi_align


def _rois(g: torch.Generator, n: int, batch: int, extent: float) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * (extent + 40) - 20  # some RoIs cross or leave the image
    wh = torch.rand(n, 2, generator=g) * extent / 2 + 0.3
    return torch.cat([torch.randint(0, batch, (n, 1), generator=g).float(), xy, xy + wh], dim=1)


@pytest.mark.parametrize("sampling_ratio", [0, 1, 2])
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
def test_gradient_matches_torchvision(sampling_ratio, aligned, channels_last):
    g = torch.Generator().manual_seed(sampling_ratio * 10 + aligned)
    feat = torch.randn(3, 5, 17, 23, generator=g, dtype=torch.float64)
    if channels_last:
        feat = feat.contiguous(memory_format=torch.channels_last)
    rois = _rois(g, 40, 3, extent=23 / 0.25).double()
    grad_out = torch.randn(40, 5, 7, 6, generator=g, dtype=torch.float64)

    ref_in = feat.clone().requires_grad_(True)
    ref = tv_roi_align(ref_in, rois, (7, 6), 0.25, sampling_ratio, aligned)
    ref.backward(grad_out)

    mine_in = feat.clone().requires_grad_(True)
    out = roi_align(mine_in, rois, (7, 6), 0.25, sampling_ratio, aligned)
    out.backward(grad_out)

    torch.testing.assert_close(out, ref)
    assert ref_in.grad.abs().sum() > 0
    torch.testing.assert_close(mine_in.grad, ref_in.grad, rtol=1e-10, atol=1e-10)


def test_empty_rois_and_no_grad_path():
    feat = torch.randn(1, 2, 8, 8, requires_grad=True)
    out = roi_align(feat, torch.zeros((0, 5)), (7, 7), 1.0, 2, True)
    assert out.shape == (0, 2, 7, 7)
    out.sum().backward()
    assert feat.grad is not None and feat.grad.abs().sum() == 0
    with torch.no_grad():
        rois = torch.tensor([[0.0, 1.0, 1.0, 6.0, 5.0]])
        torch.testing.assert_close(roi_align(feat, rois, (3, 3), 1.0, 2, True), tv_roi_align(feat, rois, (3, 3), 1.0, 2, True))
