"""Config of RoI heads (Fast / Faster / Mask R-CNN, Double-Head, Cascade, R-FCN, Mask Scoring, Grid, Hybrid Task
Cascade) and their parts."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Union

from dettool.config.schema.common import NonNegFloat, NonNegInt, PosFloat, PosInt, Section, require
from dettool.config.schema.losses import BoxLossConfig, CrossEntropyLossConfig, SmoothL1LossConfig
from dettool.config.schema.task_modules import (
    AssignerConfig,
    MaxIoUAssignerConfig,
    OHEMSamplerConfig,
    RandomSamplerConfig,
    RoISamplerConfig,
)

Stds = tuple[PosFloat, PosFloat, PosFloat, PosFloat]


@dataclass(frozen=True)
class RoIExtractorConfig(Section):
    """Multi-level RoIAlign (FPN level mapping with ``finest_scale``); ``aligned: false`` samples
    without the half-pixel shift (torchvision's ``MultiScaleRoIAlign``)."""

    output_size: PosInt = 7
    strides: tuple[PosInt, ...] = (4, 8, 16, 32)
    sampling_ratio: NonNegInt = 0
    finest_scale: PosInt = 56
    aligned: bool = True


@dataclass(frozen=True)
class ConvFCBBoxHeadConfig(Section):
    """RoI box head: shared2fc (0 convs, 2 fcs) or 4conv1fc (4 convs with GN, 1 fc; with BN in
    torchvision's v2 models); ``with_reg: false``: classification only (Grid R-CNN's); ``conv: ws``
    standardizes the shared convs' weights (Weight Standardization, MMDetection's
    ``conv_cfg=dict(type='ConvWS')``)."""

    type: Literal["conv_fc"] = "conv_fc"
    num_shared_convs: NonNegInt = 0
    num_shared_fcs: NonNegInt = 2
    conv_out_channels: PosInt = 256
    fc_out_channels: PosInt = 1024
    norm: Literal["none", "gn", "bn"] = "none"
    conv: Literal["conv", "ws"] = "conv"
    reg_class_agnostic: bool = False
    with_reg: bool = True
    target_stds: Stds = (0.1, 0.1, 0.2, 0.2)
    loss_cls: CrossEntropyLossConfig = field(default_factory=CrossEntropyLossConfig)
    loss_bbox: BoxLossConfig = field(default_factory=SmoothL1LossConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.conv == "conv" or self.num_shared_convs > 0, "conv",
                "ws standardizes the shared convs' weights: it needs num_shared_convs > 0")


@dataclass(frozen=True)
class DoubleConvFCBBoxHeadConfig(Section):
    """Double-Head R-CNN's box head (Wu et al. 2019; MMDetection's ``DoubleConvFCBBoxHead``):
    ``num_fcs`` FCs classify the RoI features, a residual block and ``num_convs`` bottlenecks
    regress from the features of the RoI enlarged by the RoI head's ``reg_roi_scale_factor``."""

    type: Literal["double_conv_fc"] = "double_conv_fc"
    num_convs: PosInt = 4
    num_fcs: PosInt = 2
    conv_out_channels: PosInt = 1024
    fc_out_channels: PosInt = 1024
    norm: Literal["bn", "gn"] = "bn"
    reg_class_agnostic: bool = False
    target_stds: Stds = (0.1, 0.1, 0.2, 0.2)
    loss_cls: CrossEntropyLossConfig = field(default_factory=lambda: CrossEntropyLossConfig(weight=2.0))
    loss_bbox: BoxLossConfig = field(default_factory=lambda: SmoothL1LossConfig(beta=1.0, weight=2.0))

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.conv_out_channels % 4 == 0, "conv_out_channels",
                f"must be a multiple of 4 (bottleneck width = channels / 4), got {self.conv_out_channels}")


BBoxHeadConfig = Union[ConvFCBBoxHeadConfig, DoubleConvFCBBoxHeadConfig]


