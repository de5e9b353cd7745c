"""Backbone configs -> backbones, with their stage plugins."""
from __future__ import annotations

import re
from functools import partial

from torch import nn

from dettool.config import schema as S
from dettool.trainer.builder.table import Table
from dettool.trainer.models.backbones.context_block import ContextBlock
from dettool.trainer.models.backbones.conv_ws import standardize_convs
from dettool.trainer.models.backbones.deform_conv import DeformConv2dPack
from dettool.trainer.models.backbones.generalized_attention import GeneralizedAttention
from dettool.trainer.models.backbones.hrnet import HRNet, HRStage
from dettool.trainer.models.backbones.resnet import ResNet
from dettool.trainer.models.backbones.root_resnet import RootResNet
from dettool.trainer.models.backbones.ssd_vgg import SSDVGG
from dettool.trainer.models.backbones.stage_plugins import StagePlugin


def _dcn(cfg: S.DCNPluginConfig) -> StagePlugin:
    return StagePlugin(position=cfg.position, stages=cfg.stages,
                       build=partial(DeformConv2dPack.replacing, modulated=cfg.modulated,
                                     deform_groups=cfg.deform_groups))


def _context_block(cfg: S.ContextBlockPluginConfig) -> StagePlugin:
    return StagePlugin(position=cfg.position, stages=cfg.stages,
                       build=partial(ContextBlock, ratio=cfg.ratio, pooling_type=cfg.pooling_type,
                                     fusion_types=cfg.fusion_types))


def _generalized_attention(cfg: S.GeneralizedAttentionPluginConfig) -> StagePlugin:
    return StagePlugin(position=cfg.position, stages=cfg.stages,
                       build=partial(GeneralizedAttention, num_heads=cfg.num_heads, attention_type=cfg.attention_type,
                                     kv_stride=cfg.kv_stride, q_stride=cfg.q_stride,
                                     position_embedding_dim=cfg.position_embedding_dim,
                                     position_magnitude=cfg.position_magnitude))


PLUGINS = Table("backbone plugin", {S.DCNPluginConfig: _dcn, S.ContextBlockPluginConfig: _context_block,
                                    S.GeneralizedAttentionPluginConfig: _generalized_attention})


# A ResNet's own convs (stem, blocks, shortcuts): those MMDetection's conv_cfg builds; not its plugins' convs
RESNET_CONVS = re.compile(r"conv1|layer\d\.\d+\.(conv\d|downsample\.0)")


def _resnet(cfg: S.ResNetConfig) -> ResNet:
    plugins = [PLUGINS.build(p, key=f"model.backbone.plugins[{i}]") for i, p in enumerate(cfg.plugins)]
    backbone = ResNet(depth=cfg.depth, groups=cfg.groups, width_per_group=cfg.width_per_group, style=cfg.style,
                      norm=cfg.norm, gn_groups=cfg.gn_groups, norm_eval=cfg.norm_eval,
                      frozen_stages=cfg.frozen_stages, out_indices=cfg.out_indices, strides=cfg.strides,
                      dilations=cfg.dilations, plugins=plugins, weights=cfg.weights)
    return standardize_convs(backbone, RESNET_CONVS.fullmatch) if cfg.conv == "ws" else backbone


def _ssd_vgg(cfg: S.SSDVGGConfig) -> SSDVGG:
    return SSDVGG(depth=cfg.depth, with_last_pool=cfg.with_last_pool, ceil_mode=cfg.ceil_mode,
                  out_feature_indices=cfg.out_feature_indices, base_channels=cfg.base_channels, norm=cfg.norm,
                  weights=cfg.weights)


def _root_resnet(cfg: S.RootResNetConfig) -> RootResNet:
    return RootResNet(depth=cfg.depth, out_indices=cfg.out_indices, base_channels=cfg.base_channels,
                      norm=cfg.norm, weights=cfg.weights)


def _hrnet(cfg: S.HRNetConfig) -> HRNet:
    stages = tuple(HRStage(num_modules=s.num_modules, block=s.block, num_blocks=s.num_blocks,
                           num_channels=s.num_channels) for s in (cfg.stage1, cfg.stage2, cfg.stage3, cfg.stage4))
    return HRNet(stages=stages, norm=cfg.norm, gn_groups=cfg.gn_groups, norm_eval=cfg.norm_eval, weights=cfg.weights)


BACKBONES = Table("backbone", {S.ResNetConfig: _resnet, S.SSDVGGConfig: _ssd_vgg, S.RootResNetConfig: _root_resnet,
                               S.HRNetConfig: _hrnet})


def build_backbone(cfg) -> nn.Module:
    """The backbone of ``model.backbone``; it exposes ``out_channels`` (one int per output level)."""
    return BACKBONES.build(cfg, key="model.backbone")
