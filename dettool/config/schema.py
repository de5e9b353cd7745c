"""The typed config tree. Every YAML key maps to a field here; anything else is rejected.

Classes are frozen dataclasses with defaults following MMDetection's COCO settings; the fast
synthetic configs override them. Unions of dataclasses are told apart by their ``type`` field.
Models never see these objects: ``dettool.trainer.builder`` maps them to typed constructors.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

# ----------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class SplitConfig:
    """One dataset split in COCO format; ``proposals_file`` feeds Fast R-CNN."""

    ann_file: str
    img_dir: str
    proposals_file: Optional[str] = None


@dataclass(frozen=True)
class SynthConfig:
    """Synthetic dataset generated into the split folders on first use (``dettool data synth``)."""

    num_train: int = 1000
    num_val: int = 200
    seed: int = 0


@dataclass(frozen=True)
class DataConfig:
    """Data sources and the train / test pipelines.

    ``train_scale`` uses the MMDetection paper's notation: ``1333x800`` (single scale, keep ratio),
    ``1333x[640:800:32]`` (value mode: short side drawn from {640, 672, ..., 800}) or
    ``1333x[640:800]`` (range mode: short side drawn uniformly from the interval).
    """

    train: SplitConfig
    val: SplitConfig
    synth: Optional[SynthConfig] = None
    train_scale: str = "1333x800"
    test_scale: str = "1333x800"
    flip_prob: float = 0.5
    mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    size_divisor: int = 32
    num_workers: int = 2
    filter_empty_gt: bool = True


# ----------------------------------------------------------------------------------- model


@dataclass(frozen=True)
class ResNetConfig:
    """ResNet / ResNeXt backbone (torchvision blocks). ``depth`` in {18, 34, 50, 101}."""

    type: Literal["resnet"] = "resnet"
    depth: int = 50
    groups: int = 1
    width_per_group: int = 64
    norm: Literal["frozen_bn", "bn", "syncbn", "gn"] = "frozen_bn"
    gn_groups: int = 32
    norm_eval: bool = True
    frozen_stages: int = 1
    out_indices: tuple[int, ...] = (1, 2, 3)
    dcn_stages: tuple[bool, bool, bool, bool] = (False, False, False, False)
    dcn_modulated: bool = True
    weights: Optional[str] = None


@dataclass(frozen=True)
class FPNConfig:
    """Feature pyramid neck. ``add_extra_convs`` builds P6/P7 from C5 (on_input) or P5 (on_output)."""

    type: Literal["fpn"] = "fpn"
    out_channels: int = 256
    num_outs: int = 5
    add_extra_convs: Literal["none", "on_input", "on_output"] = "on_input"
    relu_before_extra_convs: bool = False
    norm: Literal["none", "bn", "gn"] = "none"


@dataclass(frozen=True)
class AnchorConfig:
    """Anchor generator: per level ``octave_base_scale * 2**(i / scales_per_octave) * stride``."""

    strides: tuple[int, ...] = (8, 16, 32, 64, 128)
    ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    octave_base_scale: float = 4.0
    scales_per_octave: int = 3
    center_offset: float = 0.0


@dataclass(frozen=True)
class DeltaCoderConfig:
    """Delta (dx, dy, dw, dh) box coder."""

    type: Literal["delta_xywh"] = "delta_xywh"
    target_means: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    target_stds: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)


@dataclass(frozen=True)
class MaxIoUAssignerConfig:
    """Max-IoU assignment of anchors to ground truth."""

    type: Literal["max_iou"] = "max_iou"
    pos_iou_thr: float = 0.5
    neg_iou_thr: float = 0.4
    min_pos_iou: float = 0.0
    gt_max_assign_all: bool = True
    ignore_iof_thr: float = -1.0


@dataclass(frozen=True)
class PseudoSamplerConfig:
    """Keep every assigned anchor (RetinaNet, FCOS)."""

    type: Literal["pseudo"] = "pseudo"


@dataclass(frozen=True)
class RandomSamplerConfig:
    """Sample ``num`` anchors with ``pos_fraction`` positives; ``neg_pos_ub`` caps negatives per positive."""

    type: Literal["random"] = "random"
    num: int = 256
    pos_fraction: float = 0.5
    neg_pos_ub: float = -1.0
    add_gt_as_proposals: bool = False


@dataclass(frozen=True)
class FocalLossConfig:
    type: Literal["focal"] = "focal"
    gamma: float = 2.0
    alpha: float = 0.25
    weight: float = 1.0


@dataclass(frozen=True)
class SmoothL1LossConfig:
    type: Literal["smooth_l1"] = "smooth_l1"
    beta: float = 1.0
    weight: float = 1.0


@dataclass(frozen=True)
class L1LossConfig:
    type: Literal["l1"] = "l1"
    weight: float = 1.0


@dataclass(frozen=True)
class IoULossConfig:
    type: Literal["iou"] = "iou"
    mode: Literal["log", "linear"] = "log"
    weight: float = 1.0


@dataclass(frozen=True)
class GIoULossConfig:
    type: Literal["giou"] = "giou"
    weight: float = 1.0


@dataclass(frozen=True)
class BCELossConfig:
    """Binary cross-entropy on logits (FCOS centerness)."""

    type: Literal["bce"] = "bce"
    weight: float = 1.0


ClsLossConfig = Union[FocalLossConfig, BCELossConfig]
BoxLossConfig = Union[L1LossConfig, SmoothL1LossConfig, IoULossConfig, GIoULossConfig]


@dataclass(frozen=True)
class RetinaHeadConfig:
    """RetinaNet head: shared conv towers, sigmoid classification per anchor."""

    type: Literal["retina"] = "retina"
    feat_channels: int = 256
    stacked_convs: int = 4
    norm: Literal["none", "gn", "bn"] = "none"
    anchor: AnchorConfig = field(default_factory=AnchorConfig)
    bbox_coder: DeltaCoderConfig = field(default_factory=DeltaCoderConfig)
    assigner: MaxIoUAssignerConfig = field(default_factory=MaxIoUAssignerConfig)
    sampler: Union[PseudoSamplerConfig, RandomSamplerConfig] = field(default_factory=PseudoSamplerConfig)
    allowed_border: int = -1
    reg_decoded_bbox: bool = False
    loss_cls: ClsLossConfig = field(default_factory=FocalLossConfig)
    loss_bbox: BoxLossConfig = field(default_factory=L1LossConfig)


@dataclass(frozen=True)
class FCOSHeadConfig:
    """FCOS head: per-point classification, (l, t, r, b) regression and centerness."""

    type: Literal["fcos"] = "fcos"
    feat_channels: int = 256
    stacked_convs: int = 4
    norm: Literal["none", "gn", "bn"] = "gn"
    strides: tuple[int, ...] = (8, 16, 32, 64, 128)
    regress_ranges: tuple[tuple[float, float], ...] = (
        (-1.0, 64.0), (64.0, 128.0), (128.0, 256.0), (256.0, 512.0), (512.0, 1e8))
    center_sampling: bool = False
    center_sample_radius: float = 1.5
    norm_on_bbox: bool = False
    centerness_on_reg: bool = False
    loss_cls: ClsLossConfig = field(default_factory=FocalLossConfig)
    loss_bbox: BoxLossConfig = field(default_factory=IoULossConfig)
    loss_centerness: BCELossConfig = field(default_factory=BCELossConfig)


@dataclass(frozen=True)
class CrossEntropyLossConfig:
    """Softmax cross-entropy over C + 1 classes (RoI box heads)."""

    type: Literal["ce"] = "ce"
    weight: float = 1.0


@dataclass(frozen=True)
class ProposalConfig:
    """RPN proposal generation: per-level top-k, NMS, proposals kept per image."""

    nms_pre: int = 1000
    nms_iou_thr: float = 0.7
    max_per_img: int = 1000
    min_bbox_size: float = 0.0


def _rpn_anchor() -> AnchorConfig:
    return AnchorConfig(strides=(4, 8, 16, 32, 64), ratios=(0.5, 1.0, 2.0), octave_base_scale=8.0, scales_per_octave=1)


@dataclass(frozen=True)
class RPNHeadConfig:
    """Region proposal network head (MMDetection v2 defaults; smooth L1 with beta 1/9)."""

    type: Literal["rpn"] = "rpn"
    feat_channels: int = 256
    anchor: AnchorConfig = field(default_factory=_rpn_anchor)
    bbox_coder: DeltaCoderConfig = field(default_factory=DeltaCoderConfig)
    assigner: MaxIoUAssignerConfig = field(default_factory=lambda: MaxIoUAssignerConfig(
        pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3))
    sampler: RandomSamplerConfig = field(default_factory=lambda: RandomSamplerConfig(num=256, pos_fraction=0.5))
    allowed_border: int = -1
    loss_cls: BCELossConfig = field(default_factory=BCELossConfig)
    loss_bbox: BoxLossConfig = field(default_factory=lambda: SmoothL1LossConfig(beta=1.0 / 9.0))
    train_proposals: ProposalConfig = field(default_factory=lambda: ProposalConfig(nms_pre=2000))
    test_proposals: ProposalConfig = field(default_factory=ProposalConfig)


@dataclass(frozen=True)
class RoIExtractorConfig:
    """Multi-level RoIAlign (FPN level mapping with ``finest_scale``)."""

    output_size: int = 7
    strides: tuple[int, ...] = (4, 8, 16, 32)
    sampling_ratio: int = 0
    finest_scale: int = 56


@dataclass(frozen=True)
class BBoxHeadConfig:
    """RoI box head: shared2fc (0 convs, 2 fcs) or 4conv1fc (4 convs with GN, 1 fc)."""

    num_shared_convs: int = 0
    num_shared_fcs: int = 2
    conv_out_channels: int = 256
    fc_out_channels: int = 1024
    norm: Literal["none", "gn"] = "none"
    reg_class_agnostic: bool = False
    target_stds: tuple[float, float, float, float] = (0.1, 0.1, 0.2, 0.2)
    loss_cls: CrossEntropyLossConfig = field(default_factory=CrossEntropyLossConfig)
    loss_bbox: BoxLossConfig = field(default_factory=lambda: SmoothL1LossConfig(beta=1.0))


@dataclass(frozen=True)
class OHEMSamplerConfig:
    """Online hard example mining: keep the highest-loss RoIs."""

    type: Literal["ohem"] = "ohem"
    num: int = 512
    pos_fraction: float = 0.25
    neg_pos_ub: float = -1.0
    add_gt_as_proposals: bool = True


def _rcnn_assigner() -> MaxIoUAssignerConfig:
    return MaxIoUAssignerConfig(pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5)


def _rcnn_sampler() -> RandomSamplerConfig:
    return RandomSamplerConfig(num=512, pos_fraction=0.25, add_gt_as_proposals=True)


@dataclass(frozen=True)
class MaskHeadConfig:
    """FCN mask head: ``num_convs`` 3x3 convs, a 2x deconv, per-class 28x28 masks."""

    num_convs: int = 4
    conv_out_channels: int = 256
    class_agnostic: bool = False
    loss_weight: float = 1.0
    roi_extractor: RoIExtractorConfig = field(default_factory=lambda: RoIExtractorConfig(output_size=14))


@dataclass(frozen=True)
class StandardRoIHeadConfig:
    """One RoI stage (Fast / Faster / Mask R-CNN)."""

    type: Literal["standard"] = "standard"
    roi_extractor: RoIExtractorConfig = field(default_factory=RoIExtractorConfig)
    bbox_head: BBoxHeadConfig = field(default_factory=BBoxHeadConfig)
    assigner: MaxIoUAssignerConfig = field(default_factory=_rcnn_assigner)
    sampler: Union[RandomSamplerConfig, OHEMSamplerConfig] = field(default_factory=_rcnn_sampler)
    mask_head: Optional[MaskHeadConfig] = None


@dataclass(frozen=True)
class CascadeStageConfig:
    """One cascade stage: its box head, IoU thresholds, sampler and loss weight."""

    bbox_head: BBoxHeadConfig = field(default_factory=BBoxHeadConfig)
    assigner: MaxIoUAssignerConfig = field(default_factory=_rcnn_assigner)
    sampler: Union[RandomSamplerConfig, OHEMSamplerConfig] = field(default_factory=_rcnn_sampler)
    loss_weight: float = 1.0


def _cascade_stages() -> tuple[CascadeStageConfig, ...]:
    return tuple(CascadeStageConfig(
        bbox_head=BBoxHeadConfig(target_stds=stds, reg_class_agnostic=True),
        assigner=MaxIoUAssignerConfig(pos_iou_thr=t, neg_iou_thr=t, min_pos_iou=t), loss_weight=w)
        for t, w, stds in ((0.5, 1.0, (0.1, 0.1, 0.2, 0.2)), (0.6, 0.5, (0.05, 0.05, 0.1, 0.1)),
                           (0.7, 0.25, (0.033, 0.033, 0.067, 0.067))))


@dataclass(frozen=True)
class CascadeRoIHeadConfig:
    """Cascade R-CNN: stages with rising IoU thresholds (0.5 / 0.6 / 0.7), weights 1 / 0.5 / 0.25."""

    type: Literal["cascade"] = "cascade"
    roi_extractor: RoIExtractorConfig = field(default_factory=RoIExtractorConfig)
    stages: tuple[CascadeStageConfig, ...] = field(default_factory=_cascade_stages)
    mask_head: Optional[MaskHeadConfig] = None


@dataclass(frozen=True)
class SingleStageConfig:
    """Backbone + neck + dense head (RetinaNet, FCOS)."""

    num_classes: int
    type: Literal["single_stage"] = "single_stage"
    backbone: ResNetConfig = field(default_factory=ResNetConfig)
    neck: FPNConfig = field(default_factory=FPNConfig)
    bbox_head: Union[RetinaHeadConfig, FCOSHeadConfig] = field(default_factory=RetinaHeadConfig)


@dataclass(frozen=True)
class TwoStageConfig:
    """Backbone + neck + (RPN or a proposals file) + RoI head (Fast / Faster / Mask / Cascade R-CNN).

    Without ``rpn_head`` the detector is Fast R-CNN: proposals come from
    ``data.train.proposals_file`` / ``data.val.proposals_file``.
    """

    num_classes: int
    type: Literal["two_stage"] = "two_stage"
    backbone: ResNetConfig = field(default_factory=ResNetConfig)
    neck: FPNConfig = field(default_factory=lambda: FPNConfig(add_extra_convs="none"))
    rpn_head: Optional[RPNHeadConfig] = field(default_factory=RPNHeadConfig)
    roi_head: Union[StandardRoIHeadConfig, CascadeRoIHeadConfig] = field(default_factory=StandardRoIHeadConfig)


@dataclass(frozen=True)
class RPNConfig:
    """Region proposal network alone; evaluated by proposal recall (AR@100/300/1000)."""

    num_classes: int
    type: Literal["rpn"] = "rpn"
    backbone: ResNetConfig = field(default_factory=ResNetConfig)
    neck: FPNConfig = field(default_factory=lambda: FPNConfig(add_extra_convs="none"))
    rpn_head: RPNHeadConfig = field(default_factory=RPNHeadConfig)


ModelConfig = Union[SingleStageConfig, TwoStageConfig, RPNConfig]


@dataclass(frozen=True)
class TestConfig:
    """Test-time decoding: score threshold, per-level top-k, batched NMS or soft-NMS (linear or
    Gaussian, Bodla et al.), detections kept, mask binarisation threshold."""

    score_thr: float = 0.05
    nms_pre: int = 1000
    nms_type: Literal["nms", "soft_nms_linear", "soft_nms_gaussian"] = "nms"
    nms_iou_thr: float = 0.5
    soft_nms_sigma: float = 0.5
    soft_nms_min_score: float = 0.001
    max_per_img: int = 100
    mask_thr: float = 0.5


# ----------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class OptimizerConfig:
    type: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-4
    decay_norm_and_bias: bool = False  # MMDetection decays every parameter; its COCO configs set true
    grad_clip: Optional[float] = None


@dataclass(frozen=True)
class LrConfig:
    """Step (epochs in ``steps``) or cosine schedule, after an optional warm-up in iterations.

    Linear warm-up ramps the lr factor from ``warmup_ratio`` to 1; constant warm-up holds it at
    ``warmup_ratio`` (MMDetection's FCOS recipe).
    """

    policy: Literal["step", "cosine"] = "step"
    steps: tuple[int, ...] = (8, 11)
    gamma: float = 0.1
    min_lr_ratio: float = 0.01
    warmup: Literal["linear", "constant", "none"] = "linear"
    warmup_iters: int = 500
    warmup_ratio: float = 0.001


@dataclass(frozen=True)
class HookConfig:
    """A hook named in the config: a built-in name or ``package.module:ClassName``."""

    type: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainConfig:
    max_epochs: int = 12
    max_iters: Optional[int] = None
    batch_size: int = 2
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    lr: LrConfig = field(default_factory=LrConfig)
    amp: Literal["none", "fp16", "bf16"] = "none"
    seed: int = 0
    checkpoint_interval: int = 1
    keep_last: int = 3
    eval_interval: int = 1
    log_interval: int = 20
    sync_bn: bool = False
    channels_last: bool = False
    custom_hooks: tuple[HookConfig, ...] = ()


@dataclass(frozen=True)
class DeployConfig:
    """TensorRT engine building: the optimization profile and builder limits.

    Sizes are ``(height, width)`` of the padded network input; ``None`` derives them from
    ``data.test_scale``: ``opt`` is a 4:3 landscape image at the test scale, ``max`` a square of
    the long side (either orientation fits), ``min`` one ``size_divisor`` block.
    ``timing_cache``: TensorRT's kernel timing cache file, read before and written after a build
    ("" = ``timing.cache`` beside the engine).
    """

    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 8
    min_size: Optional[tuple[int, int]] = None
    opt_size: Optional[tuple[int, int]] = None
    max_size: Optional[tuple[int, int]] = None
    workspace_mb: int = 4096
    timing_cache: str = ""


@dataclass(frozen=True)
class Config:
    """Root of a dettool config file."""

    model: ModelConfig
    data: DataConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    test: TestConfig = field(default_factory=TestConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    work_dir: str = ""
    source: str = ""
