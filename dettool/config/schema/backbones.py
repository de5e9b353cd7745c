"""Config of backbones and of the blocks their stages can take (stage plugins)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, Optional, Union

from dettool.config.schema.common import PosInt, Range, Section, require

Stages = tuple[bool, bool, bool, bool]
NO_STAGES: Stages = (False, False, False, False)


@dataclass(frozen=True)
class DCNPluginConfig(Section):
    """Deformable convolution in place of each block's 3x3 conv (``conv2``) in the chosen stages.

    ``modulated`` gives DCNv2 (sigmoid modulation masks), else DCN (v1). MMDetection's
    ``dcn=dict(type='DCNv2', deform_groups=1)`` with ``stage_with_dcn``.
    """

    type: Literal["dcn"] = "dcn"
    stages: Stages = NO_STAGES
    position: Literal["conv2"] = "conv2"
    modulated: bool = True
    deform_groups: PosInt = 1


PluginConfig = DCNPluginConfig  # a Union as more plugins arrive (context block, generalized attention)


@dataclass(frozen=True)
class ResNetConfig(Section):
    """ResNet / ResNeXt backbone (torchvision blocks).

    ``style``: where a bottleneck strides, ``pytorch`` (3x3 conv, torchvision) or ``caffe`` (1x1
    conv; MMDetection's caffe-style models, which also take BGR input: ``data.channel_order``);
    ``plugins``: blocks inserted into (or replacing convs of) the blocks of given stages, as
    MMDetection's ``plugins`` / ``dcn`` settings; ``strides`` / ``dilations``: each stage's first
    stride and its 3x3 convs' dilation, as MMDetection's (R-FCN's dilated res5 at stride 16:
    ``(1, 2, 2, 1)`` and ``(1, 1, 1, 2)``); ``weights``: a local torchvision-format state dict.
    """

    type: Literal["resnet"] = "resnet"
    depth: Literal[18, 34, 50, 101] = 50
    groups: PosInt = 1
    width_per_group: PosInt = 64
    style: Literal["pytorch", "caffe"] = "pytorch"
    norm: Literal["frozen_bn", "bn", "syncbn", "gn"] = "frozen_bn"
    gn_groups: PosInt = 32
    norm_eval: bool = True
    frozen_stages: Annotated[int, Range(-1, 4)] = 1
    out_indices: tuple[Annotated[int, Range(0, 3)], ...] = (1, 2, 3)
    strides: tuple[PosInt, PosInt, PosInt, PosInt] = (1, 2, 2, 2)
    dilations: tuple[PosInt, PosInt, PosInt, PosInt] = (1, 1, 1, 1)
    plugins: tuple[PluginConfig, ...] = ()
    weights: Optional[str] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        require(len(self.out_indices) > 0 and list(self.out_indices) == sorted(set(self.out_indices)),
                "out_indices", f"must be increasing stage indices, got {list(self.out_indices)}")
        require(self.depth >= 50 or (self.groups, self.width_per_group) == (1, 64), "groups",
                "ResNeXt grouping needs depth 50 or 101 (bottleneck blocks)")


@dataclass(frozen=True)
class SSDVGGConfig(Section):
    """VGG backbone of SSD (MMDetection's ``SSDVGG``): VGG's conv layers, then pool5 at stride 1
    and the dilated conv6 and conv7 (1024 channels).

    ``out_feature_indices``: positions in the layer sequence (convs, ReLUs and pools, numbered as
    MMDetection numbers them) whose outputs are returned; SSD300's are conv4_3's and conv7's
    ReLUs, which ``null`` selects whatever the numbering (with ``norm: bn`` it counts the BN layers).
    MMDetection's ``out_indices`` is absent: its ``SSDVGG`` ignores it. ``base_channels``: the
    first stage's channels (64; a narrower VGG for small budgets, conv6 / conv7 get 16x);
    ``norm``: ``bn`` adds BatchNorm after every conv (mmcv's ``VGG(with_bn=True)``), for training
    from scratch. ``weights``: a local
    state dict in MMDetection's names (``features.*``) or a detector checkpoint's ``backbone.*``.
    """

    type: Literal["ssd_vgg"] = "ssd_vgg"
    depth: Literal[11, 13, 16, 19] = 16
    with_last_pool: bool = False
    ceil_mode: bool = True
    out_feature_indices: Optional[tuple[Annotated[int, Range(min=0)], ...]] = (22, 34)
    base_channels: PosInt = 64
    norm: Literal["none", "bn"] = "none"
    weights: Optional[str] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.out_feature_indices is not None:
            indices = list(self.out_feature_indices)
            require(len(indices) > 0 and indices == sorted(set(indices)), "out_feature_indices",
                    f"must be increasing layer indices, got {indices}")


@dataclass(frozen=True)
class RootResNetConfig(Section):
    """Root-ResNet (ScratchDet): ResNet-18/34 basic blocks with BatchNorm behind a root block of
    three 3x3 stride-1 convs and a 2x2 max pool, so the stages run at strides 2 to 16 (a 300x300
    input gives 38x38 at stage 2 and 19x19 at stage 3, SSD's first two levels). ``out_indices``:
    0-based stages returned; ``base_channels``: the root block's and first stage's channels (64;
    stage ``i`` has ``base * 2**i``); ``norm``: ``bn``, or ``syncbn`` across processes; ``weights``:
    a local state dict of the module or a detector checkpoint's ``backbone.*`` (ScratchDet trains
    from scratch: none).
    """

    type: Literal["root_resnet"] = "root_resnet"
    depth: Literal[18, 34] = 34
    out_indices: tuple[Annotated[int, Range(0, 3)], ...] = (2, 3)
    base_channels: PosInt = 64
    norm: Literal["bn", "syncbn"] = "bn"
    weights: Optional[str] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        require(len(self.out_indices) > 0 and list(self.out_indices) == sorted(set(self.out_indices)),
                "out_indices", f"must be increasing stage indices, got {list(self.out_indices)}")


BackboneConfig = Union[ResNetConfig, SSDVGGConfig, RootResNetConfig]  # HRNet joins here
