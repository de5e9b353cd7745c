"""Config of necks; a model's ``neck`` is one neck or a sequence applied in order."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Union

from dettool.config.schema.common import PosInt, Section


@dataclass(frozen=True)
class FPNConfig(Section):
    """Feature pyramid neck. ``add_extra_convs`` builds P6/P7 from C5 (on_input) or P5 (on_output)."""

    type: Literal["fpn"] = "fpn"
    out_channels: PosInt = 256
    num_outs: PosInt = 5
    add_extra_convs: Literal["none", "on_input", "on_output"] = "on_input"
    relu_before_extra_convs: bool = False
    norm: Literal["none", "bn", "gn"] = "none"


NeckConfig = Union[FPNConfig]  # the balanced feature pyramid (Libra R-CNN) joins here
NeckSpec = Union[NeckConfig, tuple[NeckConfig, ...]]  # one neck, or several applied in order
