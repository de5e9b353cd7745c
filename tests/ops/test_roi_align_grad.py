"""RoIAlign's input gradient (dettool/ops/roi_align_grad.py) equals torchvision's autograd gradient."""
from __future__ import annotations

import pytest
import torch
from torchvision.ops import roi_align as tv_roi_align

from dettool.ops.roi_align_grad import _torchvision_roi_align_backward, roi_align_backward, roi_align_grad_input


def _rois(g: torch.Generator, n: int, batch: int, extent: float) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * (extent + 40) - 20  # some RoIs cross or leave the image
    wh = torch.rand(n, 2, generator=g) * extent / 2 + 0.3
    return torch.cat([torch.randint(0, batch, (n, 1), generator=g).float(), xy, xy + wh], dim=1)


def torchvision_grad(feat: torch.Tensor, rois: torch.Tensor, grad_out: torch.Tensor, output_size, spatial_scale,
                     sampling_ratio, aligned) -> torch.Tensor:
    leaf = feat.clone().requires_grad_(True)
    tv_roi_align(leaf, rois, output_size, spatial_scale, sampling_ratio, aligned).backward(grad_out)
    return leaf.grad


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
    want = torchvision_grad(feat, rois, grad_out, (7, 6), 0.25, sampling_ratio, aligned)
    assert want.abs().sum() > 0

    layout = torch.channels_last if channels_last else torch.contiguous_format
    got = roi_align_backward(grad_out, rois, feat.shape, 0.25, sampling_ratio, aligned, layout)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    # The gradient comes back in the input's layout (mixed layouts slow the producing conv's backward).
    assert got.is_contiguous(memory_format=layout)
    torch.testing.assert_close(roi_align_grad_input(grad_out, rois, feat.shape, 0.25, sampling_ratio, aligned), want,
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("aligned", [True, False])
def test_torchvision_kernel_path_matches_autograd(aligned):
    """The path roi_align_backward takes off the CPU, run on the CPU."""
    g = torch.Generator().manual_seed(3)
    feat = torch.randn(2, 4, 13, 11, generator=g, dtype=torch.float64)
    rois = _rois(g, 20, 2, extent=40.0).double()
    grad_out = torch.randn(20, 4, 5, 5, generator=g, dtype=torch.float64)
    want = torchvision_grad(feat, rois, grad_out, (5, 5), 0.25, 0, aligned)
    torch.testing.assert_close(_torchvision_roi_align_backward(grad_out, rois, feat.shape, 0.25, 0, aligned), want)


def test_rois_that_sample_no_point_have_no_gradient():
    """Adaptive sampling of a RoI of zero width (aligned) or of negative sides takes no sample, as in torchvision."""
    g = torch.Generator().manual_seed(4)
    feat = torch.randn(1, 3, 10, 10, generator=g, dtype=torch.float64)
    rois = torch.tensor([[0, 12.0, 12, 12, 30], [0, 30, 30, 10, 10], [0, 4, 4, 24, 20]], dtype=torch.float64)
    grad_out = torch.randn(3, 3, 2, 2, generator=g, dtype=torch.float64)
    for aligned in (True, False):
        want = torchvision_grad(feat, rois, grad_out, (2, 2), 0.5, 0, aligned)
        got = roi_align_backward(grad_out, rois, feat.shape, 0.5, 0, aligned)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    only_empty = roi_align_backward(grad_out[:1], rois[:1], feat.shape, 0.5, 0, True)
    assert only_empty.shape == feat.shape and (only_empty == 0).all()


def test_no_rois_give_a_zero_gradient():
    grad = roi_align_backward(torch.zeros(0, 2, 7, 7), torch.zeros(0, 5), torch.Size([1, 2, 8, 8]), 1.0, 2, True)
    assert grad.shape == (1, 2, 8, 8) and (grad == 0).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_uses_torchvision_and_matches_the_cpu():
    g = torch.Generator().manual_seed(5)
    feat = torch.randn(2, 4, 13, 11, generator=g)
    rois = _rois(g, 20, 2, extent=40.0)
    grad_out = torch.randn(20, 4, 7, 7, generator=g)
    cpu = roi_align_backward(grad_out, rois, feat.shape, 0.25, 2, True)
    cuda = roi_align_backward(grad_out.cuda(), rois.cuda(), feat.shape, 0.25, 2, True)
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-5, atol=1e-5)
