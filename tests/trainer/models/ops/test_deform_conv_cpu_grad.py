"""The fast CPU deformable-convolution backward equals torchvision's autograd gradient."""
from __future__ import annotations

import pytest
import torch
from torchvision.ops import deform_conv2d as tv_deform_conv2d

from dettool.trainer.models.ops.deform_conv_cpu_grad import deform_conv2d

CASES = {  # name: (C, Co, groups, deform_groups, stride, padding, dilation, modulated, bias, H, W)
    "dcnv2": (6, 4, 1, 1, 1, 1, 1, True, False, 9, 11),
    "dcn_v1_bias": (6, 4, 1, 1, 1, 1, 1, False, True, 9, 11),
    "stride2_dilation2": (4, 6, 1, 1, 2, 2, 2, True, True, 12, 10),
    "groups_and_deform_groups": (8, 6, 2, 2, 1, 1, 1, True, False, 7, 8),
    "one_pixel_input": (3, 2, 1, 1, 1, 1, 1, True, False, 1, 1),
}


@pytest.mark.parametrize("name", list(CASES))
def test_gradient_matches_torchvision(name):
    c, co, groups, dg, stride, pad, dil, modulated, with_bias, h, w = CASES[name]
    g = torch.Generator().manual_seed(len(name))
    ho = (h + 2 * pad - dil * 2 - 1) // stride + 1
    wo = (w + 2 * pad - dil * 2 - 1) // stride + 1
    x = torch.randn(2, c, h, w, generator=g, dtype=torch.float64)
    offset = torch.randn(2, 2 * dg * 9, ho, wo, generator=g, dtype=torch.float64) * 3  # many taps leave the map
    weight = torch.randn(co, c // groups, 3, 3, generator=g, dtype=torch.float64)
    bias = torch.randn(co, generator=g, dtype=torch.float64) if with_bias else None
    mask = torch.rand(2, dg * 9, ho, wo, generator=g, dtype=torch.float64) if modulated else None
    grad_out = torch.randn(2, co, ho, wo, generator=g, dtype=torch.float64)

    def run(fn):
        ins = [t.clone().requires_grad_(True) if t is not None else None for t in (x, offset, weight, bias, mask)]
        out = fn(ins[0], ins[1], ins[2], ins[3], stride=stride, padding=pad, dilation=dil, mask=ins[4])
        out.backward(grad_out)
        return out, [t.grad for t in ins if t is not None]

    ref_out, ref_grads = run(tv_deform_conv2d)
    out, grads = run(deform_conv2d)
    torch.testing.assert_close(out, ref_out)
    for mine, ref in zip(grads, ref_grads):
        assert ref.abs().sum() > 0
        torch.testing.assert_close(mine, ref, rtol=1e-9, atol=1e-9)


def test_no_grad_is_plain_torchvision():
    x, offset, weight = torch.randn(1, 2, 5, 5), torch.randn(1, 18, 5, 5), torch.randn(3, 2, 3, 3)
    with torch.no_grad():
        torch.testing.assert_close(deform_conv2d(x, offset, weight, padding=1),
                                   tv_deform_conv2d(x, offset, weight, padding=1))
