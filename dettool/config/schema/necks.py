"""Config of necks; a model's ``neck`` is one neck or a sequence applied in order."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Union

from dettool.config.schema.common import NonNegInt, PosFloat, PosInt, Section, require


@dataclass(frozen=True)
class FPNConfig(Section):
    """Feature pyramid neck. ``add_extra_convs`` builds P6/P7 from C5 (on_input) or P5 (on_output);
    ``conv: ws`` standardizes the weights of all its convs (Weight Standardization, MMDetection's
    ``conv_cfg=dict(type='ConvWS')``)."""

    type: Literal["fpn"] = "fpn"
    out_channels: PosInt = 256
    num_outs: PosInt = 5
    add_extra_convs: Literal["none", "on_input", "on_output"] = "on_input"
    relu_before_extra_convs: bool = False
    norm: Literal["none", "bn", "gn"] = "none"
    conv: Literal["conv", "ws"] = "conv"


@dataclass(frozen=True)
class SSDNeckConfig(Section):
    """SSD's neck (MMDetection's ``SSDNeck``): the first input level L2-normalised with a learned
    per-channel scale starting at ``l2_norm_scale`` (``null``: no normalisation), then one extra
    level per entry of ``level_strides``: a 1x1 conv to half its channels and a conv of
    ``level_strides[i]`` / ``level_paddings[i]`` (3x3; ``last_kernel_size`` for the last level),
    each followed by a ReLU. ``out_channels`` lists every output level, the input levels'
    first; the input levels' channels are the backbone's. ``norm``: ``bn`` adds a BatchNorm after
    every extra conv (MMDetection's ``norm_cfg=dict(type='BN')``; ScratchDet). Defaults are SSD300's.
    """

    type: Literal["ssd_neck"] = "ssd_neck"
    out_channels: tuple[PosInt, ...] = (512, 1024, 512, 256, 256, 256)
    level_strides: tuple[PosInt, ...] = (2, 2, 1, 1)
    level_paddings: tuple[NonNegInt, ...] = (1, 1, 0, 0)
    l2_norm_scale: Optional[PosFloat] = 20.0
    last_kernel_size: PosInt = 3
    norm: Literal["none", "bn"] = "none"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(len(self.level_paddings) == len(self.level_strides), "level_paddings",
                f"needs one entry per level stride ({len(self.level_strides)}), got {len(self.level_paddings)}")
        require(0 < len(self.level_strides) < len(self.out_channels), "level_strides",
                f"one per extra level: between 1 and {len(self.out_channels) - 1} (out_channels has "
                f"{len(self.out_channels)} levels), got {len(self.level_strides)}")


@dataclass(frozen=True)
class BFPConfig(Section):
    """Balanced feature pyramid (Libra R-CNN; MMDetection's ``BFP``), placed after an FPN in a
    neck sequence: its levels are integrated at level ``refine_level`` (an index into the FPN's
    outputs, finest first), refined by ``refine_type`` ('non_local': an embedded-Gaussian non-local
    block; 'conv': a 3x3 conv + ReLU; 'none'), and added back to every level. Its channels and
    level count are the previous neck's.
    """

    type: Literal["bfp"] = "bfp"
    refine_level: NonNegInt = 2
    refine_type: Literal["none", "conv", "non_local"] = "none"


@dataclass(frozen=True)
class MLFPNConfig(Section):
    """M2Det's multi-level feature pyramid (MLFPN) on two backbone levels (VGG16's conv4_3 and
    conv7): FFMv1 fuses them into the base feature (``base_channels``: the shallow level's 3x3 and
    the deep level's 1x1 conv outputs, concatenated), ``num_levels`` thinned U-shape modules of
    ``tum_channels`` and ``num_scales`` scales each (``smooth``: their 1x1 smoothing convs), FFMv2
    feeding each the base feature compressed to ``tum_channels / 2`` and the previous one's largest
    output, and SFAM concatenating each scale over the TUMs (``tum_channels x num_levels``
    channels per output level), with ``sfam`` its squeeze-excitation channel attention (squeeze
    ratio ``sfam_reduction``). ``norm``: the norm layer of its convs (M2Det: BatchNorm; ``gn``:
    GroupNorm of ``gn_groups``, which does not tie an image's features to the others' of its batch).
    Defaults are M2Det320's (VGG16, 8 TUMs of 256, 6 scales).
    """

    type: Literal["mlfpn"] = "mlfpn"
    base_channels: tuple[PosInt, PosInt] = (256, 512)
    tum_channels: PosInt = 256
    num_levels: PosInt = 8
    num_scales: PosInt = 6
    smooth: bool = True
    sfam: bool = True
    sfam_reduction: PosInt = 16
    norm: Literal["bn", "gn"] = "bn"
    gn_groups: PosInt = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.num_scales >= 3, "num_scales", f"a TUM needs at least 3 scales, got {self.num_scales}")
        widths = (*self.base_channels, self.tum_channels // 2, self.tum_channels)
        require(self.norm != "gn" or all(w % self.gn_groups == 0 for w in widths), "gn_groups",
                f"must divide base_channels, tum_channels and tum_channels / 2 ({widths}), got {self.gn_groups}")
        require(self.tum_channels % 2 == 0, "tum_channels", f"must be even (TUM inputs take half), got "
                f"{self.tum_channels}")


@dataclass(frozen=True)
class HRFPNConfig(Section):
    """HRNet's feature pyramid (HRNetV2p, Sun et al. 2019; MMDetection's ``HRFPN``): the backbone's
    branches upsampled (bilinear) to the first one's size and concatenated, a 1x1 conv to
    ``out_channels``, then ``num_outs`` levels by ``pooling_type`` pooling of that map by 2, 4,
    8..., each through a 3x3 conv of ``stride`` (FCOS's HRNet configs: 2). No norm layers
    (MMDetection's HRFPN passes none to its convs).
    """

    type: Literal["hrfpn"] = "hrfpn"
    out_channels: PosInt = 256
    num_outs: PosInt = 5
    pooling_type: Literal["avg", "max"] = "avg"
    stride: PosInt = 1


NeckConfig = Union[FPNConfig, SSDNeckConfig, BFPConfig, MLFPNConfig, HRFPNConfig]
NeckSpec = Union[NeckConfig, tuple[NeckConfig, ...]]  # one neck, or several applied in order
