"""VGG backbone of SSD: VGG without its classifier, pool5 at stride 1 and the dilated fc6/fc7 convs."""
from __future__ import annotations

import torch
from torch import nn

from dettool.trainer.models.backbones.weights import load_backbone_weights

STAGE_BLOCKS = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}


def conv_block(in_channels: int, out_channels: int, norm: str, **conv_args) -> list[nn.Module]:
    """A conv, BatchNorm when ``norm`` is 'bn' (mmcv's ``VGG(with_bn=True)``), and a ReLU."""
    bn = [nn.BatchNorm2d(out_channels)] if norm == "bn" else []
    return [nn.Conv2d(in_channels, out_channels, **conv_args), *bn, nn.ReLU(inplace=True)]


def vgg_layers(depth: int, ceil_mode: bool, with_last_pool: bool, base_channels: int = 64,
               norm: str = "none") -> tuple[list[nn.Module], list[int]]:
    """The layers of VGG-``depth``'s feature part: per stage, 3x3 conv (+ BN) + ReLU blocks of
    ``base_channels * 2**i`` channels (at most 8x), then a 2x2 stride-2 max pool (the last
    stage's pool only if ``with_last_pool``). Returns the layers and the index of each stage's
    last ReLU."""
    layers: list[nn.Module] = []
    stage_ends = []
    in_channels = 3
    for i, num_blocks in enumerate(STAGE_BLOCKS[depth]):
        channels = base_channels * min(2 ** i, 8)
        for _ in range(num_blocks):
            layers += conv_block(in_channels, channels, norm, kernel_size=3, padding=1)
            in_channels = channels
        stage_ends.append(len(layers) - 1)
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=ceil_mode))
    if not with_last_pool:
        layers.pop()
    return layers, stage_ends


class SSDVGG(nn.Module):
    """VGG feature extractor of SSD (MMDetection's ``SSDVGG``).

    VGG's conv layers, then pool5 (3x3, stride 1, padding 1), conv6 (3x3, dilation 6, 1024
    channels) and conv7 (1x1, 1024 channels), each conv followed by a ReLU. All layers sit in
    one ``features`` sequence, numbered as MMDetection numbers them, so state-dict keys
    (``features.{i}.weight``) equal MMDetection's and its SSD checkpoints load unchanged. The
    outputs are the features after the layers ``out_feature_indices``; SSD300's (22, 34) are
    conv4_3's ReLU (512 channels, stride 8) and conv7's ReLU (1024 channels, stride 16), which
    ``None`` selects whatever the layer numbering.

    Args:
        depth: 11, 13, 16 or 19.
        with_last_pool: keep VGG's stage-5 2x2 pool before pool5.
        ceil_mode: round pooled sizes up (SSD: 300 -> 150 -> 75 -> 38 -> 19).
        out_feature_indices: indices into ``features`` whose outputs are returned, increasing
            (None: conv4_3's and conv7's ReLUs).
        base_channels: channels of the first stage (VGG: 64); stage ``i`` has ``base * 2**i``, at most
            ``8 * base``, conv6 / conv7 ``16 * base``. Narrower VGGs train on small budgets.
        norm: 'none' (VGG, MMDetection's SSD) or 'bn': BatchNorm after every conv, which training
            from scratch needs (DSOD, ScratchDet); the layer numbering then counts the BN layers.
        weights: optional local file with this module's state dict (``features.*``; ``classifier.*``
            ignored) or a detector checkpoint whose ``backbone.*`` entries are it.

    Shapes: ``[B, 3, H, W]`` -> list of ``[B, C_i, H_i, W_i]``, ``C_i = out_channels[i]``; for a
    300x300 input and the defaults, 38x38 and 19x19.
    """

    def __init__(self, *, depth: int, with_last_pool: bool, ceil_mode: bool,
                 out_feature_indices: tuple[int, ...] | None, base_channels: int = 64, norm: str = "none",
                 weights: str | None = None) -> None:
        super().__init__()
        if depth not in STAGE_BLOCKS:
            raise ValueError(f"VGG depth must be one of {sorted(STAGE_BLOCKS)}, got {depth}")
        if norm not in ("none", "bn"):
            raise ValueError(f"SSDVGG norm must be 'none' or 'bn', got {norm!r}")
        layers, stage_ends = vgg_layers(depth, ceil_mode, with_last_pool, base_channels, norm)
        top, fc = 8 * base_channels, 16 * base_channels
        layers += [nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
                   *conv_block(top, fc, norm, kernel_size=3, padding=6, dilation=6),
                   *conv_block(fc, fc, norm, kernel_size=1)]
        self.features = nn.Sequential(*layers)
        indices = [stage_ends[3], len(layers) - 1] if out_feature_indices is None else list(out_feature_indices)
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
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
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
