"""The gradients of ``torchvision.ops.deform_conv2d``, fast and exact on the CPU.

torchvision's CPU backward of (modulated) deformable convolution runs its column buffers on one
thread and costs about eight times its forward: DCNv2 in three ResNet-18 stages made a training
step five times slower. Deformable convolution is a bilinear gather per kernel tap followed by a
matrix product, so its gradient is the gradient of ``grid_sample`` (zero padding, the same
bilinear rule as torchvision's kernel) and of one ``einsum``, both vectorised and multi-threaded
in ATen. :func:`deform_conv_backward` recomputes the forward that way on the CPU and
differentiates it (equal to torchvision's gradient up to float rounding, tested), and runs
torchvision's own backward kernel on other devices; ``dettool::modulated_deform_conv`` registers
it as its autograd formula.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F


def _out_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def deform_conv2d_by_grid_sample(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                                 bias: torch.Tensor | None, stride: tuple[int, int], padding: tuple[int, int],
                                 dilation: tuple[int, int], mask: torch.Tensor | None) -> torch.Tensor:
    """(Modulated) deformable convolution from ``grid_sample`` and ``einsum``.

    Args:
        x: ``Tensor[B, C, H, W]``.
        offset: ``Tensor[B, 2 * G * K, Ho, Wo]``, ``(dy, dx)`` per deform group ``G`` and kernel tap
            ``K = kh * kw`` (torchvision's layout).
        weight: ``Tensor[Co, C / groups, kh, kw]``.
        bias: ``Tensor[Co]`` or None.
        mask: ``Tensor[B, G * K, Ho, Wo]`` modulation (DCNv2) or None (DCN).

    Returns: ``Tensor[B, Co, Ho, Wo]``.
    """
    b, c, h, w = x.shape
    c_out, c_per_group, kh, kw = weight.shape
    groups = c // c_per_group
    k = kh * kw
    ho = _out_size(h, kh, stride[0], padding[0], dilation[0])
    wo = _out_size(w, kw, stride[1], padding[1], dilation[1])
    dg = offset.shape[1] // (2 * k)
    off = offset.reshape(b, dg, k, 2, ho, wo)
    tap_y = torch.arange(kh, dtype=x.dtype, device=x.device).repeat_interleave(kw) * dilation[0]
    tap_x = torch.arange(kw, dtype=x.dtype, device=x.device).repeat(kh) * dilation[1]
    base_y = torch.arange(ho, dtype=x.dtype, device=x.device) * stride[0] - padding[0]
    base_x = torch.arange(wo, dtype=x.dtype, device=x.device) * stride[1] - padding[1]
    py = base_y[None, None, None, :, None] + tap_y[None, None, :, None, None] + off[:, :, :, 0]  # [B, G, K, Ho, Wo]
    px = base_x[None, None, None, None, :] + tap_x[None, None, :, None, None] + off[:, :, :, 1]
    # Pixel coordinates to grid_sample's align_corners=False frame (valid for any size >= 1).
    grid = torch.stack([(2 * px + 1) / w - 1, (2 * py + 1) / h - 1], dim=-1)  # [B, G, K, Ho, Wo, 2]
    sampled = F.grid_sample(x.reshape(b * dg, c // dg, h, w), grid.reshape(b * dg, k * ho, wo, 2),
                            mode="bilinear", padding_mode="zeros", align_corners=False)
    sampled = sampled.reshape(b, dg, c // dg, k, ho, wo)
    if mask is not None:
        sampled = sampled * mask.reshape(b, dg, 1, k, ho, wo)
    cols = sampled.reshape(b, groups, c_per_group, k, ho, wo)
    out = torch.einsum("bgckhw,gock->bgohw", cols, weight.reshape(groups, c_out // groups, c_per_group, k))
    out = out.reshape(b, c_out, ho, wo)
    return out if bias is None else out + bias[None, :, None, None]


def deform_conv_backward(grad_output: torch.Tensor, input: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                         weight: torch.Tensor, bias: torch.Tensor, stride: tuple[int, int], padding: tuple[int, int],
                         dilation: tuple[int, int], groups: int, deform_groups: int,
                         needs_grad: tuple[bool, bool, bool, bool, bool]) -> list[torch.Tensor | None]:
    """Gradients of modulated deformable convolution (``deform_conv2d(..., mask=mask)``).

    On the CPU, the gradient of :func:`deform_conv2d_by_grid_sample` (a mask of ones that needs no
    gradient, DCN v1, is left out: it changes nothing); elsewhere torchvision's backward kernel.

    Args:
        grad_output: ``Tensor[B, Co, Ho, Wo]``; the other tensors as :func:`deform_conv2d_by_grid_sample`
            takes them, all of one type, ``mask`` and ``bias`` given.
        groups, deform_groups: convolution and offset groups.
        needs_grad: which of ``(input, offset, mask, weight, bias)`` want a gradient.

    Returns: ``[grad_input, grad_offset, grad_mask, grad_weight, grad_bias]``, None where not wanted.
    """
    if grad_output.device.type != "cpu":
        return _torchvision_deform_conv_backward(grad_output, input, offset, mask, weight, bias, stride, padding,
                                                 dilation, groups, deform_groups, needs_grad)
    leaves = [t.detach().requires_grad_(need) for t, need in zip((input, offset, mask, weight, bias), needs_grad)]
    x, off, m, w, b = leaves
    if not needs_grad[2] and bool((mask == 1).all()):
        m = None
    with torch.enable_grad():
        out = deform_conv2d_by_grid_sample(x, off, w, b, stride, padding, dilation, m)
    wanted = [t for t in leaves if t.requires_grad]
    grads = iter(torch.autograd.grad(out, wanted, grad_output, allow_unused=True) if wanted else [])
    return [next(grads) if need else None for need in needs_grad]


def _torchvision_deform_conv_backward(grad_output: torch.Tensor, input: torch.Tensor, offset: torch.Tensor,
                                      mask: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                                      stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
                                      groups: int, deform_groups: int,
                                      needs_grad: tuple[bool, bool, bool, bool, bool]) -> list[torch.Tensor | None]:
    """torchvision's backward kernel of ``deform_conv2d`` (the one its autograd calls); arguments
    and result as :func:`deform_conv_backward`."""
    grad_input, grad_weight, grad_offset, grad_mask, grad_bias = torch.ops.torchvision._deform_conv2d_backward(
        grad_output.contiguous(), input, weight, offset, mask, bias, stride[0], stride[1], padding[0], padding[1],
        dilation[0], dilation[1], groups, deform_groups, True)
    grads = (grad_input, grad_offset, grad_mask, grad_weight, grad_bias)
    return [grad if need else None for grad, need in zip(grads, needs_grad)]
