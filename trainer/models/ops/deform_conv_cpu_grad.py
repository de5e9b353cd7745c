"""torchvision's ``deform_conv2d`` with a fast CPU backward (same forward, same gradient).

torchvision's CPU backward of (modulated) deformable convolution runs its column buffers on one
thread and costs about eight times its forward: DCNv2 in three ResNet-18 stages made a training
step five times slower. Deformable convolution is a bilinear gather per kernel tap followed by a
matrix product, so its gradient is the gradient of ``grid_sample`` (zero padding, the same
bilinear rule as torchvision's kernel) and of one ``einsum``, both vectorised and multi-threaded
in ATen. The backward recomputes the forward that way and differentiates it; the result equals
torchvision's gradient up to float rounding (tested).

The forward is always ``torchvision.ops.deform_conv2d``; on CUDA, or without grad, nothing changes.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F
from torchvision.ops import deform_conv2d as tv_deform_conv2d


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


class _DeformConvCPUGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, offset, weight, bias, mask, stride, padding, dilation):
        ctx.save_for_backward(x, offset, weight, bias, mask)
        ctx.conv = (stride, padding, dilation)
        return tv_deform_conv2d(x, offset, weight, bias, stride=stride, padding=padding, dilation=dilation, mask=mask)

    @staticmethod
    def backward(ctx, grad_out):
        saved = ctx.saved_tensors
        inputs = [t.detach().requires_grad_(need) if t is not None else None
                  for t, need in zip(saved, ctx.needs_input_grad[:5])]
        with torch.enable_grad():
            out = deform_conv2d_by_grid_sample(inputs[0], inputs[1], inputs[2], inputs[3], *ctx.conv, inputs[4])
        wanted = [t for t in inputs if t is not None and t.requires_grad]
        grads = iter(torch.autograd.grad(out, wanted, grad_out, allow_unused=True))
        result = [next(grads) if t is not None and t.requires_grad else None for t in inputs]
        return (*result, None, None, None)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def deform_conv2d(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  stride=1, padding=0, dilation=1, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``torchvision.ops.deform_conv2d`` with the fast backward on CPU; shapes as
    :func:`deform_conv2d_by_grid_sample`."""
    tensors = [t for t in (x, offset, weight, bias, mask) if t is not None]
    if x.device.type == "cpu" and torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return _DeformConvCPUGrad.apply(x, offset, weight, bias, mask, _pair(stride), _pair(padding), _pair(dilation))
    return tv_deform_conv2d(x, offset, weight, bias, stride=stride, padding=padding, dilation=dilation, mask=mask)
