"""ResNet-18/34/50/101 and ResNeXt backbones built from torchvision's blocks."""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import ResNet as TVResNet

from dettool.trainer.models.backbones.norm import norm_layer
from dettool.trainer.models.backbones.stage_plugins import (
    PluginBasicBlock,
    PluginBottleneck,
    StagePlugin,
    apply_plugins,
)
from dettool.trainer.models.backbones.weights import load_backbone_weights

ARCH = {18: (PluginBasicBlock, (2, 2, 2, 2)), 34: (PluginBasicBlock, (3, 4, 6, 3)),
        50: (PluginBottleneck, (3, 4, 6, 3)), 101: (PluginBottleneck, (3, 4, 23, 3))}


class ResNet(nn.Module):
    """Multi-stage ResNet feature extractor.

    State-dict keys match torchvision's classification ResNet (``conv1``, ``bn1``, ``layer1``...),
    so a local torchvision-format weights file initialises it.

    Args:
        depth: 18, 34, 50 or 101.
        groups, width_per_group: ResNeXt cardinality and width (32 and 4 for ResNeXt-101-32x4d).
        style: 'pytorch' (a bottleneck strides in its 3x3 conv, torchvision's) or 'caffe' (in its
            first 1x1 conv, MMDetection's caffe-style models); basic blocks have one place only.
        norm: 'frozen_bn' | 'bn' | 'syncbn' | 'gn'.
        gn_groups: groups for GroupNorm.
        norm_eval: keep BN layers in eval mode (frozen statistics) while training.
        frozen_stages: -1 trains everything; 0 freezes the stem; k also freezes stages 1..k.
        out_indices: stages returned, 0-based (res2 = 0 ... res5 = 3).
        strides: stride of each stage's first block (``(1, 2, 2, 2)``; R-FCN / DeepLab keep res5 at
            stride 16 with ``(1, 2, 2, 1)``).
        dilations: dilation of each stage's 3x3 convs, in every block of the stage (``(1, 1, 1, 1)``;
            R-FCN: ``(1, 1, 1, 2)``); as MMDetection, a basic block dilates its first conv, a
            bottleneck its 3x3 conv.
        plugins: blocks put into the residual blocks of chosen stages (DCN, ...; see
            ``stage_plugins``).
        weights: optional local file with a torchvision-format state dict.

    Shapes: ``[B, 3, H, W]`` -> list of ``[B, C_i, H / s_i, W / s_i]`` for i in out_indices, ``s_i``
    4 times the product of ``strides[:i + 1]`` (``2**(i + 2)`` by default).
    """

    def __init__(self, *, depth: int, groups: int, width_per_group: int, style: str, norm: str, gn_groups: int,
                 norm_eval: bool, frozen_stages: int, out_indices: tuple[int, ...],
                 strides: tuple[int, ...] = (1, 2, 2, 2), dilations: tuple[int, ...] = (1, 1, 1, 1),
                 plugins: list[StagePlugin] = (), weights: str | None = None) -> None:
        super().__init__()
        if depth not in ARCH:
            raise ValueError(f"ResNet depth must be one of {sorted(ARCH)}, got {depth}")
        block, layers = ARCH[depth]
        if block is PluginBasicBlock and (groups != 1 or width_per_group != 64):
            raise ValueError("ResNeXt grouping needs depth 50 or 101 (bottleneck blocks)")
        tv = TVResNet(block, list(layers), groups=groups, width_per_group=width_per_group,
                      norm_layer=norm_layer(norm, gn_groups))
        self.conv1, self.bn1, self.relu, self.maxpool = tv.conv1, tv.bn1, tv.relu, tv.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = tv.layer1, tv.layer2, tv.layer3, tv.layer4
        self.out_indices = tuple(out_indices)
        expansion = block.expansion
        self.stage_channels = tuple(64 * 2 ** i * expansion for i in range(4))
        self.out_channels = tuple(self.stage_channels[i] for i in self.out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        if style not in ("pytorch", "caffe"):
            raise ValueError(f"ResNet style must be 'pytorch' or 'caffe', got {style!r}")
        if style == "caffe" and block is PluginBottleneck:
            for stage in self.stages:  # the first block of a stage strides: move it to its 1x1 conv
                first = stage[0]
                first.conv1.stride, first.conv2.stride = first.conv2.stride, (1, 1)
        self._set_geometry(tuple(strides), tuple(dilations), style)
        apply_plugins(self.stages, list(plugins))
        if weights:
            self.load_weights(weights)
        self._freeze()

    def _set_geometry(self, strides: tuple[int, ...], dilations: tuple[int, ...], style: str) -> None:
        """Give each stage its first block's stride and its 3x3 convs' dilation (padding = dilation)."""
        if len(strides) != 4 or len(dilations) != 4 or min(strides + dilations) < 1:
            raise ValueError(f"ResNet strides and dilations need 4 positive values each, got {list(strides)} "
                             f"and {list(dilations)}")
        for stage, stride, dilation in zip(self.stages, strides, dilations):
            for i, block in enumerate(stage):
                three = block.conv1 if isinstance(block, PluginBasicBlock) else block.conv2
                three.dilation, three.padding = (dilation, dilation), (dilation, dilation)
                if i == 0:
                    strided = three if isinstance(block, PluginBasicBlock) or style == "pytorch" else block.conv1
                    strided.stride = (stride, stride)
                    if block.downsample is not None:
                        block.downsample[0].stride = (stride, stride)

    @property
    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def load_weights(self, path: str) -> None:
        """Load a local torchvision-format state dict (``fc.*`` ignored), or the backbone of a
        detector checkpoint (dettool's or MMDetection's: the ``backbone.*`` entries of its
        ``model`` / ``state_dict``); names what doesn't fit."""
        # a torchvision file has no DCN offsets (zero-initialised), no plugin blocks (context blocks,
        # attention: initialised as the identity) and may predate num_batches_tracked
        load_backbone_weights(self, path, "fc.", optional=lambda key: "conv_offset" in key or ".after_conv" in key
                              or "num_batches_tracked" in key)

    def _freeze(self) -> None:
        if self.frozen_stages >= 0:
            for m in (self.conv1, self.bn1):
                for param in m.parameters():
                    param.requires_grad_(False)
        for stage in self.stages[: max(self.frozen_stages, 0)]:
            for param in stage.parameters():
                param.requires_grad_(False)

    def train(self, mode: bool = True) -> "ResNet":
        super().train(mode)
        if mode:
            frozen = [self.conv1, self.bn1] if self.frozen_stages >= 0 else []
            for m in frozen + self.stages[: max(self.frozen_stages, 0)]:
                m.eval()
            if self.norm_eval:
                for m in self.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
            if i >= max(self.out_indices):
                break
        return outs
