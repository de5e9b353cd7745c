"""dettool::multi_level_roi_align against torchvision's roi_align of each RoI on its mapped level,
against MMDetection's SingleRoIExtractor computation (roi_scale_factor), and its gradients against
torchvision's autograd."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torchvision

from dettool.errors import DettoolError
from dettool.ops import map_roi_levels, multi_level_roi_align

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


# --------------------------------------------------------------------------------------------
# roi_scale_factor (Double-Head R-CNN)
# --------------------------------------------------------------------------------------------

def mmdet_single_roi_extractor(feats: list[torch.Tensor], rois: torch.Tensor, output_size: tuple[int, int],
                               sampling_ratio: int, aligned: bool, roi_scale_factor: float | None) -> torch.Tensor:
    """MMDetection 3.3's ``SingleRoIExtractor.forward(feats, rois, roi_scale_factor)`` (finest_scale
    56, RoIAlign layers on torchvision), written out as MMDetection does it."""
    rois = rois.type_as(feats[0])
    roi_feats = feats[0].new_zeros(rois.size(0), feats[0].shape[1], *output_size)
    scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
    target_lvls = torch.floor(torch.log2(scale / 56 + 1e-6)).clamp(min=0, max=len(feats) - 1).long()
    if roi_scale_factor is not None:  # BaseRoIExtractor.roi_rescale
        cx = (rois[:, 1] + rois[:, 3]) * 0.5
        cy = (rois[:, 2] + rois[:, 4]) * 0.5
        w = rois[:, 3] - rois[:, 1]
        h = rois[:, 4] - rois[:, 2]
        new_w = w * roi_scale_factor
        new_h = h * roi_scale_factor
        x1 = cx - new_w * 0.5
        x2 = cx + new_w * 0.5
        y1 = cy - new_h * 0.5
        y2 = cy + new_h * 0.5
        rois = torch.stack((rois[:, 0], x1, y1, x2, y2), dim=-1)
    for i in range(len(feats)):
        inds = (target_lvls == i).nonzero(as_tuple=False).squeeze(1)
        if inds.numel() > 0:
            roi_feats[inds] = torchvision.ops.roi_align(feats[i], rois[inds], output_size, 1.0 / STRIDES[i],
                                                        sampling_ratio, aligned)
    return roi_feats


def border_rois() -> torch.Tensor:
    """RoIs on and across the borders of a 256 x 258 image, at every level, a zero-area one, and one
    whose rescaled box leaves the image though the original does not."""
    return torch.tensor([[0, 0.0, 0, 30, 20], [1, 230, 240, 256, 258], [0, -10, 100, 60, 180],
                         [1, 200, -30, 300, 90], [0, 0, 0, 256, 258], [1, 5, 5, 500, 400],
                         [0, 40, 40, 40, 90], [1, 1, 1, 250, 250], [0, 120, 120, 120, 120]])


@pytest.mark.parametrize("roi_scale_factor", [1.3, 1.0])
@pytest.mark.parametrize("sampling_ratio, aligned", [(2, True), (0, True), (0, False)])
def test_roi_scale_factor_equals_mmdetection(roi_scale_factor: float, sampling_ratio: int, aligned: bool) -> None:
    """Bit-equal to MMDetection's computation: levels of the original RoIs, pooling of the rescaled
    ones (a factor of 1.0 is MMDetection's None: no rescaling)."""
    feats = make_feats(seed=3)
    rois = torch.cat([make_rois(60, seed=3), border_rois()])
    assert set(map_roi_levels(rois, 4).tolist()) == {0, 1, 2, 3}
    out = multi_level_roi_align(rois, feats, 7, 7, STRIDES, sampling_ratio, 56, aligned, roi_scale_factor)
    want = mmdet_single_roi_extractor(feats, rois, (7, 7), sampling_ratio, aligned,
                                      None if roi_scale_factor == 1.0 else roi_scale_factor)
    torch.testing.assert_close(out, want, rtol=0, atol=0)


def test_factor_1_is_the_default_and_todays_output() -> None:
    feats, rois = make_feats(seed=4), make_rois(50, seed=4)
    default = multi_level_roi_align(rois, feats, 7, 7, STRIDES, 2, 56, True)
    assert torch.equal(multi_level_roi_align(rois, feats, 7, 7, STRIDES, 2, 56, True, 1.0), default)
    assert torch.equal(torch.ops.dettool.multi_level_roi_align(rois, feats, 7, 7, STRIDES, 2, 56, True), default)
    assert torch.equal(default, expected(rois, feats, (7, 7), 2, True))
    assert not torch.equal(multi_level_roi_align(rois, feats, 7, 7, STRIDES, 2, 56, True, 1.3), default)


def test_the_level_comes_from_the_original_roi() -> None:
    """A RoI of scale 100 (level 0) enlarged 1.3 times (scale 130, level 1 by itself) is pooled on level 0."""
    feats = make_feats(seed=5)
    roi = torch.tensor([[1, 60.0, 50, 160, 150]])
    enlarged = torch.tensor([[1, 45.0, 35, 175, 165]])
    assert map_roi_levels(roi, 4).tolist() == [0] and map_roi_levels(enlarged, 4).tolist() == [1]
    out = multi_level_roi_align(roi, feats, 7, 7, STRIDES, 2, 56, True, 1.3)
    level0 = torchvision.ops.roi_align(feats[0], enlarged, (7, 7), 1.0 / STRIDES[0], 2, True)
    torch.testing.assert_close(out, level0, rtol=0, atol=0)


def test_roi_scale_factor_with_float16_features_and_no_rois() -> None:
    feats, rois = [f.half() for f in make_feats(seed=6)], make_rois(30, seed=6)
    out = multi_level_roi_align(rois, feats, 7, 7, STRIDES, 2, 56, True, 1.3)
    want = mmdet_single_roi_extractor([f.float() for f in feats], rois, (7, 7), 2, True, 1.3)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out, want.half(), rtol=0, atol=0)
    assert multi_level_roi_align(rois[:0], feats, 7, 7, STRIDES, 2, 56, True, 1.3).shape == (0, 3, 7, 7)


