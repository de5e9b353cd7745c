"""Balanced Feature Pyramid (Libra R-CNN's BFP neck), with its embedded-Gaussian non-local refinement.

Pang et al., "Libra R-CNN: Towards Balanced Learning for Object Detection" (CVPR 2019), and
MMDetection's ``BFP``: every level is resized to the ``refine_level``'s size (max pooling for the
finer levels, nearest upsampling for the coarser ones), the levels are averaged, the average is
refined, then resized back to every level (the other way round) and added to it.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def adaptive_max_pool(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.adaptive_max_pool2d(x, size)``, computed with gathers and a max over a fixed number of taps.

    Output cell ``i`` of a dimension of length ``In`` pooled to ``Out`` covers the inputs
    ``floor(i In / Out) .. ceil((i + 1) In / Out) - 1``, as in PyTorch. Those windows do not share
    one kernel and stride when ``Out`` does not divide ``In`` (an extra level of odd size), so a
    static max pool cannot express them; the gathers here trace to ONNX with symbolic sizes and
    give bit-identical values (a max of the same elements).

    Args:
        x: ``[B, C, H, W]``.
        size: ``(out_h, out_w)``.

    Returns:
        ``[B, C, out_h, out_w]``.
    """
    for dim, out_size in ((2, size[0]), (3, size[1])):
        x = _adaptive_max_pool_dim(x, dim, out_size)
    return x


def _adaptive_max_pool_dim(x: torch.Tensor, dim: int, out_size: int) -> torch.Tensor:
    """Adaptive max pooling of one dimension of ``x`` to ``out_size``."""
    in_size = x.shape[dim]
    # No window is longer than ceil(In / Out) + 1. Sizes are symbolic in an export: ceil written
    # without negative floor division, which ONNX's integer Div would truncate instead.
    taps = (in_size + out_size - 1) // out_size + 1
    cells = torch.arange(out_size, device=x.device)
    start = cells * in_size // out_size
    end = ((cells + 1) * in_size + out_size - 1) // out_size
    # A window shorter than ``taps`` repeats its last element: the max is unchanged.
    index = torch.minimum(start[:, None] + torch.arange(taps, device=x.device), end[:, None] - 1)
    gathered = x.index_select(dim, index.reshape(-1))
    shape = list(x.shape)
    shape[dim:dim + 1] = [out_size, taps]
    return gathered.reshape(shape).amax(dim=dim + 1)


class NonLocal2d(nn.Module):
    """Embedded-Gaussian non-local block (Wang et al.) without scaling, as MMCV's ``NonLocal2d``
    with ``reduction=1, use_scale=False``: ``x + conv_out(softmax(theta(x)^T phi(x)) g(x))``.

    ``g``, ``theta`` and ``phi`` are 1x1 convs initialised N(0, 0.01); ``conv_out`` starts at
    zero, so the block starts as the identity.

    Shapes: ``[B, C, H, W]`` -> ``[B, C, H, W]`` (the attention is ``[B, HW, HW]``).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.g = nn.Conv2d(channels, channels, 1)
        self.theta = nn.Conv2d(channels, channels, 1)
        self.phi = nn.Conv2d(channels, channels, 1)
        self.conv_out = nn.Conv2d(channels, channels, 1)
        for conv in (self.g, self.theta, self.phi):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        values = self.g(x).flatten(2).transpose(1, 2)  # [B, HW, C]
        queries = self.theta(x).flatten(2).transpose(1, 2)  # [B, HW, C]
        keys = self.phi(x).flatten(2)  # [B, C, HW]
        attention = torch.matmul(queries, keys).softmax(dim=-1)  # [B, HW, HW]
        y = torch.matmul(attention, values).transpose(1, 2).reshape(b, c, h, w)
        return x + self.conv_out(y)


class BFP(nn.Module):
    """Balanced feature pyramid: integrate, refine, scatter back residually.

    Args:
        in_channels: channels of every input level (all equal, an FPN's output).
        num_levels: number of input levels (finest first).
        refine_level: index of the level whose size the levels are integrated at.
        refine_type: 'non_local' (an embedded-Gaussian non-local block), 'conv' (3x3 conv + ReLU)
            or None (the plain average).

    Shapes: ``num_levels`` tensors ``[B, C, H_l, W_l]`` -> the same shapes;
    ``self.out_channels`` holds the channels of each output level.
    """

    def __init__(self, *, in_channels: int, num_levels: int, refine_level: int, refine_type: str | None) -> None:
        super().__init__()
        if not 0 <= refine_level < num_levels:
            raise ValueError(f"refine_level ({refine_level}) must index one of the {num_levels} levels")
        self.num_levels, self.refine_level, self.refine_type = num_levels, refine_level, refine_type
        self.out_channels = (in_channels,) * num_levels
        if refine_type == "non_local":
            self.refine = NonLocal2d(in_channels)
        elif refine_type == "conv":
            conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            self.refine = nn.Sequential(conv, nn.ReLU(inplace=True))
        elif refine_type is not None:
            raise ValueError(f"refine_type {refine_type!r}: expected 'non_local', 'conv' or None")

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(feats) != self.num_levels:
            raise ValueError(f"BFP expects {self.num_levels} levels, got {len(feats)}")
        refine_size = feats[self.refine_level].shape[-2:]
        resized = [adaptive_max_pool(f, refine_size) if i < self.refine_level
                   else F.interpolate(f, size=refine_size, mode="nearest") if i > self.refine_level
                   else f for i, f in enumerate(feats)]
        balanced = sum(resized) / self.num_levels
        if self.refine_type is not None:
            balanced = self.refine(balanced)
        outs = []
        for i, f in enumerate(feats):
            if i < self.refine_level:
                residual = F.interpolate(balanced, size=f.shape[-2:], mode="nearest")
            elif i > self.refine_level:
                residual = adaptive_max_pool(balanced, f.shape[-2:])
            else:
                residual = balanced
            outs.append(f + residual)
        return outs
