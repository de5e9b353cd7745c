"""Deformable convolution's gradients (dettool/ops/deform_conv_grad.py) equal torchvision's autograd gradients."""
from __future__ import annotations

import pytest
import torch
from torchvision.ops import deform_conv2d as tv_deform_conv2d

from dettool.ops.deform_conv_grad import _torchvision_deform_conv_backward, deform_conv_backward

CASES = {  # name: (C, Co, groups, deform_groups, stride, padding, dilation, modulated, H, W)
    "dcnv2": (6, 4, 1, 1, 1, 1, 1, True, 9, 11),
    "dcn_v1": (6, 4, 1, 1, 1, 1, 1, False, 9, 11),
    "stride2_dilation2": (4, 6, 1, 1, 2, 2, 2, True, 12, 10),
    "groups_and_deform_groups": (8, 6, 2, 2, 1, 1, 1, True, 7, 8),
    "one_pixel_input": (3, 2, 1, 1, 1, 1, 1, True, 1, 1),
}
ALL = (True, True, True, True, True)


def case_inputs(name: str):
    """``(tensors, attributes, grad_out)``: float64 input, offset, mask, weight, bias; DCN v1 has a mask of ones."""
    c, co, groups, dg, stride, pad, dil, modulated, h, w = CASES[name]
    g = torch.Generator().manual_seed(len(name))
    ho = (h + 2 * pad - dil * 2 - 1) // stride + 1
    wo = (w + 2 * pad - dil * 2 - 1) // stride + 1
    x = torch.randn(2, c, h, w, generator=g, dtype=torch.float64)
    offset = torch.randn(2, 2 * dg * 9, ho, wo, generator=g, dtype=torch.float64) * 3  # many taps leave the map
    mask = torch.rand(2, dg * 9, ho, wo, generator=g, dtype=torch.float64) if modulated else \
        torch.ones(2, dg * 9, ho, wo, dtype=torch.float64)
    weight = torch.randn(co, c // groups, 3, 3, generator=g, dtype=torch.float64)
    bias = torch.randn(co, generator=g, dtype=torch.float64)
    grad_out = torch.randn(2, co, ho, wo, generator=g, dtype=torch.float64)
    attributes = ((stride, stride), (pad, pad), (dil, dil), groups, dg)
    return (x, offset, mask, weight, bias), attributes, grad_out


def torchvision_grads(tensors, attributes, grad_out) -> list[torch.Tensor]:
    """Gradients of (input, offset, mask, weight, bias) by torchvision's autograd."""
    x, offset, mask, weight, bias = leaves = [t.clone().requires_grad_(True) for t in tensors]
    stride, padding, dilation, _, _ = attributes
    tv_deform_conv2d(x, offset, weight, bias, stride=stride, padding=padding, dilation=dilation,
                     mask=mask).backward(grad_out)
    return [t.grad for t in leaves]


@pytest.mark.parametrize("name", list(CASES))
def test_gradients_match_torchvision(name):
    tensors, attributes, grad_out = case_inputs(name)
    want = torchvision_grads(tensors, attributes, grad_out)
    got = deform_conv_backward(grad_out, *tensors, *attributes, needs_grad=ALL)
    for what, mine, ref in zip(("input", "offset", "mask", "weight", "bias"), got, want):
        assert ref.abs().sum() > 0, what
        torch.testing.assert_close(mine, ref, rtol=1e-9, atol=1e-9, msg=what)


def test_only_the_wanted_gradients_and_a_mask_of_ones_left_out():
    """DCN v1 (a mask of ones that needs no gradient) skips the modulation; the others are unchanged."""
    tensors, attributes, grad_out = case_inputs("dcn_v1")
    want = torchvision_grads(tensors, attributes, grad_out)
    needs = (True, True, False, True, False)
    got = deform_conv_backward(grad_out, *tensors, *attributes, needs_grad=needs)
    assert got[2] is None and got[4] is None
    for mine, ref in zip([got[0], got[1], got[3]], [want[0], want[1], want[3]]):
        torch.testing.assert_close(mine, ref, rtol=1e-9, atol=1e-9)
    assert deform_conv_backward(grad_out, *tensors, *attributes, needs_grad=(False,) * 5) == [None] * 5


@pytest.mark.parametrize("name", ["dcnv2", "groups_and_deform_groups"])
def test_torchvision_kernel_path_matches_autograd(name):
    """The path deform_conv_backward takes off the CPU, run on the CPU."""
    tensors, attributes, grad_out = case_inputs(name)
    want = torchvision_grads(tensors, attributes, grad_out)
    got = _torchvision_deform_conv_backward(grad_out, *tensors, *attributes, needs_grad=ALL)
    for mine, ref in zip(got, want):
        torch.testing.assert_close(mine, ref)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_uses_torchvision_and_matches_the_cpu():
    tensors, attributes, grad_out = case_inputs("groups_and_deform_groups")
    cpu = deform_conv_backward(grad_out, *tensors, *attributes, needs_grad=ALL)
    cuda = deform_conv_backward(grad_out.cuda(), *(t.cuda() for t in tensors), *attributes, needs_grad=ALL)
    for mine, ref in zip(cuda, cpu):
        torch.testing.assert_close(mine.cpu(), ref, rtol=1e-7, atol=1e-7)