def test_a_factor_that_is_1_in_float32_does_not_rescale() -> None:
    """As the float32 ONNX attribute and the plugin decide: 1 + 1e-10 is 1 in float32."""
    feats, rois = make_feats(seed=13), make_rois(20, seed=13)
    default = multi_level_roi_align(rois, feats, 7, 7, STRIDES, 2, 56, True)
    assert torch.equal(multi_level_roi_align(rois, feats, 7, 7, STRIDES, 2, 56, True, 1.0 + 1e-10), default)


@pytest.mark.parametrize("factor", [0.0, -1.3, float("nan"), float("inf"), 1e39, 1e-50])
def test_roi_scale_factor_must_be_positive_and_finite(factor: float) -> None:
    with pytest.raises(DettoolError, match="roi_scale_factor"):
        multi_level_roi_align(make_rois(3), make_feats(), 7, 7, STRIDES, 0, 56, True, factor)


def test_ops_import_nothing_from_the_trainer() -> None:
    code = "import sys, dettool.ops; print(sorted(m for m in sys.modules if m.startswith('dettool.trainer')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# --------------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------------

def torchvision_feature_grads(rois, feats, grad_out, output_size, sampling_ratio, aligned, roi_scale_factor):
    """Gradients of the features through MMDetection's computation on torchvision's autograd."""
    leaves = [f.detach().clone().requires_grad_(True) for f in feats]
    out = mmdet_single_roi_extractor(leaves, rois, output_size, sampling_ratio, aligned,
                                     None if roi_scale_factor == 1.0 else roi_scale_factor)
    out.backward(grad_out)
    return [f.grad for f in leaves]


@pytest.mark.parametrize("roi_scale_factor", [1.0, 1.3])
@pytest.mark.parametrize("sampling_ratio, aligned", [(2, True), (0, True), (0, False)])
def test_feature_gradients_match_torchvision(roi_scale_factor, sampling_ratio, aligned) -> None:
    feats = [f.double().requires_grad_(True) for f in make_feats(seed=7)]
    rois = torch.cat([make_rois(60, seed=7), border_rois()]).double()
    grad_out = torch.randn(len(rois), 3, 7, 5, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    out = multi_level_roi_align(rois, feats, 7, 5, STRIDES, sampling_ratio, 56, aligned, roi_scale_factor)
    assert out.dtype == torch.float64
    out.backward(grad_out)
    want = torchvision_feature_grads(rois, feats, grad_out, (7, 5), sampling_ratio, aligned, roi_scale_factor)
    for level, (feat, ref) in enumerate(zip(feats, want)):
        assert ref.abs().sum() > 0, level
        torch.testing.assert_close(feat.grad, ref, rtol=1e-10, atol=1e-10, msg=f"level {level}")


def test_float32_gradients_and_layouts() -> None:
    """float32 and channels-last features: gradients of the features' type and layout; a level no RoI
    maps to gets none; the RoIs get none."""
    feats = [f.contiguous(memory_format=torch.channels_last) if i % 2 else f
             for i, f in enumerate(make_feats(seed=8))]
    feats = [f.requires_grad_(True) for f in feats]
    rois = make_rois(40, seed=8).requires_grad_(True)
    rois_small = rois.detach()[map_roi_levels(rois.detach(), 4) < 3]
    out = multi_level_roi_align(rois_small, feats, 7, 7, STRIDES, 2, 56, True, 1.3)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(8))
    out.backward(grad_out)
    want = torchvision_feature_grads(rois_small, feats, grad_out, (7, 7), 2, True, 1.3)
    for level in range(3):
        assert feats[level].grad.dtype == torch.float32
        assert feats[level].grad.is_contiguous(memory_format=torch.channels_last if level % 2
                                               else torch.contiguous_format)
        torch.testing.assert_close(feats[level].grad, want[level], rtol=1e-5, atol=1e-5)
    assert feats[3].grad is None
    multi_level_roi_align(rois, feats, 7, 7, STRIDES, 2, 56, True).sum().backward()
    assert rois.grad is None


