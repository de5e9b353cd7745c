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


AfterConv = Literal["after_conv1", "after_conv2", "after_conv3"]  # after a conv's norm (and ReLU but the last's)


@dataclass(frozen=True)
class ContextBlockPluginConfig(Section):
    """Global context block (GCNet, Cao et al. 2019) after a conv of each block in the chosen stages.

    MMDetection's ``plugins=[dict(cfg=dict(type='ContextBlock', ratio=1./16), stages=(False, True,
    True, True), position='after_conv3')]`` (the defaults: res3-res5, after a bottleneck's last conv;
    a basic block's last conv is ``after_conv2``). ``ratio``: the bottleneck transform's share of
    the channels (1/16 or 1/4); ``pooling_type``: ``att`` (softmax attention pooling) or ``avg``;
    ``fusion_types``: ``channel_add`` (the paper's) and / or ``channel_mul``.
    """

    type: Literal["context_block"] = "context_block"
    stages: Stages = (False, True, True, True)
    position: AfterConv = "after_conv3"
    ratio: Annotated[float, Range(0, 1, min_inclusive=False)] = 1.0 / 16
    pooling_type: Literal["att", "avg"] = "att"
    fusion_types: tuple[Literal["channel_add", "channel_mul"], ...] = ("channel_add",)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(len(self.fusion_types) > 0 and len(set(self.fusion_types)) == len(self.fusion_types),
                "fusion_types", f"must name channel_add and / or channel_mul once each, got {list(self.fusion_types)}")


@dataclass(frozen=True)
class GeneralizedAttentionPluginConfig(Section):
    """Generalized attention (Zhu et al. 2019) after a conv of each block in the chosen stages.

    MMDetection's ``plugins=[dict(cfg=dict(type='GeneralizedAttention', spatial_range=-1,
    num_heads=8, attention_type='1111', kv_stride=2), stages=(False, False, True, True),
    position='after_conv2')]`` (the defaults: res4-res5, after a bottleneck's 3x3 conv).
    ``attention_type``: four '0' / '1' switches, quoted in YAML ('0010'), for the query-key content,
    query content-position, key content and position-only terms; ``kv_stride`` / ``q_stride``:
    subsampling of keys and values / queries; ``position_embedding_dim``: channels of the relative
    position embedding, a multiple of 4 (null: the block's channels); ``position_magnitude``: the
    multiplier of the position offsets. mmcv's ``spatial_range`` (a local window) is not implemented.
    """

    type: Literal["generalized_attention"] = "generalized_attention"
    stages: Stages = (False, False, True, True)
    position: AfterConv = "after_conv2"
    attention_type: str = "1111"
    num_heads: PosInt = 8
    kv_stride: PosInt = 2
    q_stride: PosInt = 1
    position_embedding_dim: Optional[PosInt] = None
    position_magnitude: PosInt = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        switches = self.attention_type
        require(len(switches) == 4 and set(switches) <= {"0", "1"} and "1" in switches, "attention_type",
                f"must be four '0' / '1' switches (quoted in YAML), not all '0', got {switches!r}")
        require(self.position_embedding_dim is None or self.position_embedding_dim % 4 == 0,
                "position_embedding_dim", f"must be a multiple of 4, got {self.position_embedding_dim}")


PluginConfig = Union[DCNPluginConfig, ContextBlockPluginConfig, GeneralizedAttentionPluginConfig]


