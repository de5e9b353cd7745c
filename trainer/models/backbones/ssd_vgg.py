"""VGG backbone of SSD: VGG without its classifier, pool5 at stride 1 and the dilated fc6/fc7 convs."""
from __future__ import annotations

import torch
from torch import nn

from dettool.trainer.models.backbones.weights import load_backbone_weights

STAGE_BLOCKS = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}


def vgg_layers(depth: int, ceil_mode: bool, with_last_pool: bool) -> list[nn.Module]:
    """The layers of VGG-``depth``'s feature part: per stage, 3x3 conv + ReLU blocks, then a 2x2
    stride-2 max pool (the last stage's pool only if ``with_last_pool``)."""
    layers: list[nn.Module] = []
    in_channels = 3
    for i, num_blocks in enumerate(STAGE_BLOCKS[depth]):
        channels = min(64 * 2 ** i, 512)
        for _ in range(num_blocks):
            layers += [nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
            in_channels = channels
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=ceil_mode))
    if not with_last_pool:
        layers.pop()
    return layers


class SSDVGG(nn.Module):
    """VGG feature extractor of SSD (MMDetection's ``SSDVGG``).

    VGG's conv layers, then pool5 (3x3, stride 1, padding 1), conv6 (3x3, dilation 6, 1024
    channels) and conv7 (1x1, 1024 channels), each conv followed by a ReLU. All layers sit in
    one ``features`` sequence, numbered as MMDetection numbers them, so state-dict keys
    (``features.{i}.weight``) equal MMDetection's and its SSD checkpoints load unchanged. The
    outputs are the features after the layers ``out_feature_indices``; SSD300's (22, 34) are
    conv4_3's ReLU (512 channels, stride 8) and conv7's ReLU (1024 channels, stride 16).

    Args:
        depth: 11, 13, 16 or 19.
        with_last_pool: keep VGG's stage-5 2x2 pool before pool5.
        ceil_mode: round pooled sizes up (SSD: 300 -> 150 -> 75 -> 38 -> 19).
        out_feature_indices: indices into ``features`` whose outputs are returned, increasing.
        weights: optional local file with this module's state dict (``features.*``; ``classifier.*``
            ignored) or a detector checkpoint whose ``backbone.*`` entries are it.

    Shapes: ``[B, 3, H, W]`` -> list of ``[B, C_i, H_i, W_i]``, ``C_i = out_channels[i]``; for a
    300x300 input and the defaults, 38x38 and 19x19.
    """

    def __init__(self, *, depth: int, with_last_pool: bool, ceil_mode: bool,
                 out_feature_indices: tuple[int, ...], weights: str | None = None) -> None:
        super().__init__()
        if depth not in STAGE_BLOCKS:
            raise ValueError(f"VGG depth must be one of {sorted(STAGE_BLOCKS)}, got {depth}")
        layers = vgg_layers(depth, ceil_mode, with_last_pool)
        layers += [nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
                   nn.Conv2d(512, 1024, kernel_size=3, padding=6, dilation=6), nn.ReLU(inplace=True),
                   nn.Conv2d(1024, 1024, kernel_size=1), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        indices = list(out_feature_indices)
        if not indices or indices != sorted(set(indices)) or indices[0] < 0 or indices[-1] >= len(layers):
            raise ValueError(f"out_feature_indices must be increasing indices below {len(layers)}, got {indices}")
        self.out_feature_indices = tuple(indices)
        for i in indices:  # an output read before an in-place ReLU would be overwritten by it
            if i + 1 < len(layers) and isinstance(layers[i + 1], nn.ReLU):
                layers[i + 1].inplace = False
        self.out_channels = tuple(self._channels_after(i) for i in indices)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # MMDetection's init when no pretrained weights are given
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        if weights:
            self.load_weights(weights)

    def _channels_after(self, index: int) -> int:
        convs = [m for m in self.features[: index + 1] if isinstance(m, nn.Conv2d)]
        return convs[-1].out_channels if convs else 3

    def load_weights(self, path: str) -> None:
        """Load a local state dict of this module (``classifier.*`` ignored), or the backbone of a
        detector checkpoint (``backbone.*`` of its ``model`` / ``state_dict``); names what doesn't fit."""
        load_backbone_weights(self, path, "classifier.")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.out_feature_indices:
                outs.append(x)
            if i == self.out_feature_indices[-1]:
                break
        return outs
