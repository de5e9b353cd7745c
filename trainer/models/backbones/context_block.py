"""Global context block (GCNet), a stage plugin placed after a residual block's last conv.

Cao et al., "GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond" (2019): one
context vector per image, pooled with a softmax attention over all positions (a non-local block
whose attention map is the same for every query), passed through a bottleneck transform (1x1
conv, LayerNorm, ReLU, 1x1 conv) and added to (or multiplied into) every position. Parameter
names are mmcv's ``ContextBlock``'s, so MMDetection's GCNet checkpoints load by name.
"""
from __future__ import annotations

import torch
from torch import nn

FUSION_TYPES = ("channel_add", "channel_mul")


def _transform(channels: int, planes: int) -> nn.Sequential:
    """The bottleneck transform ``[N, C, 1, 1] -> [N, C, 1, 1]``; its last conv starts at zero, so
    a new block passes its input through unchanged (mmcv's ``last_zero_init``)."""
    transform = nn.Sequential(nn.Conv2d(channels, planes, kernel_size=1), nn.LayerNorm([planes, 1, 1]),
                              nn.ReLU(inplace=True), nn.Conv2d(planes, channels, kernel_size=1))
    nn.init.zeros_(transform[-1].weight)
    nn.init.zeros_(transform[-1].bias)
    return transform


class ContextBlock(nn.Module):
    """Global context modelling plus channel-wise fusion.

    Args:
        in_channels: channels ``C`` of the input (and output) feature map.
        ratio: the bottleneck transform has ``int(C * ratio)`` channels (1/16 or 1/4 in the paper).
        pooling_type: ``'att'`` pools with a softmax attention map from a 1x1 conv; ``'avg'`` averages
            (squeeze-and-excitation's pooling).
        fusion_types: ``'channel_add'`` adds the transformed context to every position (the paper's
            choice); ``'channel_mul'`` scales the channels by its sigmoid (applied first when both).

    Shapes: ``[N, C, H, W] -> [N, C, H, W]``.
    """

    def __init__(self, in_channels: int, *, ratio: float, pooling_type: str,
                 fusion_types: tuple[str, ...]) -> None:
        super().__init__()
        planes = int(in_channels * ratio)
        if planes < 1:
            raise ValueError(f"ContextBlock: ratio {ratio} leaves no channel of {in_channels} in the bottleneck")
        if pooling_type not in ("att", "avg"):
            raise ValueError(f"ContextBlock: pooling_type must be 'att' or 'avg', got {pooling_type!r}")
        if not fusion_types or any(f not in FUSION_TYPES for f in fusion_types):
            raise ValueError(f"ContextBlock: fusion_types must be some of {FUSION_TYPES}, got {fusion_types!r}")
        self.in_channels = in_channels
        self.planes = planes
        self.pooling_type = pooling_type
        self.fusion_types = tuple(fusion_types)
        if pooling_type == "att":
            self.conv_mask = nn.Conv2d(in_channels, 1, kernel_size=1)
            nn.init.kaiming_normal_(self.conv_mask.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(self.conv_mask.bias)
        self.channel_add_conv = _transform(in_channels, planes) if "channel_add" in fusion_types else None
        self.channel_mul_conv = _transform(in_channels, planes) if "channel_mul" in fusion_types else None

    def spatial_pool(self, x: torch.Tensor) -> torch.Tensor:
        """The context of each image: ``[N, C, H, W] -> [N, C, 1, 1]``."""
        if self.pooling_type == "avg":
            return x.mean(dim=(2, 3), keepdim=True)
        weights = self.conv_mask(x).flatten(2).softmax(dim=2)  # [N, 1, H * W], sums to 1 over positions
        return torch.matmul(x.flatten(2), weights.transpose(1, 2)).unsqueeze(-1)  # [N, C, 1, 1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = self.spatial_pool(x)
        out = x
        if self.channel_mul_conv is not None:
            out = out * torch.sigmoid(self.channel_mul_conv(context))
        if self.channel_add_conv is not None:
            out = out + self.channel_add_conv(context)
        return out
