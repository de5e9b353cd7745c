"""Root-ResNet (ScratchDet, Zhu et al., 2019): ResNet-18/34 with a stride-1 root block in place of
the 7x7 stride-2 conv, for SSD-style detectors trained from scratch."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from dettool.trainer.models.backbones.norm import norm_layer
from dettool.trainer.models.backbones.weights import init_for_scratch, load_backbone_weights

STAGE_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


def basic_stage(in_channels: int, channels: int, num_blocks: int, stride: int,
                norm: Callable[[int], nn.Module]) -> nn.Sequential:
    """A ResNet stage of torchvision basic blocks normalised by ``norm``; the first block strides
    and, where the shape changes, projects its shortcut (1x1 conv + norm, torchvision's ``downsample``)."""
    downsample = None
    if stride != 1 or in_channels != channels:
        downsample = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), norm(channels))
    blocks = [BasicBlock(in_channels, channels, stride=stride, downsample=downsample, norm_layer=norm)]
    blocks += [BasicBlock(channels, channels, norm_layer=norm) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


class RootResNet(nn.Module):
    """ResNet-18/34 whose stem is ScratchDet's root block.

    ResNet's 7x7 stride-2 conv is replaced by three 3x3 stride-1 convs of ``base_channels``, each
    followed by BatchNorm and a ReLU (the root block), so the first layers see the full-resolution
    image; a 2x2 stride-2 max pool follows (ResNet's 3x3 pool stays out), then ResNet's four stages
    of basic blocks (strides 1, 2, 2, 2; ``base_channels * 2**i`` channels) with BatchNorm. The
    stages run at strides 2, 4, 8 and 16 instead of ResNet's 4 to 32: on a 300x300 input, stage 2
    (0-based) gives SSD's 38x38 level and stage 3 its 19x19 one, as the authors' ``ssd_root34_300``
    and Caffe ``Resnet34rootV2`` take them (``conv4_12`` / ``conv5_6``). State-dict keys follow
    torchvision (``layer1.0.conv1.weight``...), the root block is ``root.{0,1,3,4,6,7}``.

    Args:
        depth: 18 or 34.
        out_indices: stages returned, 0-based (ScratchDet: ``(2, 3)``).
        base_channels: channels of the root block and the first stage (ResNet: 64); a narrower
            network trains on small budgets.
        norm: 'bn' or 'syncbn' (BatchNorm synchronised across processes).
        weights: optional local file with this module's state dict or a detector checkpoint whose
            ``backbone.*`` entries are it (ScratchDet starts from scratch: none).

    Shapes: ``[B, 3, H, W]`` -> list of ``[B, base_channels * 2**i, H_i, W_i]`` for i in
    out_indices, ``H_i = ceil(floor(H / 2) / 2**i)`` (300 -> 150, 150, 75, 38, 19).
    """

    def __init__(self, *, depth: int, out_indices: tuple[int, ...], base_channels: int, norm: str,
                 weights: str | None = None) -> None:
        super().__init__()
        if depth not in STAGE_BLOCKS:
            raise ValueError(f"Root-ResNet depth must be one of {sorted(STAGE_BLOCKS)}, got {depth}")
        indices = list(out_indices)
        if not indices or indices != sorted(set(indices)) or indices[0] < 0 or indices[-1] > 3:
            raise ValueError(f"out_indices must be increasing stage indices in 0..3, got {indices}")
        if norm not in ("bn", "syncbn"):
            raise ValueError(f"Root-ResNet norm must be 'bn' or 'syncbn' (it trains from scratch), got {norm!r}")
        bn = norm_layer(norm)
        root: list[nn.Module] = []
        in_channels = 3
        for _ in range(3):
            root += [nn.Conv2d(in_channels, base_channels, 3, padding=1, bias=False), bn(base_channels),
                     nn.ReLU(inplace=True)]
            in_channels = base_channels
        self.root = nn.Sequential(*root)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            basic_stage(base_channels * 2 ** max(i - 1, 0), base_channels * 2 ** i, num_blocks,
                        stride=1 if i == 0 else 2, norm=bn)
            for i, num_blocks in enumerate(STAGE_BLOCKS[depth]))
        self.out_indices = tuple(indices)
        self.out_channels = tuple(base_channels * 2 ** i for i in self.out_indices)
        init_for_scratch(self)
        if weights:
            self.load_weights(weights)

    @property
    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def load_weights(self, path: str) -> None:
        """Load a local state dict of this module, or the backbone of a detector checkpoint
        (``backbone.*`` of its ``model`` / ``state_dict``); names what doesn't fit."""
        load_backbone_weights(self, path, "fc.")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.pool(self.root(x))
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
            if i == self.out_indices[-1]:
                break
        return outs
