"""(Modulated) deformable 3x3 convolution (DCN, DCNv2) on torchvision.ops.deform_conv2d
(with a faster, equal CPU backward: ``ops/deform_conv_cpu_grad``)."""
from __future__ import annotations

import math

import torch
from torch import nn

from dettool.trainer.models.ops.deform_conv_cpu_grad import deform_conv2d


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
        self.stride, self.padding, self.dilation = stride, padding, dilation
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_offset(x)
        offset = out[:, : self.num_offset]
        mask = out[:, self.num_offset:].sigmoid() if self.modulated else None
        return deform_conv2d(x, offset, self.weight, self.bias, stride=self.stride, padding=self.padding,
                             dilation=self.dilation, mask=mask)
