"""dettool::ps_roi_align against torchvision.ops.ps_roi_align (outputs and gradients), its fake
kernel, and its input checks."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch._subclasses.fake_tensor import FakeTensorMode

from dettool.errors import DettoolError
from dettool.ops import ps_roi_align


def make_features(batch: int = 2, channels: int = 3, k: int = 3, size: tuple[int, int] = (20, 26),
                  seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels * k * k, *size, generator=g, dtype=dtype)


def make_rois(num: int, batch: int = 2, image: tuple[float, float] = (320.0, 416.0), seed: int = 0) -> torch.Tensor:
    """RoIs of sides 2 .. 400 px (log-uniform), some reaching outside the ``image`` (h, w)."""
    g = torch.Generator().manual_seed(seed)
    side = 2 * 200 ** torch.rand(num, 2, generator=g)
    xy = torch.rand(num, 2, generator=g) * torch.tensor([image[1], image[0]]) - side / 4
    index = torch.randint(0, batch, (num, 1), generator=g).float()
    return torch.cat([index, xy, xy + side], dim=1)


def edge_rois() -> torch.Tensor:
    """Fully outside (2), partly outside, the whole image (3), inverted (torchvision pools those
    with a fixed sampling_ratio; adaptive sampling of their negative grids gives 0), and batch
    indices truncated toward zero, on a 320 x 416 image."""
    return torch.tensor([[0, -300.0, -300, -200, -200], [1, 500, 400, 700, 650], [0, -40, -30, 60, 50],
                         [1, 380, 280, 450, 350], [0, -5, -5, 420, 330], [1, 300, 300, 20, 20],
                         [0, 400, 10, 150, 200], [1.9, 10, 10, 90, 70], [-0.5, 30, 30, 100, 120]])


def degenerate_rois() -> torch.Tensor:
    """Zero width, zero height, a point: adaptive sampling takes no point (torchvision: 0 / 0 = NaN);
    both sides inverted (adaptive grid -1 x -1, torchvision: 0 / 1); batch indices outside the
    batch of 2."""
    return torch.tensor([[0, 50.0, 20, 50, 90], [1, 10, 60, 90, 60], [0, 33, 33, 33, 33], [1, 80, 80, 60, 60],
                         [2, 10, 10, 90, 70], [-1, 10, 10, 90, 70], [5, 10, 10, 90, 70]])


@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_matches_torchvision(k: int, sampling_ratio: int) -> None:
    features, rois = make_features(k=k, seed=k), torch.cat([make_rois(60, seed=k), edge_rois()])
    out = ps_roi_align(features, rois, k, 1 / 16, sampling_ratio)
    assert out.shape == (len(rois), 3, k, k) and out.dtype == torch.float32
    want = torchvision.ops.ps_roi_align(features, rois, k, 1 / 16, sampling_ratio)
    torch.testing.assert_close(out, want, rtol=0, atol=0)  # torchvision's own kernel
    assert (out[60:62] == 0).all() and (out[62:65] != 0).flatten(1).any(dim=1).all()


def test_channel_layout() -> None:
    """Bin (ph, pw) of output channel c reads input channel (c * k + ph) * k + pw."""
    k, channels = 3, 4
    features = torch.arange(channels * k * k, dtype=torch.float32).view(1, -1, 1, 1).expand(1, -1, 12, 12)
    out = ps_roi_align(features.contiguous(), torch.tensor([[0, 2.0, 2, 10, 9]]), k, 1.0, 2)
    torch.testing.assert_close(out[0], torch.arange(channels * k * k, dtype=torch.float32).view(channels, k, k),
                               rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_degenerate_rois_give_zeros_not_nan(sampling_ratio: int) -> None:
    features, rois = make_features(seed=3), degenerate_rois()
    out = ps_roi_align(features, rois, 3, 0.25, sampling_ratio)
    assert not torch.isnan(out).any()
    assert (out[4:] == 0).all()  # outside the batch
    valid = rois[:4]
    want = torchvision.ops.ps_roi_align(features, valid, 3, 0.25, sampling_ratio)
    if sampling_ratio == 0:
        assert torch.isnan(want[:3]).all() and (want[3] == 0).all()  # torchvision's 0 / 0 and 0 / 1
        assert (out[:4] == 0).all()
    else:  # a fixed grid samples the degenerate RoIs where they are
        torch.testing.assert_close(out[:4], want, rtol=0, atol=0)
        assert (out[:4] != 0).flatten(1).any(dim=1).all()


def test_batch_index_truncates_toward_zero() -> None:
    features = make_features(seed=4)
    rois = torch.tensor([[1.9, 10, 10, 90, 70], [-0.5, 30, 30, 100, 120]])
    want = torchvision.ops.ps_roi_align(features, torch.tensor([[1, 10.0, 10, 90, 70], [0, 30, 30, 100, 120]]), 3,
                                        0.25, 2)
    torch.testing.assert_close(ps_roi_align(features, rois, 3, 0.25, 2), want, rtol=0, atol=0)


def test_empty_rois() -> None:
    out = ps_roi_align(make_features(k=7), torch.zeros(0, 5), 7, 1 / 16, 0)
    assert out.shape == (0, 3, 7, 7)


def test_batch_of_one_and_one_channel() -> None:
    features, rois = make_features(batch=1, channels=1, seed=5), make_rois(20, batch=1, seed=5)
    torch.testing.assert_close(ps_roi_align(features, rois, 3, 1 / 16, 2),
                               torchvision.ops.ps_roi_align(features, rois, 3, 1 / 16, 2), rtol=0, atol=0)


@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_float16_features_pool_in_float32(sampling_ratio: int) -> None:
    features, rois = make_features(k=7, seed=6).half(), torch.cat([make_rois(40, seed=6), edge_rois()])
    out = ps_roi_align(features, rois, 7, 1 / 16, sampling_ratio)
    assert out.dtype == torch.float16
    want = torchvision.ops.ps_roi_align(features.float(), rois, 7, 1 / 16, sampling_ratio)
    torch.testing.assert_close(out, want.half(), rtol=0, atol=0)  # float32 pooling, rounded once
    torch.testing.assert_close(out.float(), want, rtol=1e-3, atol=1e-3)
    # (Not torchvision's own float16 kernel: it also rounds the RoIs, sampling positions and sums
    # to float16, and differs from the float32 result by far more than one rounding.)


def test_invalid_inputs_raise_dettool_errors() -> None:
    features, rois = make_features(), make_rois(3)
    with pytest.raises(DettoolError, match="not a multiple of output_size"):
        ps_roi_align(features[:, :26], rois, 3, 0.25, 0)
    with pytest.raises(DettoolError, match="rois must be"):
        ps_roi_align(features, rois[:, :4], 3, 0.25, 0)
    with pytest.raises(DettoolError, match="features must be"):
        ps_roi_align(features[0], rois, 3, 0.25, 0)
    with pytest.raises(DettoolError, match="output_size"):
        ps_roi_align(features, rois, 0, 0.25, 0)
    with pytest.raises(DettoolError, match="sampling_ratio"):
        ps_roi_align(features, rois, 3, 0.25, -1)
    for scale in (0.0, -0.25, float("nan"), float("inf"), 1e-50):
        with pytest.raises(DettoolError, match="spatial_scale"):
            ps_roi_align(features, rois, 3, scale, 0)


def test_fake_kernel_shapes() -> None:
    with FakeTensorMode():
        for k, channels in ((1, 5), (3, 4), (7, 10)):
            out = ps_roi_align(torch.empty(2, channels * k * k, 30, 40), torch.empty(17, 5), k, 0.0625, 2)
            assert out.shape == (17, channels, k, k) and out.dtype == torch.float32
        out = ps_roi_align(torch.empty(1, 98, 8, 8, dtype=torch.float16), torch.empty(0, 5), 7, 1.0, 0)
        assert out.shape == (0, 2, 7, 7) and out.dtype == torch.float16


def test_exports_with_dynamic_shapes() -> None:
    """torch.export traces the op with symbolic R, B, H, W through the fake kernel."""

    class Pool(torch.nn.Module):
        def forward(self, features, rois):
            return ps_roi_align(features, rois, 7, 1 / 16, 2)

    dims = torch.export.Dim("batch"), torch.export.Dim("num_rois"), torch.export.Dim("h"), torch.export.Dim("w")
    program = torch.export.export(Pool(), (make_features(k=7), make_rois(5)),
                                  dynamic_shapes=({0: dims[0], 2: dims[2], 3: dims[3]}, {0: dims[1]}))
    features, rois = make_features(batch=3, k=7, size=(11, 13), seed=7), make_rois(9, batch=3, seed=7)
    torch.testing.assert_close(program.module()(features, rois), ps_roi_align(features, rois, 7, 1 / 16, 2),
                               rtol=0, atol=0)


# --------------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------------

def torchvision_grad(features: torch.Tensor, rois: torch.Tensor, grad_out: torch.Tensor, k: int,
                     spatial_scale: float, sampling_ratio: int) -> torch.Tensor:
    leaf = features.detach().clone().requires_grad_(True)
    torchvision.ops.ps_roi_align(leaf, rois, k, spatial_scale, sampling_ratio).backward(grad_out)
    return leaf.grad


@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_gradients_match_torchvision(k: int, sampling_ratio: int) -> None:
    features = make_features(k=k, seed=10 + k, dtype=torch.float64).requires_grad_(True)
    rois = torch.cat([make_rois(40, seed=10 + k), edge_rois()]).double()
    grad_out = torch.randn(len(rois), 3, k, k, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
    out = ps_roi_align(features, rois, k, 1 / 16, sampling_ratio)
    assert out.dtype == torch.float64
    out.backward(grad_out)
    want = torchvision_grad(features, rois, grad_out, k, 1 / 16, sampling_ratio)
    assert want.abs().sum() > 0
    torch.testing.assert_close(features.grad, want, rtol=1e-12, atol=1e-12)


def test_degenerate_and_out_of_batch_rois_have_no_gradient() -> None:
    features = make_features(seed=12).requires_grad_(True)
    ps_roi_align(features, degenerate_rois(), 3, 0.25, 0).sum().backward()
    assert (features.grad == 0).all()  # torchvision's NaN rows would make it NaN
    features.grad = None
    ps_roi_align(features, degenerate_rois()[4:], 3, 0.25, 2).sum().backward()
    assert (features.grad == 0).all()  # outside the batch: nothing read, nothing back


def test_float32_gradients_layout_and_no_roi_gradient() -> None:
    features = make_features(seed=13).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    rois = make_rois(30, seed=13).requires_grad_(True)
    grad_out = torch.randn(30, 3, 3, 3, generator=torch.Generator().manual_seed(13))
    ps_roi_align(features, rois, 3, 1 / 16, 2).backward(grad_out)
    assert features.grad.dtype == torch.float32 and features.grad.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(features.grad, torchvision_grad(features, rois.detach(), grad_out, 3, 1 / 16, 2),
                               rtol=1e-5, atol=1e-5)
    assert rois.grad is None


def test_float16_gradients_are_float16() -> None:
    features = make_features(seed=14).half().requires_grad_(True)
    rois = make_rois(30, seed=14)
    ps_roi_align(features, rois, 3, 1 / 16, 2).float().sum().backward()
    want = torchvision_grad(features.float(), rois, torch.ones(30, 3, 3, 3), 3, 1 / 16, 2)
    assert features.grad.dtype == torch.float16
    torch.testing.assert_close(features.grad, want.half(), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_gradcheck(sampling_ratio: int) -> None:
    features = make_features(batch=2, channels=2, size=(9, 11), seed=15, dtype=torch.float64).requires_grad_(True)
    rois = torch.tensor([[0, 3.0, 5, 40, 30], [1, 10, 2, 47, 63], [1, 0, 0, 150, 130], [0, 20, 20, 21, 60],
                         [0, 20, 20, 20, 60], [2, 3, 5, 40, 30]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda f: ps_roi_align(f, rois, 3, 0.25, sampling_ratio), (features,))


def test_opcheck() -> None:
    """torch.library's checks of the registration: schema, fake kernel, autograd, AOT dispatch."""
    features = make_features(seed=16).requires_grad_(True)
    for args in ((features, torch.cat([make_rois(20, seed=16), edge_rois()]), 3, 1 / 16, 2),
                 (features, degenerate_rois(), 3, 0.25, 0)):
        result = torch.library.opcheck(torch.ops.dettool.ps_roi_align.default, args)
        assert set(result.values()) == {"SUCCESS"}, result
