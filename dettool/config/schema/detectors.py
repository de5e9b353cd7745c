"""Config of whole detectors: how backbone, neck and heads are put together."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Union

from dettool.config.schema.backbones import BackboneConfig, ResNetConfig
from dettool.config.schema.common import NonNegInt, PosInt, Section, require
from dettool.config.schema.dense_heads import DenseHeadConfig, ProposalHeadConfig, RetinaHeadConfig, RPNHeadConfig
from dettool.config.schema.necks import FPNConfig, NeckSpec
from dettool.config.schema.roi_heads import RoIHeadConfig, StandardRoIHeadConfig


@dataclass(frozen=True)
class SingleStageConfig(Section):
    """Backbone + neck + dense head (RetinaNet, FCOS)."""

    num_classes: PosInt
    type: Literal["single_stage"] = "single_stage"
    backbone: BackboneConfig = field(default_factory=ResNetConfig)
    neck: NeckSpec = field(default_factory=FPNConfig)
    bbox_head: DenseHeadConfig = field(default_factory=RetinaHeadConfig)


@dataclass(frozen=True)
class TwoStageConfig(Section):
    """Backbone + neck + (RPN or a proposals file) + RoI head (Fast / Faster / Mask / Cascade R-CNN).

    Without ``rpn_head`` the detector is Fast R-CNN: proposals come from
    ``data.train.proposals_file`` / ``data.val.proposals_file``. ``neck: null`` hands the
    backbone's levels to the heads; ``rpn_levels`` / ``roi_levels`` pick the levels (0-based, of
    the neck's output) the RPN and the RoI head read, all when null (R-FCN: the RPN on C4, level 0,
    the position-sensitive head on C5, level 1).
    """

    num_classes: PosInt
    type: Literal["two_stage"] = "two_stage"
    backbone: BackboneConfig = field(default_factory=ResNetConfig)
    neck: Optional[NeckSpec] = field(default_factory=lambda: FPNConfig(add_extra_convs="none"))
    rpn_head: Optional[ProposalHeadConfig] = field(default_factory=RPNHeadConfig)
    roi_head: RoIHeadConfig = field(default_factory=StandardRoIHeadConfig)
    rpn_levels: Optional[tuple[NonNegInt, ...]] = None
    roi_levels: Optional[tuple[NonNegInt, ...]] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("rpn_levels", "roi_levels"):
            levels = getattr(self, key)
            require(levels is None or (len(levels) > 0 and list(levels) == sorted(set(levels))), key,
                    f"must be increasing level indices, got {levels if levels is None else list(levels)}")


@dataclass(frozen=True)
class RPNConfig(Section):
    """Region proposal network alone; evaluated by proposal recall (AR@100/300/1000)."""

    num_classes: PosInt
    type: Literal["rpn"] = "rpn"
    backbone: BackboneConfig = field(default_factory=ResNetConfig)
    neck: NeckSpec = field(default_factory=lambda: FPNConfig(add_extra_convs="none"))
    rpn_head: ProposalHeadConfig = field(default_factory=RPNHeadConfig)


ModelConfig = Union[SingleStageConfig, TwoStageConfig, RPNConfig]
