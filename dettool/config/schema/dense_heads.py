"""Config of dense heads: RetinaNet, FCOS, SSD and the RPN."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal, Optional, Union

from dettool.config.schema.common import Fraction, NonNegFloat, NonNegInt, PosFloat, PosInt, Range, Section, require
from dettool.config.schema.losses import (
    BCELossConfig,
    BoundedIoULossConfig,
    BoxLossConfig,
    ClsLossConfig,
    FocalLossConfig,
    IoULossConfig,
    L1LossConfig,
    SmoothL1LossConfig,
)
from dettool.config.schema.task_modules import (
    AnchorConfig,
    ApproxMaxIoUAssignerConfig,
    AssignerConfig,
    CenterRegionAssignerConfig,
    CoderConfig,
    DeltaCoderConfig,
    DenseSamplerConfig,
    MaxIoUAssignerConfig,
    PseudoSamplerConfig,
    RandomSamplerConfig,
    SSDAnchorConfig,
    TBLRCoderConfig,
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


def _ssd_coder() -> DeltaCoderConfig:
    return DeltaCoderConfig(target_stds=(0.1, 0.1, 0.2, 0.2))


def _ssd_assigner() -> MaxIoUAssignerConfig:
    return MaxIoUAssignerConfig(pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.0, gt_max_assign_all=False)


@dataclass(frozen=True)
class SSDHeadConfig(Section):
    """SSD head (MMDetection's ``SSDHead`` and its SSD300 ``train_cfg``): a 3x3 classification
    conv (C + 1 logits per anchor, softmax, background last) and a 3x3 box conv per level; every
    anchor is assigned, and the classification loss keeps the positives and the ``neg_pos_ratio``
    x as many negatives of highest loss (hard negative mining). ``loss_bbox``: smooth L1 with
    MMDetection's ``smoothl1_beta`` (1.0) on the deltas. The level channels are the neck's.
    ``predictor_norm``: ``bn`` puts a BatchNorm after each predictor conv (which then has no
    bias), ScratchDet's head for training from scratch; ``none`` is SSD's."""

    type: Literal["ssd"] = "ssd"
    anchor: SSDAnchorConfig = field(default_factory=SSDAnchorConfig)
    bbox_coder: CoderConfig = field(default_factory=_ssd_coder)
    assigner: AssignerConfig = field(default_factory=_ssd_assigner)
    sampler: PseudoSamplerConfig = field(default_factory=PseudoSamplerConfig)
    allowed_border: AllowedBorder = -1
    neg_pos_ratio: PosInt = 3
    predictor_norm: Literal["none", "bn"] = "none"
    loss_bbox: Union[SmoothL1LossConfig, L1LossConfig] = field(default_factory=lambda: SmoothL1LossConfig(beta=1.0))


def _fsaf_anchor() -> AnchorConfig:
    return AnchorConfig(ratios=(1.0,), octave_base_scale=1.0, scales_per_octave=1)


@dataclass(frozen=True)
class FSAFHeadConfig(Section):
    """FSAF head (MMDetection's ``FSAFHead``): RetinaNet's towers, one square "anchor" of the
    stride per location (only the reference of the TBLR distances), centre-region assignment, focal
    loss and a box loss on decoded boxes, each gt trained on the level of its lowest loss.
    ``reg_bias``: initial bias of the distance outputs (MMDetection's ``retina_reg`` init, 0.25)."""

    type: Literal["fsaf"] = "fsaf"
    feat_channels: PosInt = 256
    stacked_convs: NonNegInt = 4
    norm: Literal["none", "gn", "bn"] = "none"
    anchor: AnchorConfig = field(default_factory=_fsaf_anchor)
    bbox_coder: TBLRCoderConfig = field(default_factory=TBLRCoderConfig)
    assigner: CenterRegionAssignerConfig = field(default_factory=CenterRegionAssignerConfig)
    sampler: PseudoSamplerConfig = field(default_factory=PseudoSamplerConfig)
    allowed_border: AllowedBorder = -1
    reg_bias: float = 0.25
    loss_cls: FocalLossConfig = field(default_factory=FocalLossConfig)
    loss_bbox: BoxLossConfig = field(default_factory=IoULossConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.loss_bbox.type in ("iou", "giou"), "loss_bbox",
                f"{self.loss_bbox.type!r}: FSAF regresses decoded boxes and needs a loss on them (iou, giou)")


def _ga_square_anchor() -> AnchorConfig:
    return AnchorConfig(ratios=(1.0,), octave_base_scale=4.0, scales_per_octave=1)


def _check_guided_anchors(cfg) -> None:
    """What a guided-anchor head's anchors and location regions must satisfy."""
    sq, ap = cfg.square_anchor, cfg.approx_anchor
    require(len(sq.ratios) * sq.scales_per_octave == 1 and sq.sizes is None, "square_anchor",
            "needs one anchor per location (one ratio, scales_per_octave 1, no sizes)")
    require(sq.strides == ap.strides, "square_anchor.strides", f"{sq.strides} differ from approx_anchor's {ap.strides}")
    require(sq.octave_base_scale == ap.octave_base_scale and ap.sizes is None, "square_anchor.octave_base_scale",
            f"{sq.octave_base_scale} differs from approx_anchor's {ap.octave_base_scale}")
    require(cfg.center_ratio <= cfg.ignore_ratio, "center_ratio",
            f"{cfg.center_ratio} is above ignore_ratio {cfg.ignore_ratio}")


@dataclass(frozen=True)
class GARetinaHeadConfig(Section):
    """Guided Anchoring RetinaNet head (MMDetection's ``GARetinaHead``; defaults: its
    ga-retinanet_r50_fpn_1x_coco). ``square_anchor``: one anchor per location, the one the shape
    branch scales (``octave_base_scale`` and ``strides`` those of ``approx_anchor``);
    ``approx_anchor``: the anchors a location's shape target is assigned through (``ga_assigner``,
    ``ga_sampler``, ``loss_shape``); ``center_ratio`` / ``ignore_ratio``: sides of the location
    targets' positive and ignore regions, fractions of the gt's (``loss_loc``);
    ``loc_filter_thr``: test-time locations of lower centre probability give no detections;
    ``assigner``, ``sampler``, ``loss_cls``, ``loss_bbox``: on the guided anchors."""

    type: Literal["ga_retina"] = "ga_retina"
    feat_channels: PosInt = 256
    stacked_convs: NonNegInt = 4
    norm: Literal["none", "gn", "bn"] = "none"
    deform_groups: PosInt = 4
    approx_anchor: AnchorConfig = field(default_factory=AnchorConfig)
    square_anchor: AnchorConfig = field(default_factory=_ga_square_anchor)
    anchor_coder: DeltaCoderConfig = field(default_factory=DeltaCoderConfig)
    bbox_coder: DeltaCoderConfig = field(default_factory=DeltaCoderConfig)
    loc_filter_thr: Fraction = 0.01
    center_ratio: Fraction = 0.2
    ignore_ratio: Fraction = 0.5
    ga_assigner: ApproxMaxIoUAssignerConfig = field(default_factory=ApproxMaxIoUAssignerConfig)
    ga_sampler: DenseSamplerConfig = field(default_factory=lambda: RandomSamplerConfig(num=256, pos_fraction=0.5))
    assigner: MaxIoUAssignerConfig = field(default_factory=lambda: MaxIoUAssignerConfig(neg_iou_thr=0.5))
    sampler: DenseSamplerConfig = field(default_factory=PseudoSamplerConfig)
    allowed_border: AllowedBorder = -1
    reg_decoded_bbox: bool = False
    loss_loc: FocalLossConfig = field(default_factory=FocalLossConfig)
    loss_shape: BoundedIoULossConfig = field(default_factory=BoundedIoULossConfig)
    loss_cls: FocalLossConfig = field(default_factory=FocalLossConfig)
    loss_bbox: BoxLossConfig = field(default_factory=lambda: SmoothL1LossConfig(beta=0.04))

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_guided_anchors(self)


DenseHeadConfig = Union[RetinaHeadConfig, FCOSHeadConfig, SSDHeadConfig, FSAFHeadConfig, GARetinaHeadConfig]


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


def _ga_rpn_anchor(ratios: tuple[float, ...], scales_per_octave: int) -> AnchorConfig:
    return AnchorConfig(strides=(4, 8, 16, 32, 64), ratios=ratios, octave_base_scale=8.0,
                        scales_per_octave=scales_per_octave)


def _rpn_assigner(kind=MaxIoUAssignerConfig):
    return lambda: kind(pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3)


@dataclass(frozen=True)
class GARPNHeadConfig(Section):
    """Guided Anchoring RPN (MMDetection's ``GARPNHead``; defaults: its ga-rpn_r50_fpn_1x_coco and
    ga-faster-rcnn_r50_fpn_1x_coco): ``rpn_conv``, then the location and shape branches, the
    feature adaption (``deform_groups``) and 1x1 objectness and box convs on the guided anchors.
    ``approx_anchor`` / ``square_anchor`` / ``anchor_coder`` / ``ga_assigner`` / ``ga_sampler`` /
    ``center_ratio`` / ``ignore_ratio`` / ``loc_filter_thr`` as :class:`GARetinaHeadConfig`;
    ``assigner`` / ``sampler`` / ``loss_cls`` / ``loss_bbox`` on the guided anchors as an RPN's;
    ``train_proposals`` / ``test_proposals`` as :class:`RPNHeadConfig` (MMDetection: 300 proposals
    per image; its ``nms_post`` of 1000 per level changes nothing beside that)."""

    type: Literal["ga_rpn"] = "ga_rpn"
    feat_channels: PosInt = 256
    deform_groups: PosInt = 4
    approx_anchor: AnchorConfig = field(default_factory=lambda: _ga_rpn_anchor((0.5, 1.0, 2.0), 3))
    square_anchor: AnchorConfig = field(default_factory=lambda: _ga_rpn_anchor((1.0,), 1))
    anchor_coder: DeltaCoderConfig = field(default_factory=lambda: DeltaCoderConfig(
        target_stds=(0.07, 0.07, 0.14, 0.14)))
    bbox_coder: DeltaCoderConfig = field(default_factory=lambda: DeltaCoderConfig(
        target_stds=(0.07, 0.07, 0.11, 0.11)))
    loc_filter_thr: Fraction = 0.01
    center_ratio: Fraction = 0.2
    ignore_ratio: Fraction = 0.5
    ga_assigner: ApproxMaxIoUAssignerConfig = field(default_factory=_rpn_assigner(ApproxMaxIoUAssignerConfig))
    ga_sampler: DenseSamplerConfig = field(default_factory=lambda: RandomSamplerConfig(num=256, pos_fraction=0.5))
    assigner: MaxIoUAssignerConfig = field(default_factory=_rpn_assigner())
    sampler: DenseSamplerConfig = field(default_factory=lambda: RandomSamplerConfig(num=256, pos_fraction=0.5))
    allowed_border: AllowedBorder = -1
    reg_decoded_bbox: bool = False
    loss_loc: FocalLossConfig = field(default_factory=FocalLossConfig)
    loss_shape: BoundedIoULossConfig = field(default_factory=BoundedIoULossConfig)
    loss_cls: BCELossConfig = field(default_factory=BCELossConfig)
    loss_bbox: BoxLossConfig = field(default_factory=lambda: SmoothL1LossConfig(beta=1.0))
    train_proposals: ProposalConfig = field(default_factory=lambda: ProposalConfig(nms_pre=2000, max_per_img=300))
    test_proposals: ProposalConfig = field(default_factory=lambda: ProposalConfig(max_per_img=300))

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_guided_anchors(self)


ProposalHeadConfig = Union[RPNHeadConfig, GARPNHeadConfig]
