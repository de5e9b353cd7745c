"""Config of test-time decoding, training (optimizer, schedule, hooks) and TensorRT deployment."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Optional

from dettool.config.schema.common import Fraction, NonNegFloat, NonNegInt, PosFloat, PosInt, Range, Section, require


@dataclass(frozen=True)
class TestConfig(Section):
    """Test-time decoding: score threshold, per-level top-k (dense heads: the best ``nms_pre``
    (anchor or point, class) pairs above ``score_thr``, as MMDetection 3.x; <= 0 keeps all), the
    minimum box size of detections (boxes whose width or height is not larger are dropped; < 0
    disables; MMDetection's RetinaNet and FCOS set 0, its RoI heads have none, torchvision's drop
    boxes under 0.01 px), batched NMS or soft-NMS (linear or
    Gaussian, Bodla et al.), detections kept, mask binarisation threshold and pasting rule
    (``mmdet``: MMDetection's sampling; ``torchvision``: its ``paste_masks_in_image``).
    ``nms_pre_per_class``: anchor heads take instead the best ``nms_pre`` boxes of each class
    over all levels (torchvision's SSD: ``topk_candidates`` 400)."""

    score_thr: Fraction = 0.05
    nms_pre: int = 1000
    nms_pre_per_class: bool = False
    min_bbox_size: Annotated[float, Range(min=-1)] = -1.0
    nms_type: Literal["nms", "soft_nms_linear", "soft_nms_gaussian"] = "nms"
    nms_iou_thr: Fraction = 0.5
    soft_nms_sigma: PosFloat = 0.5
    soft_nms_min_score: Fraction = 0.001
    max_per_img: PosInt = 100
    mask_thr: Fraction = 0.5
    mask_paste: Literal["mmdet", "torchvision"] = "mmdet"


@dataclass(frozen=True)
class OptimizerConfig(Section):
    """SGD or AdamW; ``decay_norm_and_bias`` (MMDetection decays every parameter; its COCO configs
    set true), ``norm_decay_mult`` the weight decay factor of normalization layers' weights and
    biases, whatever ``decay_norm_and_bias`` says (MMDetection's ``paramwise_cfg.norm_decay_mult``;
    its from-scratch configs set 0; ``null``: as the other parameters), ``grad_clip`` the max total
    gradient norm."""

    type: Literal["sgd", "adamw"] = "sgd"
    lr: PosFloat = 0.01
    momentum: Fraction = 0.9
    betas: tuple[Annotated[float, Range(0, 1, max_inclusive=False)],
                 Annotated[float, Range(0, 1, max_inclusive=False)]] = (0.9, 0.999)
    weight_decay: NonNegFloat = 1e-4
    decay_norm_and_bias: bool = False
    norm_decay_mult: Optional[NonNegFloat] = None
    grad_clip: Optional[PosFloat] = None


@dataclass(frozen=True)
class LrConfig(Section):
    """Step (epochs in ``steps``) or cosine schedule, after an optional warm-up in iterations.

    Linear warm-up ramps the lr factor from ``warmup_ratio`` to 1; constant warm-up holds it at
    ``warmup_ratio`` (MMDetection's FCOS recipe).
    """

    policy: Literal["step", "cosine"] = "step"
    steps: tuple[PosInt, ...] = (8, 11)
    gamma: PosFloat = 0.1
    min_lr_ratio: Fraction = 0.01
    warmup: Literal["linear", "constant", "none"] = "linear"
    warmup_iters: NonNegInt = 500
    warmup_ratio: Annotated[float, Range(0, 1, min_inclusive=False)] = 0.001

    def __post_init__(self) -> None:
        super().__post_init__()
        require(list(self.steps) == sorted(self.steps), "steps", f"must be increasing, got {list(self.steps)}")


@dataclass(frozen=True)
class HookConfig(Section):
    """A hook named in the config: a built-in name or ``package.module:ClassName``."""

    type: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainConfig(Section):
    """The training run: length, batch, optimisation, checkpoints (``epoch_N.pth`` every
    ``checkpoint_interval`` epochs, ``iter_N.pth`` every ``checkpoint_iter_interval`` iterations
    within an epoch (0: none), the newest ``keep_last`` kept (0: all)), evaluation
    (``eval_interval`` 0: none), logging and extra hooks."""

    max_epochs: PosInt = 12
    max_iters: Optional[PosInt] = None
    batch_size: PosInt = 2
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    lr: LrConfig = field(default_factory=LrConfig)
    amp: Literal["none", "fp16", "bf16"] = "none"
    seed: int = 0
    checkpoint_interval: PosInt = 1
    checkpoint_iter_interval: NonNegInt = 0
    keep_last: NonNegInt = 3
    eval_interval: NonNegInt = 1
    log_interval: PosInt = 20
    sync_bn: bool = False
    channels_last: bool = False
    custom_hooks: tuple[HookConfig, ...] = ()


Size = tuple[PosInt, PosInt]


@dataclass(frozen=True)
class DeployConfig(Section):
    """TensorRT engine building: the optimization profile and builder limits.

    Sizes are ``(height, width)`` of the padded network input; ``None`` derives them from
    ``data.test_scale``: ``opt`` is a 4:3 landscape image at the test scale, ``max`` a square of
    the long side (either orientation fits), ``min`` one ``size_divisor`` block; with
    ``data.keep_ratio: false`` all three are the exact padded ``WxH`` of the test scale.
    ``timing_cache``: TensorRT's kernel timing cache file, read before and written after a build
    ("" = ``timing.cache`` beside the engine).
    """

    min_batch: PosInt = 1
    opt_batch: PosInt = 1
    max_batch: PosInt = 8
    min_size: Optional[Size] = None
    opt_size: Optional[Size] = None
    max_size: Optional[Size] = None
    workspace_mb: PosInt = 4096
    timing_cache: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.min_batch <= self.opt_batch <= self.max_batch, "opt_batch",
                f"batches must satisfy min_batch <= opt_batch <= max_batch, got "
                f"{self.min_batch}, {self.opt_batch}, {self.max_batch}")
