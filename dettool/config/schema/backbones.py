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
    MMDetection's ``plugins`` / ``dcn`` settings; ``weights``: a local torchvision-format state dict.
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
    ReLUs. MMDetection's ``out_indices`` is absent: its ``SSDVGG`` ignores it. ``weights``: a local
    state dict in MMDetection's names (``features.*``) or a detector checkpoint's ``backbone.*``.
    """

    type: Literal["ssd_vgg"] = "ssd_vgg"
    depth: Literal[11, 13, 16, 19] = 16
    with_last_pool: bool = False
    ceil_mode: bool = True
    out_feature_indices: tuple[Annotated[int, Range(min=0)], ...] = (22, 34)
    weights: Optional[str] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        indices = list(self.out_feature_indices)
        require(len(indices) > 0 and indices == sorted(set(indices)), "out_feature_indices",
                f"must be increasing layer indices, got {indices}")


BackboneConfig = Union[ResNetConfig, SSDVGGConfig]  # HRNet joins here
