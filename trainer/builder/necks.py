"""Neck configs -> necks; a sequence of neck configs becomes a ``NeckSequence``."""
from __future__ import annotations

from torch import nn

from dettool.config import schema as S
from dettool.errors import ConfigError
from dettool.trainer.builder.table import Table
from dettool.trainer.models.backbones.conv_ws import standardize_convs
from dettool.trainer.models.backbones.norm import norm_layer
from dettool.trainer.models.necks.bfp import BFP
from dettool.trainer.models.necks.fpn import FPN
from dettool.trainer.models.necks.hrfpn import HRFPN
from dettool.trainer.models.necks.mlfpn import MLFPN
from dettool.trainer.models.necks.sequence import NeckSequence
from dettool.trainer.models.necks.ssd_neck import SSDNeck


def _fpn(cfg: S.FPNConfig, in_channels: tuple[int, ...]) -> FPN:
    fpn = FPN(in_channels=in_channels, out_channels=cfg.out_channels, num_outs=cfg.num_outs,
              add_extra_convs=cfg.add_extra_convs, relu_before_extra_convs=cfg.relu_before_extra_convs,
              norm=None if cfg.norm == "none" else norm_layer(cfg.norm))
    return standardize_convs(fpn) if cfg.conv == "ws" else fpn


def _ssd_neck(cfg: S.SSDNeckConfig, in_channels: tuple[int, ...]) -> SSDNeck:
    return SSDNeck(in_channels=in_channels, out_channels=cfg.out_channels, level_strides=cfg.level_strides,
                   level_paddings=cfg.level_paddings, l2_norm_scale=cfg.l2_norm_scale,
                   last_kernel_size=cfg.last_kernel_size, norm=cfg.norm)


def _bfp(cfg: S.BFPConfig, in_channels: tuple[int, ...]) -> BFP:
    if len(set(in_channels)) != 1:
        raise ConfigError(f"model.neck: a bfp neck needs levels of equal channels (an FPN's), got {in_channels}")
    if cfg.refine_level >= len(in_channels):
        raise ConfigError(f"model.neck: bfp refine_level {cfg.refine_level} is not one of the "
                          f"{len(in_channels)} levels of the neck before it")
    return BFP(in_channels=in_channels[0], num_levels=len(in_channels), refine_level=cfg.refine_level,
               refine_type=None if cfg.refine_type == "none" else cfg.refine_type)


def _mlfpn(cfg: S.MLFPNConfig, in_channels: tuple[int, ...]) -> MLFPN:
    if len(in_channels) != 2:
        raise ConfigError(f"model.neck: an mlfpn neck fuses two backbone levels, the backbone gives {len(in_channels)}")
    return MLFPN(in_channels=in_channels, base_channels=cfg.base_channels, tum_channels=cfg.tum_channels,
                 num_levels=cfg.num_levels, num_scales=cfg.num_scales, smooth=cfg.smooth, sfam=cfg.sfam,
                 sfam_reduction=cfg.sfam_reduction, norm=norm_layer(cfg.norm, cfg.gn_groups))


def _hrfpn(cfg: S.HRFPNConfig, in_channels: tuple[int, ...]) -> HRFPN:
    return HRFPN(in_channels=in_channels, out_channels=cfg.out_channels, num_outs=cfg.num_outs,
                 pooling_type=cfg.pooling_type, stride=cfg.stride)


NECKS = Table("neck", {S.FPNConfig: _fpn, S.SSDNeckConfig: _ssd_neck, S.BFPConfig: _bfp, S.MLFPNConfig: _mlfpn,
                       S.HRFPNConfig: _hrfpn})


def build_neck(cfg, in_channels: tuple[int, ...]) -> nn.Module:
    """The neck of ``model.neck`` on inputs of ``in_channels``; it exposes ``out_channels`` (one
    int per output level). None: no neck, the inputs pass unchanged."""
    if cfg is None:
        return NeckSequence([], tuple(in_channels))
    if not isinstance(cfg, tuple):
        return NECKS.build(cfg, tuple(in_channels), key="model.neck")
    necks, first = [], tuple(in_channels)
    for i, c in enumerate(cfg):
        necks.append(NECKS.build(c, tuple(in_channels), key=f"model.neck[{i}]"))
        in_channels = necks[-1].out_channels
    return NeckSequence(necks, first)
