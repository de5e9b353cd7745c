"""Stage plugins: blocks put into the residual blocks of chosen backbone stages.

MMDetection's ``plugins`` (and ``dcn`` + ``stage_with_dcn``) settings as one typed spec: a
plugin either replaces a block's 3x3 conv (``position='conv2'``: deformable convolution) or
is applied to the output of a conv and its norm (``after_conv1``, ``after_conv2``,
``after_conv3`` in bottlenecks; global context blocks and generalized attention sit there).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

Position = Literal["conv2", "after_conv1", "after_conv2", "after_conv3"]


@dataclass(frozen=True)
class StagePlugin:
    """Where a plugin goes and how to make it.

    Attributes:
        position: ``'conv2'`` replaces each block's 3x3 conv with ``build(conv)`` (given the
            ``nn.Conv2d`` it replaces); ``'after_convK'`` inserts ``build(channels)`` after the
            K-th conv of each block (after its norm, before the residual sum for the last conv).
        stages: per ResNet stage (res2..res5), whether its blocks take the plugin.
        build: makes one plugin module per block.
    """

    position: Position
    stages: tuple[bool, ...]
    build: Callable[..., nn.Module]


class PluginBasicBlock(BasicBlock):
    """torchvision's ``BasicBlock`` with plugin slots ``after_conv1`` and ``after_conv2`` (empty by default)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.after_conv1 = nn.Sequential()
        self.after_conv2 = nn.Sequential()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.after_conv1(self.relu(self.bn1(self.conv1(x))))
        out = self.after_conv2(self.bn2(self.conv2(out)))
        return self.relu(out + identity)


class PluginBottleneck(Bottleneck):
    """torchvision's ``Bottleneck`` with plugin slots after each of its three convs (empty by default)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.after_conv1 = nn.Sequential()
        self.after_conv2 = nn.Sequential()
        self.after_conv3 = nn.Sequential()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.after_conv1(self.relu(self.bn1(self.conv1(x))))
        out = self.after_conv2(self.relu(self.bn2(self.conv2(out))))
        out = self.after_conv3(self.bn3(self.conv3(out)))
        return self.relu(out + identity)


def apply_plugins(stages: list[nn.Sequential], plugins: list[StagePlugin]) -> None:
    """Put each plugin into every block of the stages it names (in place)."""
    for plugin in plugins:
        if len(plugin.stages) != len(stages):
            raise ValueError(f"stage plugin: {len(plugin.stages)} stage flags for {len(stages)} stages")
        for stage, enabled in zip(stages, plugin.stages):
            if not enabled:
                continue
            for block in stage:
                if plugin.position == "conv2":
                    block.conv2 = plugin.build(block.conv2)
                    continue
                slot = getattr(block, plugin.position, None)
                if slot is None:
                    raise ValueError(f"stage plugin: {type(block).__name__} has no {plugin.position} position")
                conv = getattr(block, f"conv{plugin.position[-1]}")
                slot.append(plugin.build(conv.out_channels))
