"""Model configs -> detectors: backbone, neck and heads put together."""
from __future__ import annotations

from torch import nn

from dettool.config import schema as S
from dettool.errors import ConfigError
from dettool.trainer.builder.backbones import build_backbone
from dettool.trainer.builder.dense_heads import build_dense_head, build_rpn_head
from dettool.trainer.builder.necks import build_neck
from dettool.trainer.builder.roi_heads import build_roi_head
from dettool.trainer.builder.table import Table
from dettool.trainer.models.detectors.single_stage import SingleStageDetector
from dettool.trainer.models.detectors.two_stage import TwoStageDetector


def _uniform(neck: nn.Module) -> int:
    """The neck's channel count, which must be equal on every level (heads shared across levels)."""
    channels = set(neck.out_channels)
    if len(channels) != 1:
        raise ConfigError(f"model.neck: heads need one channel count on every level, the neck gives "
                          f"{list(neck.out_channels)}")
    return channels.pop()


def _features(m) -> tuple[nn.Module, nn.Module, int, int]:
    """Backbone, neck, the neck's channels (equal on every level) and its number of levels."""
    backbone = build_backbone(m.backbone)
    neck = build_neck(m.neck, backbone.out_channels)
    return backbone, neck, _uniform(neck), len(neck.out_channels)


def _single_stage(m: S.SingleStageConfig, test: S.TestConfig) -> SingleStageDetector:
    backbone = build_backbone(m.backbone)
    neck = build_neck(m.neck, backbone.out_channels)
    head = build_dense_head(m.bbox_head, m.num_classes, tuple(neck.out_channels), test)
    return SingleStageDetector(backbone, neck, head)


def _rpn(m: S.RPNConfig, test: S.TestConfig) -> SingleStageDetector:
    backbone, neck, channels, levels = _features(m)
    return SingleStageDetector(backbone, neck, build_rpn_head(m.rpn_head, channels, levels))


def _picked(neck: nn.Module, levels: tuple[int, ...] | None, key: str) -> tuple[int, int]:
    """The one channel count and the number of the neck levels ``levels`` picks (all when None)."""
    all_channels = tuple(neck.out_channels)
    if levels is None:
        levels = tuple(range(len(all_channels)))
    if levels[-1] >= len(all_channels):
        raise ConfigError(f"model.{key}: level {levels[-1]} is not one of the {len(all_channels)} levels the "
                          f"neck gives (the backbone's with neck: null)")
    channels = {all_channels[i] for i in levels}
    if len(channels) != 1:
        raise ConfigError(f"model.{key}: heads need one channel count on every level they read, levels "
                          f"{list(levels)} have {[all_channels[i] for i in levels]}")
    return channels.pop(), len(levels)


def _two_stage(m: S.TwoStageConfig, test: S.TestConfig) -> TwoStageDetector:
    backbone = build_backbone(m.backbone)
    neck = build_neck(m.neck, backbone.out_channels)
    rpn = None
    if m.rpn_head is not None:
        rpn = build_rpn_head(m.rpn_head, *_picked(neck, m.rpn_levels, "rpn_levels"))
    roi_channels, _ = _picked(neck, m.roi_levels, "roi_levels")
    return TwoStageDetector(backbone, neck, rpn, build_roi_head(m.roi_head, m.num_classes, roi_channels, test),
                            rpn_levels=m.rpn_levels, roi_levels=m.roi_levels)


DETECTORS = Table("detector", {S.SingleStageConfig: _single_stage, S.RPNConfig: _rpn,
                               S.TwoStageConfig: _two_stage})


def build_model(cfg: S.Config) -> nn.Module:
    """Detector for ``cfg.model`` (weights random, or the backbone's from ``backbone.weights``)."""
    return DETECTORS.build(cfg.model, cfg.test, key="model.type")
