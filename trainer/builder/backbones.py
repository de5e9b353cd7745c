"""Backbone configs -> backbones, with their stage plugins."""
from __future__ import annotations

from functools import partial

from torch import nn

from dettool.config import schema as S
from dettool.trainer.builder.table import Table
from dettool.trainer.models.backbones.deform_conv import DeformConv2dPack
from dettool.trainer.models.backbones.resnet import ResNet
from dettool.trainer.models.backbones.root_resnet import RootResNet
from dettool.trainer.models.backbones.ssd_vgg import SSDVGG
from dettool.trainer.models.backbones.stage_plugins import StagePlugin


def _dcn(cfg: S.DCNPluginConfig) -> StagePlugin:
    return StagePlugin(position=cfg.position, stages=cfg.stages,
                       build=partial(DeformConv2dPack.replacing, modulated=cfg.modulated,
                                     deform_groups=cfg.deform_groups))


PLUGINS = Table("backbone plugin", {S.DCNPluginConfig: _dcn})


def _resnet(cfg: S.ResNetConfig) -> ResNet:
    plugins = [PLUGINS.build(p, key=f"model.backbone.plugins[{i}]") for i, p in enumerate(cfg.plugins)]
    return ResNet(depth=cfg.depth, groups=cfg.groups, width_per_group=cfg.width_per_group, style=cfg.style,
                  norm=cfg.norm, gn_groups=cfg.gn_groups, norm_eval=cfg.norm_eval, frozen_stages=cfg.frozen_stages,
                  out_indices=cfg.out_indices, strides=cfg.strides, dilations=cfg.dilations, plugins=plugins,
                  weights=cfg.weights)


def _ssd_vgg(cfg: S.SSDVGGConfig) -> SSDVGG:
    return SSDVGG(depth=cfg.depth, with_last_pool=cfg.with_last_pool, ceil_mode=cfg.ceil_mode,
                  out_feature_indices=cfg.out_feature_indices, base_channels=cfg.base_channels, norm=cfg.norm,
                  weights=cfg.weights)


def _root_resnet(cfg: S.RootResNetConfig) -> RootResNet:
    return RootResNet(depth=cfg.depth, out_indices=cfg.out_indices, base_channels=cfg.base_channels,
                      norm=cfg.norm, weights=cfg.weights)


BACKBONES = Table("backbone", {S.ResNetConfig: _resnet, S.SSDVGGConfig: _ssd_vgg, S.RootResNetConfig: _root_resnet})


def build_backbone(cfg) -> nn.Module:
    """The backbone of ``model.backbone``; it exposes ``out_channels`` (one int per output level)."""
    return BACKBONES.build(cfg, key="model.backbone")
