"""HRFPN: the feature pyramid of HRNetV2p (Sun et al., "High-Resolution Representations for
Labeling Pixels and Regions", arXiv 1904.04514), as MMDetection's ``HRFPN``.

Every HRNet branch is upsampled (bilinear) to the first, highest-resolution branch's size, the
branches are concatenated and reduced to ``out_channels`` by a 1x1 conv; the pyramid is that map
and its average (or max) poolings by 2, 4, 8...; each level passes a 3x3 conv. Parameter names are
MMDetection's (``reduction_conv.conv``, ``fpn_convs.<level>.conv``: its ``ConvModule`` without norm).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

POOLING = {"avg": F.avg_pool2d, "max": F.max_pool2d}


def named_conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    """A conv with bias (padding keeps the size at stride 1) whose parameters are ``conv.weight``
    and ``conv.bias``, initialised as MMDetection's HRFPN (Caffe2Xavier: Kaiming uniform, fan_in,
    a = 1; zero bias)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2)
    nn.init.kaiming_uniform_(conv.weight, a=1)
    nn.init.zeros_(conv.bias)
    return nn.Sequential(OrderedDict(conv=conv))


class HRFPN(nn.Module):
    """High-resolution feature pyramid.

    Args:
        in_channels: channels of each HRNet branch (finest first; branch ``i`` at half the
            resolution of branch ``i - 1``).
        out_channels: channels of every output level.
        num_outs: number of pyramid levels.
        pooling_type: 'avg' or 'max': how level ``l`` is made from the reduced map (kernel and
            stride ``2**l``, rounding down).
        stride: stride of the 3x3 output convs (1: levels at the first branch's stride times
            ``2**l``; FCOS's HRNet configs take 2).

    Shapes: list of ``[B, in_channels[i], H_i, W_i]`` -> list of ``num_outs``
    ``[B, out_channels, H_l, W_l]``, ``H_0 = ceil(H_0in / stride)`` and
    ``H_l = ceil(floor(H_0in / 2**l) / stride)``; ``self.out_channels`` holds each level's channels.
    """

    def __init__(self, in_channels: tuple[int, ...], *, out_channels: int, num_outs: int, pooling_type: str,
                 stride: int) -> None:
        super().__init__()
        if pooling_type not in POOLING:
            raise ValueError(f"pooling_type must be one of {sorted(POOLING)}, got {pooling_type!r}")
        self.num_ins = len(in_channels)
        self.pooling = POOLING[pooling_type]
        self.reduction_conv = named_conv(sum(in_channels), out_channels, 1)
        self.fpn_convs = nn.ModuleList(named_conv(out_channels, out_channels, 3, stride) for _ in range(num_outs))
        self.out_channels = (out_channels,) * num_outs  # per output level, as every neck exposes

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(feats) != self.num_ins:
            raise ValueError(f"HRFPN expects {self.num_ins} branches, got {len(feats)}")
        # MMDetection scales branch i by 2**i; the first branch's size is the same wherever the
        # branches halve exactly, and stays valid for a symbolic input size
        size = feats[0].shape[-2:]
        upsampled = [feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False)
                                  for f in feats[1:]]
        reduced = self.reduction_conv(torch.cat(upsampled, dim=1))
        levels = [reduced] + [self.pooling(reduced, kernel_size=2 ** i, stride=2 ** i)
                              for i in range(1, len(self.fpn_convs))]
        return [conv(level) for conv, level in zip(self.fpn_convs, levels)]
