"""Config of the task modules heads are built from: anchors, box coders, assigners, samplers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, Optional, Union

from dettool.config.schema.common import Fraction, PosFloat, PosInt, Range, Section, require


@dataclass(frozen=True)
class AnchorConfig(Section):
    """Anchor generator: per level ``octave_base_scale * 2**(i / scales_per_octave) * stride``.

    torchvision's anchors: ``sizes`` (per level, in pixels, in place of the octave scales),
    ``round_base`` (base anchors rounded to whole pixels) and ``stride_from_input`` (a level's
    stride is the padded input size floor-divided by its size: 61 for P6 of an 800-pixel side).
    SSD's anchors are :class:`SSDAnchorConfig`.
    """

    type: Literal["standard"] = "standard"
    strides: tuple[PosInt, ...] = (8, 16, 32, 64, 128)
    ratios: tuple[PosFloat, ...] = (0.5, 1.0, 2.0)
    octave_base_scale: PosFloat = 4.0
    scales_per_octave: PosInt = 3
    center_offset: Fraction = 0.0
    sizes: Optional[tuple[tuple[PosFloat, ...], ...]] = None
    round_base: bool = False
    stride_from_input: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sizes is not None:
            require(len(self.sizes) == len(self.strides) and len({len(s) for s in self.sizes}) == 1, "sizes",
                    f"needs one list of sizes per stride ({len(self.strides)}), all of one length")


@dataclass(frozen=True)
class SSDAnchorConfig(Section):
    """SSD's anchors (MMDetection's ``SSDAnchorGenerator`` with ``scale_major=False``): per level
    a square of the level's min size, one of sqrt(min * max), and for each ratio ``r`` a pair with
    h / w ``1 / r`` and ``r``. ``min_sizes`` / ``max_sizes`` (pixels, both or neither) default to
    MMDetection's rule from ``input_size`` (300 or 512) and ``basesize_ratio_range`` (fractions of
    the input; SSD512 COCO: 0.1, 0.9). ``clip_to_input``: anchor sides capped at ``input_size``
    (torchvision's ``DefaultBoxGenerator(clip=True)``). The defaults are SSD300 COCO's."""

    type: Literal["ssd"] = "ssd"
    strides: tuple[PosInt, ...] = (8, 16, 32, 64, 100, 300)
    ratios: tuple[tuple[PosFloat, ...], ...] = ((2.0,), (2.0, 3.0), (2.0, 3.0), (2.0, 3.0), (2.0,), (2.0,))
    basesize_ratio_range: tuple[Fraction, Fraction] = (0.15, 0.9)
    input_size: PosInt = 300
    min_sizes: Optional[tuple[PosFloat, ...]] = None
    max_sizes: Optional[tuple[PosFloat, ...]] = None
    clip_to_input: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        require(len(self.ratios) == len(self.strides), "ratios",
                f"needs one list of ratios per stride ({len(self.strides)}), got {len(self.ratios)}")
        require((self.min_sizes is None) == (self.max_sizes is None), "min_sizes", "needs max_sizes with it")
        for name in ("min_sizes", "max_sizes"):
            sizes = getattr(self, name)
            require(sizes is None or len(sizes) == len(self.strides), name,
                    f"needs one size per stride ({len(self.strides)})")
        require(self.basesize_ratio_range[0] < self.basesize_ratio_range[1], "basesize_ratio_range",
                f"{self.basesize_ratio_range} does not increase")
        require(len(self.strides) > 2 or self.min_sizes is not None, "strides",
                "needs 3 or more levels for sizes from basesize_ratio_range")


AnchorGeneratorConfig = Union[AnchorConfig, SSDAnchorConfig]


@dataclass(frozen=True)
class DeltaCoderConfig(Section):
    """Delta (dx, dy, dw, dh) box coder."""

    type: Literal["delta_xywh"] = "delta_xywh"
    target_means: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    target_stds: tuple[PosFloat, PosFloat, PosFloat, PosFloat] = (1.0, 1.0, 1.0, 1.0)


@dataclass(frozen=True)
class TBLRCoderConfig(Section):
    """(top, bottom, left, right) distances from the prior's centre in units of its size, divided
    by ``normalizer`` (FSAF; MMDetection's ``TBLRBBoxCoder``)."""

    type: Literal["tblr"] = "tblr"
    normalizer: PosFloat = 4.0


CoderConfig = Union[DeltaCoderConfig, TBLRCoderConfig]


@dataclass(frozen=True)
class MaxIoUAssignerConfig(Section):
    """Max-IoU assignment of anchors to ground truth; ``ignore_iof_thr`` -1 disables crowd ignoring;
    ``match_low_quality``: each gt also takes its best candidate when that IoU >= ``min_pos_iou``
    (MMDetection's option of the same name; its R-CNN stages set it false)."""

    type: Literal["max_iou"] = "max_iou"
    pos_iou_thr: Fraction = 0.5
    neg_iou_thr: Fraction = 0.4
    min_pos_iou: Fraction = 0.0
    gt_max_assign_all: bool = True
    ignore_iof_thr: Annotated[float, Range(-1, 1)] = -1.0
    match_low_quality: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.neg_iou_thr <= self.pos_iou_thr, "neg_iou_thr",
                f"{self.neg_iou_thr} is above pos_iou_thr {self.pos_iou_thr}")


@dataclass(frozen=True)
class ApproxMaxIoUAssignerConfig(MaxIoUAssignerConfig):
    """Guided Anchoring's shape-target assignment (MMDetection's ``ApproxMaxIoUAssigner``): a
    location overlaps a gt by the best IoU of its approximating anchors, then the max-IoU rules
    and keys of :class:`MaxIoUAssignerConfig`. The defaults are MMDetection's GA-RetinaNet
    ``ga_assigner`` (``min_pos_iou`` 0.4)."""

    type: Literal["approx_max_iou"] = "approx_max_iou"
    min_pos_iou: Fraction = 0.4


@dataclass(frozen=True)
class CenterRegionAssignerConfig(Section):
    """FSAF's centre-region assignment (MMDetection's ``CenterRegionAssigner``): positives have
    their centre in the gt box and overlap (IoF > ``min_pos_iof``) its core, the box scaled by
    ``pos_scale``; candidates overlapping the box scaled by ``neg_scale`` otherwise are not trained
    on its class; centres in an ignore box scaled by ``ignore_gt_scale`` are ignored;
    ``foreground_dominate``: a positive also shadowed for its own class stays positive."""

    type: Literal["center_region"] = "center_region"
    pos_scale: PosFloat = 0.2
    neg_scale: PosFloat = 0.2
    min_pos_iof: Fraction = 0.01
    ignore_gt_scale: PosFloat = 0.5
    foreground_dominate: bool = False


AssignerConfig = Union[MaxIoUAssignerConfig, CenterRegionAssignerConfig]


@dataclass(frozen=True)
class PseudoSamplerConfig(Section):
    """Keep every assigned anchor (RetinaNet, FCOS)."""

    type: Literal["pseudo"] = "pseudo"


NegPosUpperBound = Annotated[float, Range(min=-1)]  # -1 = no bound


@dataclass(frozen=True)
class RandomSamplerConfig(Section):
    """Sample ``num`` anchors with ``pos_fraction`` positives; ``neg_pos_ub`` caps negatives per positive."""

    type: Literal["random"] = "random"
    num: PosInt = 256
    pos_fraction: Fraction = 0.5
    neg_pos_ub: NegPosUpperBound = -1.0
    add_gt_as_proposals: bool = False


@dataclass(frozen=True)
class OHEMSamplerConfig(Section):
    """Online hard example mining: keep the highest-loss RoIs."""

    type: Literal["ohem"] = "ohem"
    num: PosInt = 512
    pos_fraction: Fraction = 0.25
    neg_pos_ub: NegPosUpperBound = -1.0
    add_gt_as_proposals: bool = True


@dataclass(frozen=True)
class IoUBalancedSamplerConfig(Section):
    """Libra R-CNN's RoI sampler (MMDetection's ``CombinedSampler`` with ``InstanceBalancedPosSampler``
    and ``IoUBalancedNegSampler``): negatives drawn evenly from ``num_bins`` IoU bins above
    ``floor_thr`` (-1: all of them; ``floor_fraction`` of them uniformly below it), positives evenly
    over the gt boxes (``instance_balanced_pos``)."""

    type: Literal["iou_balanced"] = "iou_balanced"
    num: PosInt = 512
    pos_fraction: Fraction = 0.25
    neg_pos_ub: NegPosUpperBound = -1.0
    add_gt_as_proposals: bool = True
    floor_thr: float = -1.0
    floor_fraction: Fraction = 0.0
    num_bins: PosInt = 3
    instance_balanced_pos: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.floor_thr >= 0 or self.floor_thr == -1, "floor_thr",
                f"must be >= 0, or -1 for no floor, got {self.floor_thr}")


RoISamplerConfig = Union[RandomSamplerConfig, OHEMSamplerConfig, IoUBalancedSamplerConfig]
DenseSamplerConfig = Union[PseudoSamplerConfig, RandomSamplerConfig]
