"""``dettool::modulated_deform_conv``: DCNv2 on ``torchvision.ops.deform_conv2d`` (``DettoolModulatedDeformConv``).

DCN (v1) is the same op with a mask of ones; see docs/custom_ops.md. The training model
(``DeformConv2dPack``) and the deploy graphs both call this op. Differentiable with respect to
every tensor input: the gradients are ``deform_conv_grad.deform_conv_backward``, exact and fast on
the CPU (eager; it checks whether a mask is all ones, so it is not traced ahead of time).
"""
from __future__ import annotations

import torch
import torchvision
from torch import Tensor

from dettool.ops.deform_conv_grad import deform_conv_backward
from dettool.ops.errors import OpInputError


def _output_size(size, kernel: int, stride: int, padding: int, dilation: int):
    """Output length of a convolution along one axis (``size`` may be a SymInt)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _compute_dtype(input_dtype: torch.dtype) -> torch.dtype:
    """Computation type: float32 for float16 and float32 inputs (the spec), float64 for float64."""
    return torch.promote_types(input_dtype, torch.float32)


def _check_inputs(input: Tensor, offset: Tensor, mask: Tensor, weight: Tensor, bias: Tensor, stride: list[int],
                  padding: list[int], dilation: list[int], groups: int, deform_groups: int) -> None:
    name = "modulated_deform_conv"
    for attr, values in (("stride", stride), ("padding", padding), ("dilation", dilation)):
        if len(values) != 2:
            raise OpInputError(f"{name}: {attr} must have 2 values (height, width), got {list(values)}")
    if input.dim() != 4 or weight.dim() != 4:
        raise OpInputError(f"{name}: input and weight must be 4-d, got {tuple(input.shape)} and {tuple(weight.shape)}")
    c_out, c_per_group, kh, kw = weight.shape
    if groups < 1 or input.shape[1] != c_per_group * groups or c_out % groups != 0:
        raise OpInputError(f"{name}: weight {tuple(weight.shape)} does not fit input channels {input.shape[1]} "
                           f"with groups={groups}")
    if deform_groups < 1 or input.shape[1] % deform_groups != 0:
        raise OpInputError(f"{name}: deform_groups={deform_groups} does not divide {input.shape[1]} input channels")
    ho = _output_size(input.shape[2], kh, stride[0], padding[0], dilation[0])
    wo = _output_size(input.shape[3], kw, stride[1], padding[1], dilation[1])
    taps = deform_groups * kh * kw
    for what, tensor, channels in (("offset", offset, 2 * taps), ("mask", mask, taps)):
        if tuple(tensor.shape) != (input.shape[0], channels, ho, wo):
            raise OpInputError(f"{name}: {what} must be {(input.shape[0], channels, ho, wo)}, "
                               f"got {tuple(tensor.shape)}")
    if tuple(bias.shape) != (c_out,):
        raise OpInputError(f"{name}: bias must be [{c_out}], got {tuple(bias.shape)}")


@torch.library.custom_op("dettool::modulated_deform_conv", mutates_args=())
def modulated_deform_conv_op(input: Tensor, offset: Tensor, mask: Tensor, weight: Tensor, bias: Tensor,
                             stride: list[int], padding: list[int], dilation: list[int], groups: int,
                             deform_groups: int) -> Tensor:
    """Reference kernel of ``torch.ops.dettool.modulated_deform_conv``; see :func:`modulated_deform_conv`."""
    _check_inputs(input, offset, mask, weight, bias, stride, padding, dilation, groups, deform_groups)
    dtype = _compute_dtype(input.dtype)
    # A mask of ones (DCN v1) changes nothing; leaving it out spares torchvision a read per sample.
    modulation = None if bool((mask == 1).all()) else mask.to(dtype)
    out = torchvision.ops.deform_conv2d(input.to(dtype), offset.to(dtype), weight.to(dtype), bias.to(dtype),
                                        stride=tuple(stride), padding=tuple(padding), dilation=tuple(dilation),
                                        mask=modulation)
    return out.to(input.dtype)


@modulated_deform_conv_op.register_fake
def _modulated_deform_conv_fake(input: Tensor, offset: Tensor, mask: Tensor, weight: Tensor, bias: Tensor,
                                stride: list[int], padding: list[int], dilation: list[int], groups: int,
                                deform_groups: int) -> Tensor:
    kh, kw = weight.shape[2], weight.shape[3]
    ho = _output_size(input.shape[2], kh, stride[0], padding[0], dilation[0])
    wo = _output_size(input.shape[3], kw, stride[1], padding[1], dilation[1])
    return input.new_empty((input.shape[0], weight.shape[0], ho, wo))


def _setup_context(ctx, inputs, output) -> None:
    input, offset, mask, weight, bias, stride, padding, dilation, groups, deform_groups = inputs
    ctx.save_for_backward(input, offset, mask, weight, bias)
    ctx.attributes = (tuple(stride), tuple(padding), tuple(dilation), groups, deform_groups)


def _backward(ctx, grad_output: Tensor):
    """Gradients of input, offset, mask, weight and bias (each in its input's type); None for the attributes."""
    tensors = ctx.saved_tensors
    dtype = _compute_dtype(tensors[0].dtype)
    grads = deform_conv_backward(grad_output.to(dtype), *(t.to(dtype) for t in tensors), *ctx.attributes,
                                 needs_grad=tuple(ctx.needs_input_grad[:5]))
    grads = [None if g is None else g.to(t.dtype) for g, t in zip(grads, tensors)]
    return (*grads, None, None, None, None, None)


modulated_deform_conv_op.register_autograd(_backward, setup_context=_setup_context)


def modulated_deform_conv(input: Tensor, offset: Tensor, mask: Tensor, weight: Tensor, bias: Tensor,
                          stride: list[int], padding: list[int], dilation: list[int], groups: int = 1,
                          deform_groups: int = 1) -> Tensor:
    """(Modulated) deformable convolution, DCNv2 (``DettoolModulatedDeformConv``).

    ``torchvision.ops.deform_conv2d(input, offset, weight, bias, stride, padding, dilation, mask)``,
    computed in float32 for float32 and float16 inputs (float64 for float64 inputs).
    Differentiable with respect to every tensor argument.

    Args:
        input: ``Tensor[B, C, H, W]`` float32 or float16.
        offset: ``Tensor[B, 2 * G * kh * kw, Ho, Wo]``, ``(dy, dx)`` per deform group and tap.
        mask: ``Tensor[B, G * kh * kw, Ho, Wo]`` modulation in [0, 1] (ones for DCN v1).
        weight: ``Tensor[Co, C / groups, kh, kw]``.
        bias: ``Tensor[Co]`` (zeros when the conv has none).
        stride: (height, width).
        padding: (height, width).
        dilation: (height, width).
        groups: convolution groups.
        deform_groups: ``G``, offset groups.

    Returns: ``Tensor[B, Co, Ho, Wo]`` of the input's type,
    ``Ho = (H + 2 * pad_h - dil_h * (kh - 1) - 1) // stride_h + 1``.
    """
    return torch.ops.dettool.modulated_deform_conv(input, offset, mask, weight, bias, [int(s) for s in stride],
                                                   [int(p) for p in padding], [int(d) for d in dilation],
                                                   int(groups), int(deform_groups))
