"""HRNet backbone (HRNetV2p, Sun et al., "High-Resolution Representations for Labeling Pixels and
Regions", arXiv 1904.04514), as MMDetection's ``HRNet``.

A stem of two 3x3 stride-2 convs brings the image to stride 4; stage 1 is a run of residual
blocks (bottlenecks) at that stride; each later stage adds a branch at half the resolution of the
last one (a 3x3 stride-2 conv from it: the *transition*) and runs ``num_modules`` high-resolution
modules: every branch through its own residual blocks, then every branch's output is the ReLU of
the sum of all branches brought to its resolution and width (the *fusion*). Stage 4's branches,
strides 4 to 32, are the outputs.

Module and parameter names are MMDetection's (``conv1``, ``bn1``, ``layer1``, ``transition1``,
``stage2.<module>.branches.<branch>.<block>``, ``stage2.<module>.fuse_layers.<out>.<in>``...) and
the blocks are torchvision's, whose names MMDetection's ResNet blocks share, so MMDetection's
HRNet state dict loads by name (GroupNorm layers, named ``gn1`` there, are ``bn1`` here).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models.resnet import BasicBlock, Bottleneck

from dettool.trainer.models.backbones.norm import norm_layer
from dettool.trainer.models.backbones.weights import init_for_scratch, load_backbone_weights

Norm = Callable[[int], nn.Module]
BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}
# the heads of an ImageNet HRNet (HRNet-Image-Classification's ``cls_hrnet``), not part of the backbone
CLASSIFIER_PREFIXES = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")


@dataclass(frozen=True)
class HRStage:
    """One stage of an HRNet (MMDetection's ``extra['stageN']``).

    Attributes:
        num_modules: high-resolution modules in the stage (stage 1: one run of blocks).
        block: ``'basic'`` or ``'bottleneck'`` residual blocks.
        num_blocks: blocks per branch in each module.
        num_channels: width of each branch's blocks (a bottleneck's output is 4 times wider).
    """

    num_modules: int
    block: Literal["basic", "bottleneck"]
    num_blocks: tuple[int, ...]
    num_channels: tuple[int, ...]

    @property
    def num_branches(self) -> int:
        return len(self.num_channels)

    @property
    def out_channels(self) -> tuple[int, ...]:
        """Channels of each branch's output."""
        return tuple(c * BLOCKS[self.block].expansion for c in self.num_channels)