@dataclass(frozen=True)
class MaskHeadConfig(Section):
    """FCN mask head: ``num_convs`` 3x3 convs (``norm: gn``: each followed by GroupNorm, 32
    groups; ``bn``: BatchNorm), a 2x deconv, per-class 28x28 masks."""

    num_convs: NonNegInt = 4
    conv_out_channels: PosInt = 256
    norm: Literal["none", "gn", "bn"] = "none"
    class_agnostic: bool = False
    loss_weight: NonNegFloat = 1.0
    roi_extractor: RoIExtractorConfig = field(default_factory=lambda: RoIExtractorConfig(output_size=14))


def _rcnn_assigner() -> MaxIoUAssignerConfig:
    return MaxIoUAssignerConfig(pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5)


def _rcnn_sampler() -> RandomSamplerConfig:
    return RandomSamplerConfig(num=512, pos_fraction=0.25, add_gt_as_proposals=True)


@dataclass(frozen=True)
class StandardRoIHeadConfig(Section):
    """One RoI stage (Fast / Faster / Mask R-CNN)."""

    type: Literal["standard"] = "standard"
    roi_extractor: RoIExtractorConfig = field(default_factory=RoIExtractorConfig)
    bbox_head: ConvFCBBoxHeadConfig = field(default_factory=ConvFCBBoxHeadConfig)
    assigner: AssignerConfig = field(default_factory=_rcnn_assigner)
    sampler: RoISamplerConfig = field(default_factory=_rcnn_sampler)
    mask_head: Optional[MaskHeadConfig] = None


@dataclass(frozen=True)
class DoubleHeadRoIHeadConfig(StandardRoIHeadConfig):
    """Double-Head R-CNN: the standard RoI head with a double box head whose regression branch
    pools RoIs enlarged ``reg_roi_scale_factor`` times around their centres (MMDetection: 1.3)."""

    type: Literal["double_head"] = "double_head"
    bbox_head: DoubleConvFCBBoxHeadConfig = field(default_factory=DoubleConvFCBBoxHeadConfig)
    reg_roi_scale_factor: PosFloat = 1.3


@dataclass(frozen=True)
class MaskIoUHeadConfig(Section):
    """Mask Scoring R-CNN's MaskIoU head (MMDetection's ``MaskIoUHead``): ``num_convs`` 3x3 convs (the
    last with stride 2) on the mask RoI features and the pooled mask, ``num_fcs`` FCs, one IoU per
    class; MSE weighted ``loss_weight`` on the positives' class; ``mask_thr_binary``: the predicted
    mask of an IoU target is its logits above this (MMDetection's ``train_cfg.rcnn.mask_thr_binary``)."""

    num_convs: NonNegInt = 4
    num_fcs: NonNegInt = 2
    conv_out_channels: PosInt = 256
    fc_out_channels: PosInt = 1024
    loss_weight: NonNegFloat = 0.5
    mask_thr_binary: float = 0.5


@dataclass(frozen=True)
class MaskScoringRoIHeadConfig(StandardRoIHeadConfig):
    """Mask Scoring R-CNN: the standard RoI head with its mask head (required) and a MaskIoU head;
    a detection's score is its classification score times its predicted mask IoU."""

    type: Literal["mask_scoring"] = "mask_scoring"
    mask_head: Optional[MaskHeadConfig] = field(default_factory=MaskHeadConfig)
    mask_iou_head: MaskIoUHeadConfig = field(default_factory=MaskIoUHeadConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.mask_head is not None, "mask_head", "Mask Scoring R-CNN needs a mask head")


@dataclass(frozen=True)
class GridHeadConfig(Section):
    """Grid R-CNN's grid head (MMDetection's ``GridHead``): ``num_convs`` 3x3 convs with GroupNorm
    of ``num_groups`` groups on ``point_feat_channels`` channels per grid point, feature fusion
    between neighbouring points, heatmaps twice the RoI features' side; binary cross-entropy
    weighted ``loss_weight`` on the fused and the unfused heatmaps."""

    grid_points: PosInt = 9
    num_convs: PosInt = 8
    point_feat_channels: PosInt = 64
    num_groups: PosInt = 36
    loss_weight: NonNegFloat = 15.0

    def __post_init__(self) -> None:
        super().__post_init__()
        side = int(round(self.grid_points ** 0.5))
        require(side * side == self.grid_points and side >= 2, "grid_points",
                f"must be a square of at least 4 (9 in Grid R-CNN), got {self.grid_points}")
        channels = self.point_feat_channels * self.grid_points
        require(channels % self.num_groups == 0, "num_groups",
                f"must divide point_feat_channels x grid_points = {channels}, got {self.num_groups}")


