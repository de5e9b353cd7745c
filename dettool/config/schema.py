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
    """One dataset split in COCO format."""

    ann_file: str
    img_dir: str


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
class SingleStageConfig:
    """Backbone + neck + dense head (RetinaNet, FCOS)."""

    num_classes: int
    type: Literal["single_stage"] = "single_stage"
    backbone: ResNetConfig = field(default_factory=ResNetConfig)
    neck: FPNConfig = field(default_factory=FPNConfig)
    bbox_head: Union[RetinaHeadConfig, FCOSHeadConfig] = field(default_factory=RetinaHeadConfig)


ModelConfig = SingleStageConfig


@dataclass(frozen=True)
class TestConfig:
    """Test-time decoding: score threshold, per-level top-k, batched NMS, detections kept."""

    score_thr: float = 0.05
    nms_pre: int = 1000
    nms_iou_thr: float = 0.5
    max_per_img: int = 100


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
class Config:
    """Root of a dettool config file."""

    model: ModelConfig
    data: DataConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    test: TestConfig = field(default_factory=TestConfig)
    work_dir: str = ""
    source: str = ""
