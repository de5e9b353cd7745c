"""M2Det's multi-level feature pyramid network (MLFPN; Zhao et al., 2019): FFMv1, a stack of
thinned U-shape modules (TUMs) joined by FFMv2, and SFAM."""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F


class ConvNormReLU(nn.Module):
    """A conv without bias, a norm layer (M2Det: BatchNorm) and a ReLU (M2Det's ``BasicConv``; its
    BN momentum 0.01 is PyTorch's default 0.1 here, which suits short trainings)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, norm: Callable[[int], nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = norm(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class TUM(nn.Module):
    """Thinned U-shape module: an encoder of 3x3 stride-2 convs (the last one 3x3 stride 1
    without padding, 3x3 -> 1x1), and a decoder that goes back up by nearest upsampling plus a 3x3
    lateral conv of the encoder map of that size, each decoded map but the smallest then smoothed by a
    1x1 conv (all convs ``ConvNormReLU``).

    Args:
        in_channels: channels of the input (the first TUM: the compressed base feature; the others:
            that concatenated with the previous TUM's largest output).
        channels: channels of every output scale (M2Det: 256).
        num_scales: output scales, the input's included (M2Det: 6).
        smooth: the 1x1 smoothing convs (M2Det: true).
        norm: ``channels -> norm layer`` of every conv (M2Det: BatchNorm).

    Shapes: ``[B, in_channels, H, W]`` -> list of ``num_scales`` ``[B, channels, H_s, W_s]``, largest
    first: ``H_0 = H``, ``H_s = ceil(H_{s-1} / 2)`` and the last ``H_{S-2} - 2`` (40 -> 40, 20, 10, 5, 3, 1).
    """

    def __init__(self, *, in_channels: int, channels: int, num_scales: int, smooth: bool,
                 norm: Callable[[int], nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__()
        if num_scales < 3:
            raise ValueError(f"a TUM needs at least 3 scales, got {num_scales}")
        conv = partial(ConvNormReLU, norm=norm)
        self.encoder = nn.ModuleList([conv(in_channels, channels, 3, stride=2, padding=1)])
        self.encoder.extend(conv(channels, channels, 3, stride=2, padding=1) for _ in range(num_scales - 3))
        self.encoder.append(conv(channels, channels, 3))
        self.top = conv(channels, channels, 1)
        # laterals[k] reads the encoder map k + 1 levels above the input, the last one the input itself
        self.laterals = nn.ModuleList(conv(channels, channels, 3, padding=1) for _ in range(num_scales - 2))
        self.laterals.append(conv(in_channels, channels, 3, padding=1))
        self.smooth = (nn.ModuleList(conv(channels, channels, 1) for _ in range(num_scales - 1))
                       if smooth else None)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        encoded = [x]
        for conv in self.encoder:
            encoded.append(conv(encoded[-1]))
        decoded = [self.top(encoded[-1])]
        for lateral, skip in zip(self.laterals, reversed(encoded[:-1])):
            lat = lateral(skip)
            decoded.append(F.interpolate(decoded[-1], size=lat.shape[-2:], mode="nearest") + lat)
        if self.smooth is not None:
            decoded = decoded[:1] + [conv(d) for conv, d in zip(self.smooth, decoded[1:])]
        return decoded[::-1]


class SFAM(nn.Module):
    """Scale-wise feature aggregation's channel attention (squeeze-and-excitation): each scale's
    map is multiplied by ``sigmoid(fc2(relu(fc1(mean over H, W))))`` per channel, ``fc1`` / ``fc2``
    1x1 convs with bias to ``channels // reduction`` and back. One excitation serves every scale:
    the official code repeats one module per scale (``[conv] * num_scales``).

    Args:
        channels: channels of every scale (M2Det: TUM channels x number of TUMs, 2048).
        reduction: squeeze ratio (16).

    Shapes: list of ``[B, channels, H_s, W_s]`` -> the same shapes.
    """

    def __init__(self, *, channels: int, reduction: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, max(channels // reduction, 1), 1)
        self.fc2 = nn.Conv2d(max(channels // reduction, 1), channels, 1)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> the channel weights ``[B, C, 1, 1]`` in (0, 1)."""
        return torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return [f * self.attention(f) for f in feats]


class MLFPN(nn.Module):
    """M2Det's neck on two backbone levels (VGG16: conv4_3 at stride 8 and conv7 at stride 16).

    FFMv1 fuses them into the base feature: a 3x3 ``ConvNormReLU`` of the shallow level to
    ``base_channels[0]``, concatenated with a 1x1 ``ConvNormReLU`` of the deep level to
    ``base_channels[1]`` upsampled (nearest) to the shallow size. FFMv2 feeds each TUM: a 1x1
    ``ConvNormReLU`` compresses the base feature to ``tum_channels // 2`` (the official code applies
    one module for every TUM, ``[conv] * num_levels``, so it is computed once), the first TUM takes
    it alone, every other one concatenated with the previous TUM's largest output. SFAM
    concatenates the TUMs' outputs of each scale along channels (first TUM first) and, with
    ``sfam``, reweights the channels (:class:`SFAM`); a BatchNorm normalises the largest scale
    (the official code's ``Norm``, as SSD's L2Norm on conv4_3).

    Args:
        in_channels: channels of the shallow and the deep input level (VGG16: ``(512, 1024)``).
        base_channels: FFMv1's channels for the shallow and the deep level (``(256, 512)``).
        tum_channels: channels of each TUM output (256); its input from the base feature has half.
        num_levels: TUMs stacked (8).
        num_scales: output scales of each TUM, the neck's levels (6).
        smooth: TUMs with their 1x1 smoothing convs.
        sfam: apply SFAM's channel attention (M2Det's paper; the released M2Det320 config leaves it out).
        sfam_reduction: SFAM's squeeze ratio (16).
        norm: ``channels -> norm layer`` of every conv but the last BatchNorm (M2Det: BatchNorm).

    Shapes: ``[[B, in_channels[0], H, W], [B, in_channels[1], H', W']]`` -> list of ``num_scales``
    ``[B, tum_channels * num_levels, H_s, W_s]``, largest first (``TUM`` sizes from ``H``; M2Det320:
    40, 20, 10, 5, 3, 1 with 2048 channels).
    """

    def __init__(self, *, in_channels: tuple[int, ...], base_channels: tuple[int, int], tum_channels: int,
                 num_levels: int, num_scales: int, smooth: bool, sfam: bool, sfam_reduction: int,
                 norm: Callable[[int], nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__()
        conv = partial(ConvNormReLU, norm=norm)
        if len(in_channels) != 2:
            raise ValueError(f"MLFPN fuses two backbone levels, got {len(in_channels)}")
        shallow, deep = base_channels
        self.reduce_shallow = conv(in_channels[0], shallow, 3, padding=1)
        self.reduce_deep = conv(in_channels[1], deep, 1)
        self.compress = conv(shallow + deep, tum_channels // 2, 1)
        self.tums = nn.ModuleList(
            TUM(in_channels=tum_channels // 2 + (tum_channels if i else 0), channels=tum_channels,
                num_scales=num_scales, smooth=smooth, norm=norm) for i in range(num_levels))
        channels = tum_channels * num_levels
        self.sfam = SFAM(channels=channels, reduction=sfam_reduction) if sfam else None
        self.first_level_norm = nn.BatchNorm2d(channels)
        self.out_channels = (channels,) * num_scales
        for name, m in self.named_modules():
            if isinstance(m, nn.Conv2d) and not name.startswith("sfam"):  # the official init (SFAM: PyTorch's)
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def base_feature(self, shallow: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
        """FFMv1: ``[B, base_channels[0] + base_channels[1], H, W]`` at the shallow level's size."""
        deep = F.interpolate(self.reduce_deep(deep), size=shallow.shape[-2:], mode="nearest")
        return torch.cat([self.reduce_shallow(shallow), deep], dim=1)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        compressed = self.compress(self.base_feature(*features))
        tum_outs = [self.tums[0](compressed)]
        for tum in self.tums[1:]:
            tum_outs.append(tum(torch.cat([compressed, tum_outs[-1][0]], dim=1)))
        outs = [torch.cat(same_scale, dim=1) for same_scale in zip(*tum_outs)]
        if self.sfam is not None:
            outs = self.sfam(outs)
        outs[0] = self.first_level_norm(outs[0])
        return outs
