"""DettoolModulatedDeformConv CPU implementation vs torchvision.ops.deform_conv2d.

Tolerances: float32 atol 1e-5 / rtol 1e-5 (the sums over C/groups * kH * kW taps run in another
order than torchvision's BLAS product); float16 rtol 1e-3 / atol 1e-3 (1 float16 ulp), and
bit-equal to the float32 path rounded once.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from dettool_op_references import reference_modulated_deform_conv

FP32 = dict(atol=1e-5, rtol=1e-5)
FP16 = dict(atol=1e-3, rtol=1e-3)


def make_inputs(generator: torch.Generator, batch=2, channels=8, size=(12, 11), out_channels=6, kernel=(3, 3),
                stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1, deform_groups=1,
                offset_scale=2.0):
    h, w = size
    kh, kw = kernel
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    taps = deform_groups * kh * kw
    return dict(
        input=torch.randn(batch, channels, h, w, generator=generator),
        offset=torch.randn(batch, 2 * taps, ho, wo, generator=generator) * offset_scale,
        mask=torch.rand(batch, taps, ho, wo, generator=generator),
        weight=torch.randn(out_channels, channels // groups, kh, kw, generator=generator) * 0.2,
        bias=torch.randn(out_channels, generator=generator),
        stride=stride, padding=padding, dilation=dilation, groups=groups, deform_groups=deform_groups)


def run_both(cpu_ops, inputs):
    got = cpu_ops.modulated_deform_conv(**inputs)
    ref_args = {k: v for k, v in inputs.items() if k not in ("groups", "deform_groups")}
    return got, reference_modulated_deform_conv(**ref_args)


CASES = {
    "3x3": dict(),
    "stride2-dilation2-padding2": dict(stride=(2, 2), dilation=(2, 2), padding=(2, 2)),
    "groups2-deform-groups2": dict(groups=2, deform_groups=2, out_channels=4),
    "deform-groups4": dict(deform_groups=4),
    "non-square-kernel-and-stride": dict(kernel=(3, 2), stride=(2, 1), padding=(1, 0), size=(9, 14)),
    "1x1-no-padding": dict(kernel=(1, 1), padding=(0, 0)),
    "many-channels": dict(channels=64, out_channels=70, size=(7, 7)),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_random_inputs_match_torchvision(cpu_ops, case):
    g = torch.Generator().manual_seed(20)
    got, want = run_both(cpu_ops, make_inputs(g, **CASES[case]))
    torch.testing.assert_close(got, want, **FP32)


def test_offsets_far_outside_read_zeros(cpu_ops):
    g = torch.Generator().manual_seed(21)
    inputs = make_inputs(g, offset_scale=15.0)
    got, want = run_both(cpu_ops, inputs)
    torch.testing.assert_close(got, want, **FP32)
    inputs["offset"] = torch.full_like(inputs["offset"], 1000.0)  # every tap off the input: bias only
    got = cpu_ops.modulated_deform_conv(**inputs)
    torch.testing.assert_close(got, inputs["bias"].view(1, -1, 1, 1).expand_as(got), **FP32)


def test_offsets_on_pixel_edges(cpu_ops):
    """Integer and half-integer offsets put taps exactly on pixels, edges and the -1 / H borders."""
    g = torch.Generator().manual_seed(22)
    inputs = make_inputs(g)
    inputs["offset"] = torch.randint(-4, 5, inputs["offset"].shape, generator=g).float() / 2
    got, want = run_both(cpu_ops, inputs)
    torch.testing.assert_close(got, want, **FP32)


def test_zero_offsets_and_unit_mask_is_conv2d(cpu_ops):
    g = torch.Generator().manual_seed(23)
    inputs = make_inputs(g, groups=2, out_channels=4)
    inputs["offset"].zero_()
    inputs["mask"].fill_(1.0)
    got = cpu_ops.modulated_deform_conv(**inputs)
    want = F.conv2d(inputs["input"], inputs["weight"], inputs["bias"], stride=1, padding=1, groups=2)
    torch.testing.assert_close(got, want, **FP32)


def test_empty_batch(cpu_ops):
    g = torch.Generator().manual_seed(24)
    got = cpu_ops.modulated_deform_conv(**make_inputs(g, batch=0))
    assert got.shape == (0, 6, 12, 11)


def test_invalid_shapes_are_rejected(cpu_ops):
    g = torch.Generator().manual_seed(25)
    with pytest.raises(ValueError, match="divisible by groups"):
        cpu_ops.modulated_deform_conv(**make_inputs(g, groups=3))
    with pytest.raises(ValueError, match="fit the padded input"):
        cpu_ops.modulated_deform_conv(**make_inputs(g, size=(2, 2), padding=(0, 0)))


@pytest.mark.parametrize("case", ["3x3", "groups2-deform-groups2", "stride2-dilation2-padding2"])
def test_float16(cpu_ops, case):
    g = torch.Generator().manual_seed(26)
    inputs = make_inputs(g, **CASES[case])
    half = {k: (v.half() if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
    got, want = run_both(cpu_ops, half)
    assert got.dtype == torch.float16
    torch.testing.assert_close(got, want, **FP16)
    as_float = {k: (v.float() if isinstance(v, torch.Tensor) else v) for k, v in half.items()}
    assert torch.equal(got, cpu_ops.modulated_deform_conv(**as_float).half())
