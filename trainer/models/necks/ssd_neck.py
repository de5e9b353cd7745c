"""SSD's neck: L2 normalisation of the first input level and extra levels of strided convs."""
from __future__ import annotations

import torch
from torch import nn


class L2Norm(nn.Module):
    """Per-position L2 normalisation across channels with a learned per-channel scale (SSD's
    conv4_3 norm, MMDetection's ``L2Norm``).

    ``y = weight[c] * x / (||x||_2 + eps)``, the norm taken over channels; computed in float32
    (also under FP16 training) and returned in ``x``'s dtype.

    Args:
        num_channels: channels of the input.
        scale: initial value of every channel's weight.
        eps: added to the norm (MMDetection's 1e-10).

    Shapes: ``[B, C, H, W]`` -> ``[B, C, H, W]``.
    """

    def __init__(self, num_channels: int, scale: float, eps: float = 1e-10) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((num_channels,), float(scale)))
        self.scale = scale
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_float = x.float()
        norm = x_float.pow(2).sum(1, keepdim=True).sqrt() + self.eps
        return (self.weight[None, :, None, None].float() * x_float / norm).type_as(x)


class ConvReLU(nn.Module):
    """A conv, with ``bn`` a BatchNorm (the conv then without bias), and a ReLU; the conv sits at
    ``.conv`` and the norm at ``.bn`` so that state-dict keys equal those of MMDetection's
    ``ConvModule`` (``extra_layers.{i}.{j}.conv.weight``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, bn: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=not bn)
        self.bn = nn.BatchNorm2d(out_channels) if bn else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.relu(x)


class SSDNeck(nn.Module):
    """The input levels (the first one L2-normalised) and extra levels above the last, each a 1x1
    conv to half its channels and a strided conv, both followed by a ReLU (MMDetection's
    ``SSDNeck`` with its default ReLU, no depthwise convs, and no norm or ``norm_cfg=dict(type='BN')``).

    Args:
        in_channels: channels of the input levels (SSD: conv4_3 and conv7, ``(512, 1024)``).
        out_channels: channels of every output level, the input levels' first
            (SSD300: ``(512, 1024, 512, 256, 256, 256)``).
        level_strides, level_paddings: stride and padding of each extra level's second conv.
        l2_norm_scale: initial scale of the first level's L2 normalisation; ``None`` leaves the
            first level as it is.
        last_kernel_size: kernel size of the last extra level's second conv (3; SSD512: 4).
        norm: 'none' (SSD) or 'bn': BatchNorm after every extra conv (ScratchDet's extra layers).

    Shapes: list of ``[B, in_channels[i], H_i, W_i]`` -> list of ``[B, out_channels[i], H_i, W_i]``
    (for SSD300 on a 300x300 image: 38, 19, 10, 5, 3, 1).
    """

    def __init__(self, *, in_channels: tuple[int, ...], out_channels: tuple[int, ...],
                 level_strides: tuple[int, ...], level_paddings: tuple[int, ...],
                 l2_norm_scale: float | None, last_kernel_size: int, norm: str) -> None:
        super().__init__()
        in_channels, out_channels = tuple(in_channels), tuple(out_channels)
        num_extra = len(out_channels) - len(in_channels)
        if num_extra < 1 or out_channels[: len(in_channels)] != in_channels:
            raise ValueError(f"out_channels {out_channels} must start with in_channels {in_channels} and "
                             "add at least one level")
        if not len(level_strides) == len(level_paddings) == num_extra:
            raise ValueError(f"need one stride and one padding per extra level ({num_extra}), got "
                             f"{len(level_strides)} and {len(level_paddings)}")
        if norm not in ("none", "bn"):
            raise ValueError(f"SSDNeck norm must be 'none' or 'bn', got {norm!r}")
        bn = norm == "bn"
        self.out_channels = out_channels
        self.l2_norm = L2Norm(in_channels[0], l2_norm_scale) if l2_norm_scale else None
        self.extra_layers = nn.ModuleList()
        for i in range(num_extra):
            cin, cout = out_channels[len(in_channels) - 1 + i], out_channels[len(in_channels) + i]
            kernel_size = last_kernel_size if i == num_extra - 1 else 3
            self.extra_layers.append(nn.Sequential(
                ConvReLU(cin, cout // 2, 1, bn=bn),
                ConvReLU(cout // 2, cout, kernel_size, stride=level_strides[i], padding=level_paddings[i], bn=bn)))
        for m in self.extra_layers.modules():
            if isinstance(m, nn.Conv2d):  # MMDetection's init of this neck
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        outs = list(features)
        if self.l2_norm is not None:
            outs[0] = self.l2_norm(outs[0])
        x = outs[-1]
        for layer in self.extra_layers:
            x = layer(x)
            outs.append(x)
        return outs
