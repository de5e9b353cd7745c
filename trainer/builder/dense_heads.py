"""Dense-head configs -> RetinaNet, FCOS and RPN heads."""
from __future__ import annotations

from torch import nn

from dettool.config import schema as S
from dettool.errors import ConfigError
from dettool.trainer.builder.losses import build_loss
from dettool.trainer.builder.table import Table
from dettool.trainer.builder.task_modules import ANCHOR_GENERATORS, ASSIGNERS, CODERS, SAMPLERS
from dettool.trainer.models.dense_heads.fcos_head import FCOSHead
from dettool.trainer.models.dense_heads.retina_head import RetinaHead
from dettool.trainer.models.dense_heads.rpn_head import RPNHead
from dettool.trainer.models.postprocess.nms import NMSSettings, ProposalSettings


def nms_settings(cfg: S.TestConfig) -> NMSSettings:
    """The model-side test-time settings of ``test``."""
    return NMSSettings(score_thr=cfg.score_thr, nms_pre=cfg.nms_pre, iou_thr=cfg.nms_iou_thr,
                       max_per_img=cfg.max_per_img, nms_type=cfg.nms_type, soft_nms_sigma=cfg.soft_nms_sigma,
                       soft_nms_min_score=cfg.soft_nms_min_score, min_bbox_size=cfg.min_bbox_size)


def proposal_settings(cfg: S.ProposalConfig) -> ProposalSettings:
    return ProposalSettings(nms_pre=cfg.nms_pre, iou_thr=cfg.nms_iou_thr, max_per_img=cfg.max_per_img,
                            min_bbox_size=cfg.min_bbox_size)


def _check_levels(strides: tuple[int, ...], num_levels: int, key: str) -> None:
    if len(strides) != num_levels:
        raise ConfigError(f"{key}: {len(strides)} strides for {num_levels} neck levels")


def _retina(cfg: S.RetinaHeadConfig, num_classes: int, in_channels: int, num_levels: int, test: S.TestConfig,
            key: str) -> RetinaHead:
    _check_levels(cfg.anchor.strides, num_levels, f"{key}.anchor.strides")
    return RetinaHead(
        num_classes=num_classes, in_channels=in_channels, feat_channels=cfg.feat_channels,
        stacked_convs=cfg.stacked_convs, norm=cfg.norm,
        anchor_generator=ANCHOR_GENERATORS.build(cfg.anchor, key=f"{key}.anchor"),
        bbox_coder=CODERS.build(cfg.bbox_coder, key=f"{key}.bbox_coder"),
        assigner=ASSIGNERS.build(cfg.assigner, key=f"{key}.assigner"),
        sampler=SAMPLERS.build(cfg.sampler, key=f"{key}.sampler"),
        loss_cls=build_loss(cfg.loss_cls, f"{key}.loss_cls"), loss_bbox=build_loss(cfg.loss_bbox, f"{key}.loss_bbox"),
        allowed_border=cfg.allowed_border, reg_decoded_bbox=cfg.reg_decoded_bbox, test_cfg=nms_settings(test))


def _fcos(cfg: S.FCOSHeadConfig, num_classes: int, in_channels: int, num_levels: int, test: S.TestConfig,
          key: str) -> FCOSHead:
    _check_levels(cfg.strides, num_levels, f"{key}.strides")
    return FCOSHead(
        num_classes=num_classes, in_channels=in_channels, feat_channels=cfg.feat_channels,
        stacked_convs=cfg.stacked_convs, norm=cfg.norm, conv_bias=cfg.conv_bias, strides=cfg.strides,
        regress_ranges=cfg.regress_ranges,
        center_sampling=cfg.center_sampling, center_sample_radius=cfg.center_sample_radius,
        norm_on_bbox=cfg.norm_on_bbox, centerness_on_reg=cfg.centerness_on_reg, point_offset=cfg.point_offset,
        stride_from_input=cfg.stride_from_input, test_score=cfg.test_score,
        loss_cls=build_loss(cfg.loss_cls, f"{key}.loss_cls"), loss_bbox=build_loss(cfg.loss_bbox, f"{key}.loss_bbox"),
        loss_centerness=build_loss(cfg.loss_centerness, f"{key}.loss_centerness"), test_cfg=nms_settings(test))


DENSE_HEADS = Table("dense head", {S.RetinaHeadConfig: _retina, S.FCOSHeadConfig: _fcos})


def build_dense_head(cfg, num_classes: int, in_channels: int, num_levels: int, test: S.TestConfig) -> nn.Module:
    """The dense head of ``model.bbox_head`` on ``num_levels`` neck levels of ``in_channels``."""
    key = "model.bbox_head"
    return DENSE_HEADS.build(cfg, num_classes, in_channels, num_levels, test, key, key=key)


def build_rpn_head(cfg: S.RPNHeadConfig, in_channels: int, num_levels: int) -> RPNHead:
    """The RPN of ``model.rpn_head``, with its training and test proposal settings."""
    key = "model.rpn_head"
    _check_levels(cfg.anchor.strides, num_levels, f"{key}.anchor.strides")
    return RPNHead(
        in_channels=in_channels, feat_channels=cfg.feat_channels, num_convs=cfg.num_convs,
        anchor_generator=ANCHOR_GENERATORS.build(cfg.anchor, key=f"{key}.anchor"),
        bbox_coder=CODERS.build(cfg.bbox_coder, key=f"{key}.bbox_coder"),
        assigner=ASSIGNERS.build(cfg.assigner, key=f"{key}.assigner"),
        sampler=SAMPLERS.build(cfg.sampler, key=f"{key}.sampler"),
        loss_cls=build_loss(cfg.loss_cls, f"{key}.loss_cls"), loss_bbox=build_loss(cfg.loss_bbox, f"{key}.loss_bbox"),
        allowed_border=cfg.allowed_border, reg_decoded_bbox=cfg.reg_decoded_bbox,
        train_proposals=proposal_settings(cfg.train_proposals), test_proposals=proposal_settings(cfg.test_proposals))
