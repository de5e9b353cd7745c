"""dettool::modulated_deform_conv against torchvision.ops.deform_conv2d."""
from __future__ import annotations

import pytest
import torch
import torchvision

from dettool.errors import DettoolError
from dettool.ops import modulated_deform_conv


def conv_out(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def make_inputs(groups: int, deform_groups: int, stride: tuple[int, int], padding: tuple[int, int],
                dilation: tuple[int, int], kernel: tuple[int, int] = (3, 3), seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    b, c, h, w, c_out = 2, 4, 9, 11, 6
    kh, kw = kernel
    ho, wo = (conv_out(h, kh, stride[0], padding[0], dilation[0]), conv_out(w, kw, stride[1], padding[1], dilation[1]))
    x = torch.randn(b, c, h, w, generator=g)
    offset = torch.randn(b, 2 * deform_groups * kh * kw, ho, wo, generator=g) * 2
    mask = torch.rand(b, deform_groups * kh * kw, ho, wo, generator=g)
    weight = torch.randn(c_out, c // groups, kh, kw, generator=g)
    bias = torch.randn(c_out, generator=g)
    return x, offset, mask, weight, bias


@pytest.mark.parametrize("groups, deform_groups, stride, padding, dilation, kernel", [
    (1, 1, (1, 1), (1, 1), (1, 1), (3, 3)),
    (2, 1, (1, 1), (1, 1), (1, 1), (3, 3)),
    (1, 2, (2, 2), (1, 1), (1, 1), (3, 3)),
    (2, 4, (2, 1), (2, 0), (2, 1), (3, 3)),
    (1, 2, (1, 1), (0, 1), (1, 1), (1, 3)),
])
def test_matches_torchvision(groups, deform_groups, stride, padding, dilation, kernel) -> None:
    x, offset, mask, weight, bias = make_inputs(groups, deform_groups, stride, padding, dilation, kernel)
    out = modulated_deform_conv(x, offset, mask, weight, bias, list(stride), list(padding), list(dilation),
                                groups, deform_groups)
    ref = torchvision.ops.deform_conv2d(x, offset, weight, bias, stride=stride, padding=padding, dilation=dilation,
                                        mask=mask)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_float16_input_computes_in_float32() -> None:
    inputs = [t.half() for t in make_inputs(1, 1, (1, 1), (1, 1), (1, 1))]
    out = modulated_deform_conv(*inputs, [1, 1], [1, 1], [1, 1], 1, 1)
    x, offset, mask, weight, bias = [t.float() for t in inputs]
    ref = torchvision.ops.deform_conv2d(x, offset, weight, bias, padding=(1, 1), mask=mask)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out, ref.half(), rtol=0, atol=0)


def test_mask_of_ones_is_dcn_v1() -> None:
    x, offset, mask, weight, bias = make_inputs(1, 1, (1, 1), (1, 1), (1, 1))
    out = modulated_deform_conv(x, offset, torch.ones_like(mask), weight, bias, [1, 1], [1, 1], [1, 1], 1, 1)
    torch.testing.assert_close(out, torchvision.ops.deform_conv2d(x, offset, weight, bias, padding=(1, 1)))


def test_inconsistent_attributes_raise_a_dettool_error() -> None:
    x, offset, mask, weight, bias = make_inputs(1, 1, (1, 1), (1, 1), (1, 1))
    with pytest.raises(DettoolError, match="groups=2"):
        modulated_deform_conv(x, offset, mask, weight, bias, [1, 1], [1, 1], [1, 1], 2, 1)
    with pytest.raises(DettoolError, match="offset must be"):
        modulated_deform_conv(x, offset, mask, weight, bias, [1, 1], [1, 1], [1, 1], 1, 2)