@dataclass(frozen=True)
class GridRoIHeadConfig(StandardRoIHeadConfig):
    """Grid R-CNN: the standard RoI head with a box head that only classifies, and a grid head on
    RoIs pooled by ``grid_roi_extractor`` that locates each detection's box. Training:
    ``pos_radius`` of the target points (MMDetection's ``train_cfg.rcnn.pos_radius``), at most
    ``max_num_grid`` positives per batch (``max_num_grid``), jittered by ``jitter_amplitude`` of
    their size (MMDetection's fixed 0.15)."""

    type: Literal["grid"] = "grid"
    bbox_head: ConvFCBBoxHeadConfig = field(default_factory=lambda: ConvFCBBoxHeadConfig(with_reg=False))
    grid_roi_extractor: RoIExtractorConfig = field(default_factory=lambda: RoIExtractorConfig(output_size=14))
    grid_head: GridHeadConfig = field(default_factory=GridHeadConfig)
    pos_radius: PosInt = 1
    max_num_grid: PosInt = 192
    jitter_amplitude: NonNegFloat = 0.15

    def __post_init__(self) -> None:
        super().__post_init__()
        require(not self.bbox_head.with_reg, "bbox_head.with_reg",
                "Grid R-CNN's box head only classifies: the grid head gives the boxes (set it false)")


@dataclass(frozen=True)
class CascadeStageConfig(Section):
    """One cascade stage: its box head, IoU thresholds, sampler and loss weight."""

    bbox_head: ConvFCBBoxHeadConfig = field(default_factory=ConvFCBBoxHeadConfig)
    assigner: AssignerConfig = field(default_factory=_rcnn_assigner)
    sampler: RandomSamplerConfig = field(default_factory=_rcnn_sampler)
    loss_weight: NonNegFloat = 1.0


def _cascade_stages() -> tuple[CascadeStageConfig, ...]:
    return tuple(CascadeStageConfig(
        bbox_head=ConvFCBBoxHeadConfig(target_stds=stds, reg_class_agnostic=True),
        assigner=MaxIoUAssignerConfig(pos_iou_thr=t, neg_iou_thr=t, min_pos_iou=t), loss_weight=w)
        for t, w, stds in ((0.5, 1.0, (0.1, 0.1, 0.2, 0.2)), (0.6, 0.5, (0.05, 0.05, 0.1, 0.1)),
                           (0.7, 0.25, (0.033, 0.033, 0.067, 0.067))))


@dataclass(frozen=True)
class CascadeRoIHeadConfig(Section):
    """Cascade R-CNN: stages with rising IoU thresholds (0.5 / 0.6 / 0.7), weights 1 / 0.5 / 0.25.

    A ``stages`` list as long as the default one overrides it stage by stage (a key left out
    keeps that stage's default); a list of another length replaces it.
    """

    type: Literal["cascade"] = "cascade"
    roi_extractor: RoIExtractorConfig = field(default_factory=RoIExtractorConfig)
    stages: tuple[CascadeStageConfig, ...] = field(default_factory=_cascade_stages)
    mask_head: Optional[MaskHeadConfig] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        require(len(self.stages) > 0, "stages", "a cascade needs at least one stage")


@dataclass(frozen=True)
class SemanticHeadConfig(Section):
    """Hybrid Task Cascade's semantic branch (MMDetection's ``FusedSemanticHead``): the first
    ``num_ins`` FPN levels fused at ``fusion_level`` by 1x1 convs, ``num_convs`` 3x3 convs of
    ``conv_out_channels``, ``num_classes`` logits (COCO-stuff: 183) under a cross-entropy weighted
    ``loss_weight`` (label 255 ignored), and an embedding added to the RoI features."""

    num_ins: PosInt = 5
    fusion_level: NonNegInt = 1
    num_convs: NonNegInt = 4
    conv_out_channels: PosInt = 256
    num_classes: PosInt = 183
    loss_weight: NonNegFloat = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.fusion_level < self.num_ins, "fusion_level",
                f"must be one of the {self.num_ins} levels read (num_ins), got {self.fusion_level}")


