"""Config of dense heads: RetinaNet, FCOS and the RPN."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal, Optional, Union

from dettool.config.schema.common import Fraction, NonNegFloat, NonNegInt, PosFloat, PosInt, Range, Section, require
from dettool.config.schema.losses import (
    BCELossConfig,
    BoxLossConfig,
    ClsLossConfig,
    FocalLossConfig,
    IoULossConfig,
    L1LossConfig,
    SmoothL1LossConfig,
)
from dettool.config.schema.task_modules import (
    AnchorConfig,
    AssignerConfig,
    CoderConfig,
    DeltaCoderConfig,
    DenseSamplerConfig,
    MaxIoUAssignerConfig,
    PseudoSamplerConfig,
    RandomSamplerConfig,
)

AllowedBorder = Annotated[int, Range(min=-1)]  # -1 = anchors may cross the border by any amount


@dataclass(frozen=True)
class RetinaHeadConfig(Section):
    """RetinaNet head: shared conv towers, sigmoid classification per anchor."""

    type: Literal["retina"] = "retina"
    feat_channels: PosInt = 256
    stacked_convs: NonNegInt = 4
    norm: Literal["none", "gn", "bn"] = "none"
    anchor: AnchorConfig = field(default_factory=AnchorConfig)
    bbox_coder: CoderConfig = field(default_factory=DeltaCoderConfig)
    assigner: AssignerConfig = field(default_factory=MaxIoUAssignerConfig)
    sampler: DenseSamplerConfig = field(default_factory=PseudoSamplerConfig)
    allowed_border: AllowedBorder = -1
    reg_decoded_bbox: bool = False
    loss_cls: ClsLossConfig = field(default_factory=FocalLossConfig)
    loss_bbox: BoxLossConfig = field(default_factory=L1LossConfig)


@dataclass(frozen=True)
class FCOSHeadConfig(Section):
    """FCOS head: per-point classification, (l, t, r, b) regression and centerness.

    ``conv_bias``: the tower convs have a bias (MMDetection's ``conv_bias``; null: only without a
    norm, its 'auto'; its FCOS improvements configs set true). ``point_offset``: a location's
    centre in units of the stride (MMDetection 0.5, torchvision 0); ``stride_from_input``: see
    ``AnchorConfig``. ``test_score``: ``cls`` (MMDetection: ``score_thr`` and ``nms_pre`` rank the
    class score, NMS ranks it times centerness) or ``sqrt_cls_centerness`` (torchvision: all three
    rank ``sqrt(score x centerness)``, which is also the detection's score).
    """

    type: Literal["fcos"] = "fcos"
    feat_channels: PosInt = 256
    stacked_convs: NonNegInt = 4
    norm: Literal["none", "gn", "bn"] = "gn"
    conv_bias: Optional[bool] = None
    strides: tuple[PosInt, ...] = (8, 16, 32, 64, 128)
    regress_ranges: tuple[tuple[float, float], ...] = (
        (-1.0, 64.0), (64.0, 128.0), (128.0, 256.0), (256.0, 512.0), (512.0, 1e8))
    center_sampling: bool = False
    center_sample_radius: PosFloat = 1.5
    norm_on_bbox: bool = False
    centerness_on_reg: bool = False
    point_offset: Fraction = 0.5
    stride_from_input: bool = False
    test_score: Literal["cls", "sqrt_cls_centerness"] = "cls"
    loss_cls: ClsLossConfig = field(default_factory=FocalLossConfig)
    loss_bbox: BoxLossConfig = field(default_factory=IoULossConfig)
    loss_centerness: BCELossConfig = field(default_factory=BCELossConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(len(self.regress_ranges) == len(self.strides), "regress_ranges",
                f"{len(self.regress_ranges)} ranges for {len(self.strides)} strides (one per level)")
        for i, (lo, hi) in enumerate(self.regress_ranges):
            require(lo < hi, f"regress_ranges[{i}]", f"lower bound {lo} is not below upper bound {hi}")


DenseHeadConfig = Union[RetinaHeadConfig, FCOSHeadConfig]


@dataclass(frozen=True)
class ProposalConfig(Section):
    """RPN proposal generation: per-level top-k (<= 0 keeps all), NMS, proposals kept per image."""

    nms_pre: int = 1000
    nms_iou_thr: Fraction = 0.7
    max_per_img: PosInt = 1000
    min_bbox_size: NonNegFloat = 0.0


def _rpn_anchor() -> AnchorConfig:
    return AnchorConfig(strides=(4, 8, 16, 32, 64), ratios=(0.5, 1.0, 2.0), octave_base_scale=8.0, scales_per_octave=1)


@dataclass(frozen=True)
class RPNHeadConfig(Section):
    """Region proposal network head (MMDetection v2 defaults; smooth L1 with beta 1/9);
    ``num_convs`` 3x3 convs with ReLU before the outputs (torchvision's v2 models: 2)."""

    type: Literal["rpn"] = "rpn"
    feat_channels: PosInt = 256
    num_convs: PosInt = 1
    anchor: AnchorConfig = field(default_factory=_rpn_anchor)
    bbox_coder: CoderConfig = field(default_factory=DeltaCoderConfig)
    assigner: AssignerConfig = field(default_factory=lambda: MaxIoUAssignerConfig(
        pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3))
    sampler: RandomSamplerConfig = field(default_factory=lambda: RandomSamplerConfig(num=256, pos_fraction=0.5))
    allowed_border: AllowedBorder = -1
    reg_decoded_bbox: bool = False
    loss_cls: BCELossConfig = field(default_factory=BCELossConfig)
    loss_bbox: BoxLossConfig = field(default_factory=lambda: SmoothL1LossConfig(beta=1.0 / 9.0))
    train_proposals: ProposalConfig = field(default_factory=lambda: ProposalConfig(nms_pre=2000))
    test_proposals: ProposalConfig = field(default_factory=ProposalConfig)
