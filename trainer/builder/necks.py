"""Neck configs -> necks; a sequence of neck configs becomes a ``NeckSequence``."""
from __future__ import annotations

from torch import nn

from dettool.config import schema as S
from dettool.trainer.builder.table import Table
from dettool.trainer.models.backbones.norm import norm_layer
from dettool.trainer.models.necks.fpn import FPN
from dettool.trainer.models.necks.sequence import NeckSequence
from dettool.trainer.models.necks.ssd_neck import SSDNeck


def _fpn(cfg: S.FPNConfig, in_channels: tuple[int, ...]) -> FPN:
    return FPN(in_channels=in_channels, out_channels=cfg.out_channels, num_outs=cfg.num_outs,
               add_extra_convs=cfg.add_extra_convs, relu_before_extra_convs=cfg.relu_before_extra_convs,
               norm=None if cfg.norm == "none" else norm_layer(cfg.norm))


def _ssd_neck(cfg: S.SSDNeckConfig, in_channels: tuple[int, ...]) -> SSDNeck:
    return SSDNeck(in_channels=in_channels, out_channels=cfg.out_channels, level_strides=cfg.level_strides,
                   level_paddings=cfg.level_paddings, l2_norm_scale=cfg.l2_norm_scale,
                   last_kernel_size=cfg.last_kernel_size)


NECKS = Table("neck", {S.FPNConfig: _fpn, S.SSDNeckConfig: _ssd_neck})


def build_neck(cfg, in_channels: tuple[int, ...]) -> nn.Module:
    """The neck of ``model.neck`` on inputs of ``in_channels``; it exposes ``out_channels`` (one
    int per output level)."""
    if not isinstance(cfg, tuple):
        return NECKS.build(cfg, tuple(in_channels), key="model.neck")
    necks = []
    for i, c in enumerate(cfg):
        necks.append(NECKS.build(c, tuple(in_channels), key=f"model.neck[{i}]"))
        in_channels = necks[-1].out_channels
    return NeckSequence(necks)