def test_float16_feature_gradients_are_float16() -> None:
    feats = [f.half().requires_grad_(True) for f in make_feats(seed=9)]
    rois = make_rois(30, seed=9)
    multi_level_roi_align(rois, feats, 7, 7, STRIDES, 2, 56, True, 1.3).float().sum().backward()
    want = torchvision_feature_grads(rois, [f.float() for f in feats], torch.ones(30, 3, 7, 7), (7, 7), 2, True, 1.3)
    for feat, ref in zip(feats, want):
        assert feat.grad.dtype == torch.float16
        torch.testing.assert_close(feat.grad, ref.half(), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("roi_scale_factor", [1.0, 1.3])
def test_gradcheck(roi_scale_factor: float) -> None:
    g = torch.Generator().manual_seed(10)
    feats = [torch.randn(2, 2, 64 // s, 48 // s, generator=g, dtype=torch.float64, requires_grad=True)
             for s in (4, 8)]
    rois = torch.tensor([[0, 3.0, 5, 40, 30], [1, 10, 2, 47, 63], [1, 0, 0, 150, 130], [0, 20, 20, 21, 60]],
                        dtype=torch.float64)

    def fn(*levels):
        return multi_level_roi_align(rois, list(levels), 3, 2, [4, 8], 2, 56, True, roi_scale_factor)
    assert torch.autograd.gradcheck(fn, feats)


def test_opcheck() -> None:
    """torch.library's checks of the registration: schema, fake kernel, autograd (the backward is
    eager-only: which RoIs pool on a level is data-dependent, so AOT tracing is not tested)."""
    feats = [f.requires_grad_(True) for f in make_feats(seed=11)]
    for args in ((make_rois(20, seed=11), feats, 7, 7, STRIDES, 2, 56, True, 1.3),
                 (make_rois(20, seed=11), feats, 7, 7, STRIDES, 0, 56, False)):
        checks = ("test_schema", "test_autograd_registration", "test_faketensor")
        result = torch.library.opcheck(torch.ops.dettool.multi_level_roi_align.default, args, test_utils=checks)
        assert result == dict.fromkeys(checks, "SUCCESS")


# --------------------------------------------------------------------------------------------
# The training model's extractor is the op
# --------------------------------------------------------------------------------------------

def test_trainer_extractor_calls_the_op() -> None:
    from dettool.trainer.models.roi_extractors.multi_level_roi_align import MultiLevelRoIAlign

    extractor = MultiLevelRoIAlign(output_size=7, strides=STRIDES, sampling_ratio=2)
    feats = [f.requires_grad_(True) for f in make_feats(seed=12)] + [torch.zeros(2, 3, 4, 4)]  # extra level unread
    rois = make_rois(30, seed=12)
    for factor in (None, 1.3):
        out = extractor(feats, rois, roi_scale_factor=factor)
        want = multi_level_roi_align(rois, feats[:4], 7, 7, STRIDES, 2, 56, True, 1.0 if factor is None else factor)
        assert torch.equal(out, want)
        assert torch.equal(out, mmdet_single_roi_extractor(feats[:4], rois, (7, 7), 2, True, factor))
    out.sum().backward()
    assert all(f.grad is not None for f in feats[:4])
    half = extractor([f.detach().half() for f in feats], rois)
    assert half.dtype == torch.float16