def conv_norm(in_channels: int, out_channels: int, kernel_size: int, stride: int, norm: Norm,
              relu: bool) -> nn.Sequential:
    """A bias-free conv (padding keeps the size at stride 1), its norm and optionally a ReLU:
    ``[B, in, H, W]`` -> ``[B, out, ceil(H / stride), ceil(W / stride)]``."""
    layers = [nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
              norm(out_channels)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


def residual_blocks(block: type[BasicBlock] | type[Bottleneck], in_channels: int, channels: int, num_blocks: int,
                    norm: Norm) -> nn.Sequential:
    """``num_blocks`` stride-1 blocks of width ``channels``; the first projects its shortcut
    (1x1 conv + norm, ``downsample``) where its input is not ``channels * expansion`` wide."""
    out_channels = channels * block.expansion
    downsample = None
    if in_channels != out_channels:
        downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), norm(out_channels))
    blocks = [block(in_channels, channels, downsample=downsample, norm_layer=norm)]
    blocks += [block(out_channels, channels, norm_layer=norm) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


class HRModule(nn.Module):
    """Parallel branches of residual blocks, then multi-scale fusion.

    Branch ``j`` runs at stride ``s * 2**j`` (``s``: the first branch's). Output ``i`` is
    ``relu(sum_j f_ij(x_j))`` with ``f_ii`` the identity; a lower-resolution branch (``j > i``)
    is brought over by a 1x1 conv + norm to branch ``i``'s width, then nearest upsampling to
    branch ``i``'s size (MMDetection: by ``2**(j - i)``; the same wherever the sizes halve
    exactly, and still defined, for a symbolic input size, where they do not); a
    higher-resolution one (``j < i``) by ``i - j`` 3x3 stride-2 convs + norm, ReLUs between
    them, the last one to branch ``i``'s width.

    Args:
        block: the residual block class of the branches.
        num_blocks: blocks per branch.
        in_channels: input channels of each branch.
        num_channels: block width of each branch (outputs ``num_channels * block.expansion``).
        norm: ``channels -> norm module``.

    Shapes: list of ``[B, in_channels[j], H_j, W_j]`` -> list of ``[B, out_channels[j], H_j, W_j]``.
    """

    def __init__(self, *, block: type[BasicBlock] | type[Bottleneck], num_blocks: tuple[int, ...],
                 in_channels: tuple[int, ...], num_channels: tuple[int, ...], norm: Norm) -> None:
        super().__init__()
        if not len(num_blocks) == len(in_channels) == len(num_channels):
            raise ValueError(f"one entry per branch: num_blocks {list(num_blocks)}, in_channels "
                             f"{list(in_channels)}, num_channels {list(num_channels)}")
        self.branches = nn.ModuleList(residual_blocks(block, cin, c, n, norm)
                                      for cin, c, n in zip(in_channels, num_channels, num_blocks))
        self.out_channels = tuple(c * block.expansion for c in num_channels)
        num = len(num_channels)
        # a single branch has nothing to fuse: MMDetection's fuse_layers is None (no parameters either way)
        self.fuse_layers = nn.ModuleList(
            nn.ModuleList(self._fuse_layer(j, i, norm) for j in range(num)) for i in range(num)) if num > 1 else None
        self.relu = nn.ReLU(inplace=False)

    def _fuse_layer(self, j: int, i: int, norm: Norm) -> nn.Module:
        """What brings branch ``j`` to branch ``i`` (before the upsampling when ``j > i``)."""
        c = self.out_channels
        if j == i:
            return nn.Identity()
        if j > i:
            return conv_norm(c[j], c[i], 1, 1, norm, relu=False)
        steps = [conv_norm(c[j], c[j], 3, 2, norm, relu=True) for _ in range(i - j - 1)]
        return nn.Sequential(*steps, conv_norm(c[j], c[i], 3, 2, norm, relu=False))

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
        x = [branch(t) for branch, t in zip(self.branches, x)]
        if self.fuse_layers is None:
            return x
        fused = []
        for i, layers in enumerate(self.fuse_layers):
            total = None
            for j, layer in enumerate(layers):  # summed in branch order, as MMDetection
                y = layer(x[j])
                if j > i:
                    y = F.interpolate(y, size=x[i].shape[-2:], mode="nearest")
                total = y if total is None else total + y
            fused.append(self.relu(total))
        return fused


def transition(in_channels: tuple[int, ...], out_channels: tuple[int, ...], norm: Norm) -> nn.ModuleList:
    """From one stage's branches to the next one's: an existing branch passes unchanged (3x3 conv
    + norm + ReLU where its width changes); each new branch ``i`` comes from the last existing one
    through ``i + 1 - len(in_channels)`` 3x3 stride-2 convs + norm + ReLU, the last to its width."""
    layers: list[nn.Module] = []
    last = in_channels[-1]
    for i, c in enumerate(out_channels):
        if i < len(in_channels):
            layers.append(nn.Identity() if c == in_channels[i] else conv_norm(in_channels[i], c, 3, 1, norm, True))
        else:
            steps = i + 1 - len(in_channels)
            layers.append(nn.Sequential(*[conv_norm(last, c if k == steps - 1 else last, 3, 2, norm, relu=True)
                                          for k in range(steps)]))
    return nn.ModuleList(layers)


class HRNet(nn.Module):
    """HRNetV2p feature extractor: all four branches of its last stage.

    Args:
        stages: the four stages (HRNetV2p-W32: ``HRStage(1, 'bottleneck', (4,), (64,))``, then
            ``HRStage(1, 'basic', (4,) * 2, (32, 64))``, ``HRStage(4, 'basic', (4,) * 3, (32, 64,
            128))``, ``HRStage(3, 'basic', (4,) * 4, (32, 64, 128, 256))``; W18 has 18, 36, 72, 144).
            Stage 1 has one branch; no stage has fewer branches than the one before it.
        norm: 'frozen_bn' | 'bn' | 'syncbn' | 'gn'.
        gn_groups: groups for GroupNorm.
        norm_eval: keep BN layers in eval mode (frozen statistics) while training.
        weights: optional local file: this module's state dict (an ImageNet HRNet's classification
            head ignored) or a detector checkpoint whose ``backbone.*`` entries are it.

    Shapes: ``[B, 3, H, W]`` -> list of ``[B, out_channels[i], H_i, W_i]`` for each branch ``i`` of
    stage 4, ``H_i = ceil(H / 2**(i + 2))`` (stride-2 convs round up, and the fusion upsamples to
    the branches' sizes, so any size runs; MMDetection's, upsampling by 2, needs a multiple of 32).
    """

    def __init__(self, *, stages: tuple[HRStage, HRStage, HRStage, HRStage], norm: str, gn_groups: int,
                 norm_eval: bool, weights: str | None = None) -> None:
        super().__init__()
        if len(stages) != 4:
            raise ValueError(f"HRNet has 4 stages, got {len(stages)}")
        if stages[0].num_branches != 1 or stages[0].num_modules != 1:
            raise ValueError("HRNet's stage 1 is one run of blocks: one module of one branch")
        for k in range(1, 4):
            if stages[k].num_branches < stages[k - 1].num_branches:
                raise ValueError(f"stage {k + 1} has fewer branches than stage {k}")
        make_norm = norm_layer(norm, gn_groups)
        self.norm_eval = norm_eval
        self.conv1 = nn.Conv2d(3, 64, 3, stride=2, padding=1, bias=False)
        self.bn1 = make_norm(64)
        self.conv2 = nn.Conv2d(64, 64, 3, stride=2, padding=1, bias=False)
        self.bn2 = make_norm(64)
        self.relu = nn.ReLU(inplace=True)
        first = stages[0]
        self.layer1 = residual_blocks(BLOCKS[first.block], 64, first.num_channels[0], first.num_blocks[0], make_norm)
        channels = first.out_channels
        for k, stage in enumerate(stages[1:], start=2):
            setattr(self, f"transition{k - 1}", transition(channels, stage.out_channels, make_norm))
            setattr(self, f"stage{k}", nn.Sequential(*[
                HRModule(block=BLOCKS[stage.block], num_blocks=stage.num_blocks, in_channels=stage.out_channels,
                         num_channels=stage.num_channels, norm=make_norm) for _ in range(stage.num_modules)]))
            channels = stage.out_channels
        self.out_channels = channels
        init_for_scratch(self)
        if weights:
            self.load_weights(weights)

    @property
    def transitions(self) -> list[nn.ModuleList]:
        return [self.transition1, self.transition2, self.transition3]

    @property
    def stages(self) -> list[nn.Sequential]:
        return [self.stage2, self.stage3, self.stage4]

    def load_weights(self, path: str) -> None:
        """Load a local state dict of this module (an ImageNet HRNet's, its classification head
        ignored) or the backbone of a detector checkpoint; names what doesn't fit."""
        load_backbone_weights(self, path, CLASSIFIER_PREFIXES,
                              optional=lambda key: key.endswith("num_batches_tracked"))

    def train(self, mode: bool = True) -> "HRNet":
        super().train(mode)
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        branches = [self.layer1(x)]
        for layers, stage in zip(self.transitions, self.stages):
            # a new branch grows from the last one. MMDetection feeds the last one to a widened
            # existing branch too: a different branch (and size) it cannot fuse, unless it is the last.
            branches = stage([layer(branches[min(i, len(branches) - 1)]) for i, layer in enumerate(layers)])
        return branches