@dataclass(frozen=True)
class ResNetConfig(Section):
    """ResNet / ResNeXt backbone (torchvision blocks).

    ``style``: where a bottleneck strides, ``pytorch`` (3x3 conv, torchvision) or ``caffe`` (1x1
    conv; MMDetection's caffe-style models, which also take BGR input: ``data.channel_order``);
    ``plugins``: blocks inserted into (or replacing convs of) the blocks of given stages, as
    MMDetection's ``plugins`` / ``dcn`` settings; ``strides`` / ``dilations``: each stage's first
    stride and its 3x3 convs' dilation, as MMDetection's (R-FCN's dilated res5 at stride 16:
    ``(1, 2, 2, 1)`` and ``(1, 1, 1, 2)``); ``weights``: a local torchvision-format state dict.
    ``conv``: ``ws`` standardizes the weights of the stem, block and shortcut convs (Weight
    Standardization, MMDetection's ``conv_cfg=dict(type='ConvWS')``, with ``norm: gn``); not DCN's.
    """

    type: Literal["resnet"] = "resnet"
    depth: Literal[18, 34, 50, 101] = 50
    groups: PosInt = 1
    width_per_group: PosInt = 64
    style: Literal["pytorch", "caffe"] = "pytorch"
    norm: Literal["frozen_bn", "bn", "syncbn", "gn"] = "frozen_bn"
    gn_groups: PosInt = 32
    conv: Literal["conv", "ws"] = "conv"
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


@dataclass(frozen=True)
class HRNetStageConfig(Section):
    """One stage of an HRNet (MMDetection's ``extra['stageN']``): ``num_modules`` high-resolution
    modules of ``num_branches`` parallel branches, branch ``i`` with ``num_blocks[i]`` residual
    blocks (``basic`` or ``bottleneck``) of width ``num_channels[i]``. Defaults are HRNetV2p-W32's
    stage 2."""

    num_modules: PosInt = 1
    num_branches: PosInt = 2
    block: Literal["basic", "bottleneck"] = "basic"
    num_blocks: tuple[PosInt, ...] = (4, 4)
    num_channels: tuple[PosInt, ...] = (32, 64)

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("num_blocks", "num_channels"):
            require(len(getattr(self, key)) == self.num_branches, key,
                    f"needs one entry per branch (num_branches {self.num_branches}), got {list(getattr(self, key))}")


@dataclass(frozen=True)
class HRNetConfig(Section):
    """HRNetV2p (Sun et al. 2019; MMDetection's ``HRNet``): a stem of two 3x3 stride-2 convs,
    ``stage1`` (one run of blocks at stride 4), then stages 2-4 of parallel branches at strides 4,
    8, 16, 32 with repeated multi-scale fusion; the outputs are stage 4's branches. The stages are
    MMDetection's ``extra`` (defaults: HRNetV2p-W32; W18 narrows stages 2-4 to 18 / 36 / 72 / 144
    channels); ``norm`` and ``norm_eval`` as a ResNet's (MMDetection: trained BN, statistics
    frozen); ``weights``: a local state dict of the module (an ImageNet HRNet's, its classifier
    ignored) or a detector checkpoint's ``backbone.*``.
    """

    type: Literal["hrnet"] = "hrnet"
    stage1: HRNetStageConfig = HRNetStageConfig(num_modules=1, num_branches=1, block="bottleneck", num_blocks=(4,),
                                                num_channels=(64,))
    stage2: HRNetStageConfig = HRNetStageConfig()
    stage3: HRNetStageConfig = HRNetStageConfig(num_modules=4, num_branches=3, num_blocks=(4, 4, 4),
                                                num_channels=(32, 64, 128))
    stage4: HRNetStageConfig = HRNetStageConfig(num_modules=3, num_branches=4, num_blocks=(4, 4, 4, 4),
                                                num_channels=(32, 64, 128, 256))
    norm: Literal["frozen_bn", "bn", "syncbn", "gn"] = "bn"
    gn_groups: PosInt = 32
    norm_eval: bool = True
    weights: Optional[str] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        require((self.stage1.num_modules, self.stage1.num_branches) == (1, 1), "stage1",
                f"is one run of blocks: num_modules 1 and num_branches 1, got {self.stage1.num_modules} "
                f"and {self.stage1.num_branches}")
        stages = (self.stage1, self.stage2, self.stage3, self.stage4)
        for k in range(1, 4):
            require(stages[k].num_branches >= stages[k - 1].num_branches, f"stage{k + 1}.num_branches",
                    f"a stage keeps the branches before it: at least {stages[k - 1].num_branches}, "
                    f"got {stages[k].num_branches}")


BackboneConfig = Union[ResNetConfig, SSDVGGConfig, RootResNetConfig, HRNetConfig]