@dataclass(frozen=True)
class HTCRoIHeadConfig(CascadeRoIHeadConfig):
    """Hybrid Task Cascade (Chen et al. 2019): the cascade with its mask head (required) in every
    stage, ``interleaved`` box and mask branches, the ``mask_info_flow`` between the stages' mask
    heads, and an optional ``semantic_head`` whose embedding, pooled by ``semantic_roi_extractor``
    (one level: the fusion level's stride), joins the box and mask RoI features (``null``:
    MMDetection's htc-without-semantic)."""

    type: Literal["htc"] = "htc"
    mask_head: Optional[MaskHeadConfig] = field(default_factory=MaskHeadConfig)
    interleaved: bool = True
    mask_info_flow: bool = True
    semantic_head: Optional[SemanticHeadConfig] = None
    semantic_roi_extractor: RoIExtractorConfig = field(
        default_factory=lambda: RoIExtractorConfig(output_size=14, strides=(8,)))

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.mask_head is not None, "mask_head", "Hybrid Task Cascade needs a mask head")
        if self.semantic_head is not None:
            require(len(self.semantic_roi_extractor.strides) == 1, "semantic_roi_extractor.strides",
                    f"the semantic embedding is one level, got {list(self.semantic_roi_extractor.strides)}")
            level = self.semantic_head.fusion_level
            fused = self.roi_extractor.strides[level] if level < len(self.roi_extractor.strides) else None
            require(fused == self.semantic_roi_extractor.strides[0], "semantic_roi_extractor.strides",
                    f"must be the fusion level's stride (roi_extractor.strides[{level}] = {fused}), "
                    f"got {self.semantic_roi_extractor.strides[0]}")


def _rfcn_sampler() -> OHEMSamplerConfig:
    return OHEMSamplerConfig(num=128, pos_fraction=0.25, add_gt_as_proposals=True)


@dataclass(frozen=True)
class RFCNRoIHeadConfig(Section):
    """R-FCN's RoI head (Dai et al. 2016; no MMDetection config exists, defaults the paper's): on
    the last level the RoI head reads (res5, dilated to stride ``stride``), a 1x1 conv to
    ``feat_channels`` (0: none) with ReLU, then ``output_size`` x ``output_size`` (k) position-sensitive
    score maps per class and per box delta; each RoI averages its bins' position-sensitive RoIAlign
    (``DettoolPSRoIAlign``). Trained with online hard example mining of 128 RoIs per image, as the
    paper (which ranks positives and negatives together; dettool's OHEM keeps up to
    ``pos_fraction`` positives, as MMDetection's), class-agnostic regression."""

    type: Literal["rfcn"] = "rfcn"
    feat_channels: NonNegInt = 1024
    output_size: PosInt = 7
    stride: PosInt = 16
    sampling_ratio: NonNegInt = 0
    reg_class_agnostic: bool = True
    target_stds: Stds = (0.1, 0.1, 0.2, 0.2)
    loss_cls: CrossEntropyLossConfig = field(default_factory=CrossEntropyLossConfig)
    loss_bbox: BoxLossConfig = field(default_factory=lambda: SmoothL1LossConfig(beta=1.0))
    assigner: AssignerConfig = field(default_factory=lambda: MaxIoUAssignerConfig(
        pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5))
    sampler: RoISamplerConfig = field(default_factory=_rfcn_sampler)


RoIHeadConfig = Union[StandardRoIHeadConfig, DoubleHeadRoIHeadConfig, CascadeRoIHeadConfig, RFCNRoIHeadConfig,
                      MaskScoringRoIHeadConfig, GridRoIHeadConfig, HTCRoIHeadConfig]
