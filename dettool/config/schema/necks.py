"""Config of necks; a model's ``neck`` is one neck or a sequence applied in order."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Union

from dettool.config.schema.common import NonNegInt, PosFloat, PosInt, Section, require


@dataclass(frozen=True)
class FPNConfig(Section):
    """Feature pyramid neck. ``add_extra_convs`` builds P6/P7 from C5 (on_input) or P5 (on_output)."""

    type: Literal["fpn"] = "fpn"
    out_channels: PosInt = 256
    num_outs: PosInt = 5
    add_extra_convs: Literal["none", "on_input", "on_output"] = "on_input"
    relu_before_extra_convs: bool = False
    norm: Literal["none", "bn", "gn"] = "none"


@dataclass(frozen=True)
class SSDNeckConfig(Section):
    """SSD's neck (MMDetection's ``SSDNeck``): the first input level L2-normalised with a learned
    per-channel scale starting at ``l2_norm_scale`` (``null``: no normalisation), then one extra
    level per entry of ``level_strides``: a 1x1 conv to half its channels and a conv of
    ``level_strides[i]`` / ``level_paddings[i]`` (3x3; ``last_kernel_size`` for the last level),
    each followed by a ReLU. ``out_channels`` lists every output level, the input levels'
    first; the input levels' channels are the backbone's. Defaults are SSD300's.
    """

    type: Literal["ssd_neck"] = "ssd_neck"
    out_channels: tuple[PosInt, ...] = (512, 1024, 512, 256, 256, 256)
    level_strides: tuple[PosInt, ...] = (2, 2, 1, 1)
    level_paddings: tuple[NonNegInt, ...] = (1, 1, 0, 0)
    l2_norm_scale: Optional[PosFloat] = 20.0
    last_kernel_size: PosInt = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        require(len(self.level_paddings) == len(self.level_strides), "level_paddings",
                f"needs one entry per level stride ({len(self.level_strides)}), got {len(self.level_paddings)}")
        require(0 < len(self.level_strides) < len(self.out_channels), "level_strides",
                f"one per extra level: between 1 and {len(self.out_channels) - 1} (out_channels has "
                f"{len(self.out_channels)} levels), got {len(self.level_strides)}")


NeckConfig = Union[FPNConfig, SSDNeckConfig]  # the balanced feature pyramid (Libra R-CNN) joins here
NeckSpec = Union[NeckConfig, tuple[NeckConfig, ...]]  # one neck, or several applied in order
