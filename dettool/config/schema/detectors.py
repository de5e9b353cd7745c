"""Config of whole detectors: how backbone, neck and heads are put together."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Union

from dettool.config.schema.backbones import BackboneConfig, ResNetConfig
from dettool.config.schema.common import PosInt, Section
from dettool.config.schema.dense_heads import DenseHeadConfig, RetinaHeadConfig, RPNHeadConfig
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
    ``data.train.proposals_file`` / ``data.val.proposals_file``.
    """

    num_classes: PosInt
    type: Literal["two_stage"] = "two_stage"
    backbone: BackboneConfig = field(default_factory=ResNetConfig)
    neck: NeckSpec = field(default_factory=lambda: FPNConfig(add_extra_convs="none"))
    rpn_head: Optional[RPNHeadConfig] = field(default_factory=RPNHeadConfig)
    roi_head: RoIHeadConfig = field(default_factory=StandardRoIHeadConfig)


@dataclass(frozen=True)
class RPNConfig(Section):
    """Region proposal network alone; evaluated by proposal recall (AR@100/300/1000)."""

    num_classes: PosInt
    type: Literal["rpn"] = "rpn"
    backbone: BackboneConfig = field(default_factory=ResNetConfig)
    neck: NeckSpec = field(default_factory=lambda: FPNConfig(add_extra_convs="none"))
    rpn_head: RPNHeadConfig = field(default_factory=RPNHeadConfig)


ModelConfig = Union[SingleStageConfig, TwoStageConfig, RPNConfig]
