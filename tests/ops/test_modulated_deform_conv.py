"""dettool::modulated_deform_conv against torchvision.ops.deform_conv2d: outputs and gradients."""
from __future__ import annotations

import pytest
import torch
import torchvision

from dettool.errors import DettoolError
from dettool.ops import modulated_deform_conv


def conv_out(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def make_inputs(groups: int, deform_groups: int, stride: tuple[int, int], padding: tuple[int, int],
                dilation: tuple[int, int], kernel: tuple[int, int] = (3, 3), seed: int = 0,
                dtype: torch.dtype = torch.float32, size: tuple[int, int] = (9, 11)):
    g = torch.Generator().manual_seed(seed)
    b, c, c_out = 2, 4, 6
    h, w = size
    kh, kw = kernel
    ho, wo = (conv_out(h, kh, stride[0], padding[0], dilation[0]), conv_out(w, kw, stride[1], padding[1], dilation[1]))
    x = torch.randn(b, c, h, w, generator=g, dtype=dtype)
    offset = torch.randn(b, 2 * deform_groups * kh * kw, ho, wo, generator=g, dtype=dtype) * 2
    mask = torch.rand(b, deform_groups * kh * kw, ho, wo, generator=g, dtype=dtype)
    weight = torch.randn(c_out, c // groups, kh, kw, generator=g, dtype=dtype)
    bias = torch.randn(c_out, generator=g, dtype=dtype)
    return x, offset, mask, weight, bias


CONFIGS = [  # groups, deform_groups, stride, padding, dilation, kernel
    (1, 1, (1, 1), (1, 1), (1, 1), (3, 3)),
    (2, 1, (1, 1), (1, 1), (1, 1), (3, 3)),
    (1, 2, (2, 2), (1, 1), (1, 1), (3, 3)),
    (2, 4, (2, 1), (2, 0), (2, 1), (3, 3)),
    (1, 2, (1, 1), (0, 1), (1, 1), (1, 3)),
]


@pytest.mark.parametrize("groups, deform_groups, stride, padding, dilation, kernel", CONFIGS)
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


# --------------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------------

def torchvision_grads(tensors, grad_out, stride, padding, dilation) -> list[torch.Tensor]:
    x, offset, mask, weight, bias = leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    torchvision.ops.deform_conv2d(x, offset, weight, bias, stride=stride, padding=padding, dilation=dilation,
                                  mask=mask).backward(grad_out)
    return [t.grad for t in leaves]


@pytest.mark.parametrize("groups, deform_groups, stride, padding, dilation, kernel", CONFIGS)
def test_gradients_match_torchvision(groups, deform_groups, stride, padding, dilation, kernel) -> None:
    tensors = [t.requires_grad_(True) for t in make_inputs(groups, deform_groups, stride, padding, dilation, kernel,
                                                             seed=1, dtype=torch.float64)]
    out = modulated_deform_conv(*tensors, list(stride), list(padding), list(dilation), groups, deform_groups)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out.backward(grad_out)
    want = torchvision_grads(tensors, grad_out, stride, padding, dilation)
    for what, t, ref in zip(("input", "offset", "mask", "weight", "bias"), tensors, want):
        assert ref.abs().sum() > 0, what
        torch.testing.assert_close(t.grad, ref, rtol=1e-9, atol=1e-9, msg=what)


def test_float32_and_float16_gradients_take_their_inputs_types() -> None:
    tensors = make_inputs(2, 2, (1, 1), (1, 1), (1, 1), seed=2)
    grad_out = torch.randn(2, 6, 9, 11, generator=torch.Generator().manual_seed(2))
    want = torchvision_grads(tensors, grad_out, (1, 1), (1, 1), (1, 1))
    leaves = [t.clone().requires_grad_(True) for t in tensors]
    modulated_deform_conv(*leaves, [1, 1], [1, 1], [1, 1], 2, 2).backward(grad_out)
    for t, ref in zip(leaves, want):
        torch.testing.assert_close(t.grad, ref, rtol=1e-4, atol=1e-4)
    halves = [t.half().requires_grad_(True) for t in tensors]
    modulated_deform_conv(*halves, [1, 1], [1, 1], [1, 1], 2, 2).backward(grad_out.half())
    assert all(t.grad.dtype == torch.float16 for t in halves)


def test_only_wanted_gradients() -> None:
    x, offset, mask, weight, bias = make_inputs(1, 1, (1, 1), (1, 1), (1, 1), seed=3)
    x.requires_grad_(True)
    weight.requires_grad_(True)
    modulated_deform_conv(x, offset, torch.ones_like(mask), weight, bias, [1, 1], [1, 1], [1, 1]).sum().backward()
    assert x.grad is not None and weight.grad is not None
    assert offset.grad is None and bias.grad is None


@pytest.mark.parametrize("modulated", [True, False])
def test_gradcheck(modulated: bool) -> None:
    tensors = make_inputs(2, 2, (2, 1), (1, 1), (1, 2), seed=4, dtype=torch.float64, size=(5, 6))
    x, offset, mask, weight, bias = [t.requires_grad_(True) for t in tensors]
    if not modulated:
        mask = torch.ones_like(mask)

    def fn(x, offset, mask, weight, bias):
        return modulated_deform_conv(x, offset, mask, weight, bias, [2, 1], [1, 1], [1, 2], 2, 2)
    assert torch.autograd.gradcheck(fn, (x, offset, mask, weight, bias))


def test_opcheck() -> None:
    """torch.library's checks of the registration: schema, fake kernel, autograd (the CPU backward
    is eager-only, so AOT tracing is not tested)."""
    tensors = [t.requires_grad_(True) for t in make_inputs(2, 2, (2, 1), (1, 1), (1, 2), seed=5)]
    checks = ("test_schema", "test_autograd_registration", "test_faketensor")
    result = torch.library.opcheck(torch.ops.dettool.modulated_deform_conv.default,
                                   (*tensors, [2, 1], [1, 1], [1, 2], 2, 2), test_utils=checks)
    assert result == dict.fromkeys(checks, "SUCCESS")


# --------------------------------------------------------------------------------------------
# The training model's deformable convolution is the op
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("modulated, with_bias, stride", [(True, False, 1), (False, True, 2), (True, True, 1)])
def test_trainer_deform_conv_matches_torchvision(modulated: bool, with_bias: bool, stride: int) -> None:
    """DeformConv2dPack (DCN v1: the op with a mask of ones) equals torchvision's deform_conv2d
    (v1: no mask), outputs and gradients of the input and every parameter."""
    from dettool.trainer.models.backbones.deform_conv import DeformConv2dPack

    torch.manual_seed(6)
    layer = DeformConv2dPack(4, 6, 3, stride=stride, padding=1, bias=with_bias, modulated=modulated,
                             deform_groups=2).double()
    torch.nn.init.normal_(layer.conv_offset.weight, std=0.3)
    x = torch.randn(2, 4, 9, 8, dtype=torch.float64, requires_grad=True)
    out = layer(x)

    x_ref = x.detach().clone().requires_grad_(True)
    ref_layer = DeformConv2dPack(4, 6, 3, stride=stride, padding=1, bias=with_bias, modulated=modulated,
                                 deform_groups=2).double()
    ref_layer.load_state_dict(layer.state_dict())
    pred = ref_layer.conv_offset(x_ref)
    mask = pred[:, ref_layer.num_offset:].sigmoid() if modulated else None
    ref = torchvision.ops.deform_conv2d(x_ref, pred[:, : ref_layer.num_offset], ref_layer.weight, ref_layer.bias,
                                        stride=stride, padding=1, mask=mask)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)

    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    out.backward(grad_out)
    ref.backward(grad_out)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-9, atol=1e-9)
    for (name, p), p_ref in zip(layer.named_parameters(), ref_layer.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-9, atol=1e-9, msg=name)
