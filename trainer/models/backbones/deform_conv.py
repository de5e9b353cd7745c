"""(Modulated) deformable 3x3 convolution (DCN, DCNv2).

The module predicts offsets and masks; the convolution is ``dettool.ops.modulated_deform_conv``
(torchvision's ``deform_conv2d``, differentiable with a fast exact CPU backward), the op the
deploy graphs run, so training, evaluation and export share one implementation.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from dettool.ops.modulated_deform_conv import modulated_deform_conv


def _pair(v: int | tuple[int, int]) -> list[int]:
    return [v, v] if isinstance(v, int) else list(v)


class DeformConv2dPack(nn.Module):
    """A conv whose sampling offsets (and, if ``modulated``, masks) are predicted from its input.

    ``weight`` has the shape of the ``nn.Conv2d`` it replaces, so ImageNet weights of a plain
    conv load into it. The offset conv starts at zero: DCN (v1) starts as the plain conv, DCNv2
    as half of it (its masks start at sigmoid(0) = 0.5, as in mmcv).

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups: as ``nn.Conv2d``.
        modulated: DCNv2 (sigmoid modulation masks) when True, DCN (v1) when False.
        deform_groups: offset groups.

    Shapes: input ``[B, C_in, H, W]`` -> output ``[B, C_out, H', W']``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1, dilation: int = 1, groups: int = 1, bias: bool = False,
                 modulated: bool = True, deform_groups: int = 1) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.groups, self.deform_groups = groups, deform_groups
        self.modulated = modulated
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        k = kernel_size * kernel_size
        self.conv_offset = nn.Conv2d(in_channels, deform_groups * k * (3 if modulated else 2), kernel_size,
                                     stride=stride, padding=padding, dilation=dilation, bias=True)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)
        self.num_offset = deform_groups * k * 2

    @classmethod
    def replacing(cls, conv: nn.Conv2d, *, modulated: bool, deform_groups: int) -> "DeformConv2dPack":
        """A deformable conv with the geometry of ``conv`` (the stage plugin at ``conv2``)."""
        return cls(conv.in_channels, conv.out_channels, conv.kernel_size[0], stride=conv.stride[0],
                   padding=conv.padding[0], dilation=conv.dilation[0], groups=conv.groups,
                   bias=conv.bias is not None, modulated=modulated, deform_groups=deform_groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_offset(x)
        offset = out[:, : self.num_offset]
        # DCN (v1) is DCNv2 with a mask of ones; a conv without bias adds zeros.
        mask = out[:, self.num_offset:].sigmoid() if self.modulated else offset.new_ones(
            (offset.shape[0], self.num_offset // 2, *offset.shape[2:]))
        bias = self.bias if self.bias is not None else self.weight.new_zeros(self.out_channels)
        return modulated_deform_conv(x, offset, mask, self.weight, bias, _pair(self.stride), _pair(self.padding),
                                     _pair(self.dilation), self.groups, self.deform_groups)
