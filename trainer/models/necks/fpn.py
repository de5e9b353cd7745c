"""Feature Pyramid Network neck on torchvision.ops.FeaturePyramidNetwork, with P6/P7 extras."""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, FeaturePyramidNetwork


class ExtraLevels(ExtraFPNBlock):
    """Extra pyramid levels above the last input level.

    ``mode``: 'on_input' (first extra conv reads the last backbone map, RetinaNet), 'on_output'
    (reads the last FPN output, FCOS), or 'none' (stride-2 max pooling, Faster R-CNN's P6).
    Each extra level halves the resolution.
    """

    def __init__(self, num_extra: int, mode: str, in_channels: int, out_channels: int,
                 relu_before_extra_convs: bool = False) -> None:
        super().__init__()
        self.num_extra, self.mode, self.relu_between = num_extra, mode, relu_before_extra_convs
        self.convs = nn.ModuleList()
        if mode != "none":
            for i in range(num_extra):
                cin = in_channels if (i == 0 and mode == "on_input") else out_channels
                conv = nn.Conv2d(cin, out_channels, 3, stride=2, padding=1)
                nn.init.kaiming_uniform_(conv.weight, a=1)
                nn.init.zeros_(conv.bias)
                self.convs.append(conv)

    def forward(self, results: list[torch.Tensor], x: list[torch.Tensor],
                names: list[str]) -> tuple[list[torch.Tensor], list[str]]:
        for i in range(self.num_extra):
            names.append(f"p_extra{i}")
            if self.mode == "none":
                results.append(F.max_pool2d(results[-1], 1, stride=2))
                continue
            src = x[-1] if (i == 0 and self.mode == "on_input") else results[-1]
            if i > 0 and self.relu_between:  # MMDetection: never before the first extra conv
                src = F.relu(src)
            results.append(self.convs[i](src))
        return results, names


class FPN(nn.Module):
    """Top-down pyramid with lateral 1x1 and output 3x3 convs, plus extra levels.

    Args:
        in_channels: channels of each input level (finest first).
        out_channels: channels of every output level.
        num_outs: number of outputs (>= len(in_channels); the rest are extra levels).
        add_extra_convs: 'none' | 'on_input' | 'on_output'.
        relu_before_extra_convs: apply ReLU before each extra conv.
        norm: optional ``channels -> module`` normalization in lateral/output convs.

    Shapes: list of ``[B, C_i, H_i, W_i]`` -> list of ``num_outs`` ``[B, out_channels, H_l, W_l]``;
    ``self.out_channels`` holds the channels of each output level.
    """

    def __init__(self, in_channels: tuple[int, ...], *, out_channels: int, num_outs: int,
                 add_extra_convs: str, relu_before_extra_convs: bool,
                 norm: Callable[[int], nn.Module] | None = None) -> None:
        super().__init__()
        if num_outs < len(in_channels):
            raise ValueError(f"num_outs ({num_outs}) must be >= the number of inputs ({len(in_channels)})")
        extra = ExtraLevels(num_outs - len(in_channels), add_extra_convs, in_channels[-1], out_channels,
                            relu_before_extra_convs) if num_outs > len(in_channels) else None
        self.fpn = FeaturePyramidNetwork(list(in_channels), out_channels, extra_blocks=extra, norm_layer=norm)
        self.out_channels = (out_channels,) * num_outs  # per output level, as every neck exposes

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        out = self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))
        return list(out.values())
