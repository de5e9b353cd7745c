"""Config of losses; ``weight`` is MMDetection's ``loss_weight``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, Union

from dettool.config.schema.common import Fraction, NonNegFloat, PosFloat, PosInt, Range, Section

Momentum = Annotated[float, Range(0, 1, max_inclusive=False)]


@dataclass(frozen=True)
class FocalLossConfig(Section):
    """Sigmoid focal loss (Lin et al.)."""

    type: Literal["focal"] = "focal"
    gamma: NonNegFloat = 2.0
    alpha: Fraction = 0.25
    weight: NonNegFloat = 1.0


@dataclass(frozen=True)
class GHMCLossConfig(Section):
    """Gradient-harmonized classification loss (Li et al., GHM-C; MMDetection's ``GHMC``).

    ``bins`` gradient-norm bins, ``momentum`` of their running counts (0: this batch alone).
    """

    type: Literal["ghmc"] = "ghmc"
    bins: PosInt = 10
    momentum: Momentum = 0.0
    weight: NonNegFloat = 1.0


@dataclass(frozen=True)
class BCELossConfig(Section):
    """Binary cross-entropy on logits (FCOS centerness, RPN objectness)."""

    type: Literal["bce"] = "bce"
    weight: NonNegFloat = 1.0


@dataclass(frozen=True)
class CrossEntropyLossConfig(Section):
    """Softmax cross-entropy over C + 1 classes (RoI box heads)."""

    type: Literal["ce"] = "ce"
    weight: NonNegFloat = 1.0


@dataclass(frozen=True)
class SmoothL1LossConfig(Section):
    """Smooth L1 (Huber) with transition ``beta`` (the MMDetection paper's ``smoothL1_beta``)."""

    type: Literal["smooth_l1"] = "smooth_l1"
    beta: NonNegFloat = 1.0
    weight: NonNegFloat = 1.0


@dataclass(frozen=True)
class L1LossConfig(Section):
    type: Literal["l1"] = "l1"
    weight: NonNegFloat = 1.0


@dataclass(frozen=True)
class IoULossConfig(Section):
    """IoU loss on decoded boxes: ``-log(IoU)`` or ``1 - IoU``."""

    type: Literal["iou"] = "iou"
    mode: Literal["log", "linear"] = "log"
    weight: NonNegFloat = 1.0


@dataclass(frozen=True)
class GIoULossConfig(Section):
    """Generalized IoU loss on decoded boxes."""

    type: Literal["giou"] = "giou"
    weight: NonNegFloat = 1.0


@dataclass(frozen=True)
class GHMRLossConfig(Section):
    """Gradient-harmonized regression loss on deltas (GHM-R: authentic smooth L1 with ``mu``)."""

    type: Literal["ghmr"] = "ghmr"
    mu: PosFloat = 0.02
    bins: PosInt = 10
    momentum: Momentum = 0.0
    weight: NonNegFloat = 1.0


@dataclass(frozen=True)
class BalancedL1LossConfig(Section):
    """Balanced L1 on deltas (Libra R-CNN; MMDetection's ``BalancedL1Loss``): ``alpha`` scales the
    inliers' gradient, ``gamma`` is the outliers' slope, ``beta`` the transition point."""

    type: Literal["balanced_l1"] = "balanced_l1"
    alpha: PosFloat = 0.5
    gamma: PosFloat = 1.5
    beta: PosFloat = 1.0
    weight: NonNegFloat = 1.0


@dataclass(frozen=True)
class BoundedIoULossConfig(Section):
    """Bounded IoU loss on decoded boxes (MMDetection's ``BoundedIoULoss``): smooth L1 with
    transition ``beta`` of the bounded-IoU distances; Guided Anchoring's anchor-shape loss."""

    type: Literal["bounded_iou"] = "bounded_iou"
    beta: PosFloat = 0.2
    eps: PosFloat = 1e-3
    weight: NonNegFloat = 1.0


ClsLossConfig = Union[FocalLossConfig, BCELossConfig, GHMCLossConfig]
BoxLossConfig = Union[L1LossConfig, SmoothL1LossConfig, IoULossConfig, GIoULossConfig, GHMRLossConfig,
                      BalancedL1LossConfig]
