"""Dense-head configs -> RetinaNet, FCOS, FSAF, SSD, GA-RetinaNet, RPN and GA-RPN heads."""
from __future__ import annotations

from torch import nn

from dettool.config import schema as S
from dettool.errors import ConfigError
from dettool.trainer.builder.losses import build_loss
from dettool.trainer.builder.table import Table
from dettool.trainer.builder.task_modules import ANCHOR_GENERATORS, ASSIGNERS, CODERS, SAMPLERS
from dettool.trainer.models.dense_heads.fcos_head import FCOSHead
from dettool.trainer.models.dense_heads.fsaf_head import FSAFHead
from dettool.trainer.models.dense_heads.ga_retina_head import GARetinaHead
from dettool.trainer.models.dense_heads.ga_rpn_head import GARPNHead
from dettool.trainer.models.dense_heads.retina_head import RetinaHead
from dettool.trainer.models.dense_heads.rpn_head import RPNHead
from dettool.trainer.models.dense_heads.ssd_head import SSDHead
from dettool.trainer.models.postprocess.nms import NMSSettings, ProposalSettings
from dettool.trainer.models.task_modules.delta_xywh_coder import DeltaXYWHCoder


def nms_settings(cfg: S.TestConfig) -> NMSSettings:
    """The model-side test-time settings of ``test``."""
    return NMSSettings(score_thr=cfg.score_thr, nms_pre=cfg.nms_pre, iou_thr=cfg.nms_iou_thr,
                       max_per_img=cfg.max_per_img, nms_type=cfg.nms_type, soft_nms_sigma=cfg.soft_nms_sigma,
                       soft_nms_min_score=cfg.soft_nms_min_score, min_bbox_size=cfg.min_bbox_size,
                       nms_pre_per_class=cfg.nms_pre_per_class)


def proposal_settings(cfg: S.ProposalConfig) -> ProposalSettings:
    return ProposalSettings(nms_pre=cfg.nms_pre, iou_thr=cfg.nms_iou_thr, max_per_img=cfg.max_per_img,
                            min_bbox_size=cfg.min_bbox_size)


def _check_levels(strides: tuple[int, ...], num_levels: int, key: str) -> None:
    if len(strides) != num_levels:
        raise ConfigError(f"{key}: {len(strides)} strides for {num_levels} neck levels")


def _uniform(level_channels: tuple[int, ...], key: str) -> int:
    """The one channel count of every input level, for a head whose convs are shared across levels."""
    channels = set(level_channels)
    if len(channels) != 1:
        raise ConfigError(f"{key}: the head shares its convs across levels and needs one channel count on "
                          f"every level, the neck gives {list(level_channels)}")
    return channels.pop()


def _anchor_modules(cfg, key: str) -> dict:
    """The task modules an anchor head's config names: anchors, box coder, assigner, sampler,
    box loss and ``allowed_border`` (keyword arguments of ``AnchorHead``)."""
    return dict(anchor_generator=ANCHOR_GENERATORS.build(cfg.anchor, key=f"{key}.anchor"),
                bbox_coder=CODERS.build(cfg.bbox_coder, key=f"{key}.bbox_coder"),
                assigner=ASSIGNERS.build(cfg.assigner, key=f"{key}.assigner"),
                sampler=SAMPLERS.build(cfg.sampler, key=f"{key}.sampler"),
                loss_bbox=build_loss(cfg.loss_bbox, f"{key}.loss_bbox"), allowed_border=cfg.allowed_border)


def _retina(cfg: S.RetinaHeadConfig, num_classes: int, level_channels: tuple[int, ...], test: S.TestConfig,
            key: str) -> RetinaHead:
    in_channels, num_levels = _uniform(level_channels, key), len(level_channels)
    _check_levels(cfg.anchor.strides, num_levels, f"{key}.anchor.strides")
    return RetinaHead(
        num_classes=num_classes, in_channels=in_channels, feat_channels=cfg.feat_channels,
        stacked_convs=cfg.stacked_convs, norm=cfg.norm, **_anchor_modules(cfg, key),
        loss_cls=build_loss(cfg.loss_cls, f"{key}.loss_cls"), reg_decoded_bbox=cfg.reg_decoded_bbox,
        test_cfg=nms_settings(test))


def _fcos(cfg: S.FCOSHeadConfig, num_classes: int, level_channels: tuple[int, ...], test: S.TestConfig,
          key: str) -> FCOSHead:
    in_channels, num_levels = _uniform(level_channels, key), len(level_channels)
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


def _ssd(cfg: S.SSDHeadConfig, num_classes: int, level_channels: tuple[int, ...], test: S.TestConfig,
         key: str) -> SSDHead:
    _check_levels(cfg.anchor.strides, len(level_channels), f"{key}.anchor.strides")
    return SSDHead(
        num_classes=num_classes, in_channels=level_channels, neg_pos_ratio=cfg.neg_pos_ratio,
        predictor_norm=cfg.predictor_norm, **_anchor_modules(cfg, key), test_cfg=nms_settings(test))


def _fsaf(cfg: S.FSAFHeadConfig, num_classes: int, level_channels: tuple[int, ...], test: S.TestConfig,
          key: str) -> FSAFHead:
    in_channels, num_levels = _uniform(level_channels, key), len(level_channels)
    _check_levels(cfg.anchor.strides, num_levels, f"{key}.anchor.strides")
    return FSAFHead(
        num_classes=num_classes, in_channels=in_channels, feat_channels=cfg.feat_channels,
        stacked_convs=cfg.stacked_convs, norm=cfg.norm, reg_bias=cfg.reg_bias, **_anchor_modules(cfg, key),
        loss_cls=build_loss(cfg.loss_cls, f"{key}.loss_cls"), test_cfg=nms_settings(test))


def _guided_anchor_args(cfg, key: str) -> dict:
    """The ``GuidedAnchorHead`` arguments of a GA head's config (GA-RetinaNet, GA-RPN)."""
    return dict(
        anchor_generator=ANCHOR_GENERATORS.build(cfg.square_anchor, key=f"{key}.square_anchor"),
        approx_generator=ANCHOR_GENERATORS.build(cfg.approx_anchor, key=f"{key}.approx_anchor"),
        octave_base_scale=cfg.approx_anchor.octave_base_scale,
        anchor_coder=DeltaXYWHCoder(target_means=cfg.anchor_coder.target_means,
                                    target_stds=cfg.anchor_coder.target_stds, wh_ratio_clip=1e-6),
        bbox_coder=CODERS.build(cfg.bbox_coder, key=f"{key}.bbox_coder"),
        ga_assigner=ASSIGNERS.build(cfg.ga_assigner, key=f"{key}.ga_assigner"),
        ga_sampler=SAMPLERS.build(cfg.ga_sampler, key=f"{key}.ga_sampler"),
        assigner=ASSIGNERS.build(cfg.assigner, key=f"{key}.assigner"),
        sampler=SAMPLERS.build(cfg.sampler, key=f"{key}.sampler"),
        loss_loc=build_loss(cfg.loss_loc, f"{key}.loss_loc"),
        loss_shape=build_loss(cfg.loss_shape, f"{key}.loss_shape"),
        loss_cls=build_loss(cfg.loss_cls, f"{key}.loss_cls"), loss_bbox=build_loss(cfg.loss_bbox, f"{key}.loss_bbox"),
        center_ratio=cfg.center_ratio, ignore_ratio=cfg.ignore_ratio, loc_filter_thr=cfg.loc_filter_thr,
        allowed_border=cfg.allowed_border, reg_decoded_bbox=cfg.reg_decoded_bbox)


def _ga_retina(cfg: S.GARetinaHeadConfig, num_classes: int, level_channels: tuple[int, ...], test: S.TestConfig,
               key: str) -> GARetinaHead:
    in_channels, num_levels = _uniform(level_channels, key), len(level_channels)
    _check_levels(cfg.square_anchor.strides, num_levels, f"{key}.square_anchor.strides")
    return GARetinaHead(num_classes=num_classes, in_channels=in_channels, feat_channels=cfg.feat_channels,
                        stacked_convs=cfg.stacked_convs, norm=cfg.norm, deform_groups=cfg.deform_groups,
                        test_cfg=nms_settings(test), **_guided_anchor_args(cfg, key))


DENSE_HEADS = Table("dense head", {S.RetinaHeadConfig: _retina, S.FCOSHeadConfig: _fcos, S.SSDHeadConfig: _ssd,
                                   S.FSAFHeadConfig: _fsaf, S.GARetinaHeadConfig: _ga_retina})


def build_dense_head(cfg, num_classes: int, level_channels: tuple[int, ...], test: S.TestConfig) -> nn.Module:
    """The dense head of ``model.bbox_head`` on neck levels of ``level_channels`` (one per level)."""
    key = "model.bbox_head"
    return DENSE_HEADS.build(cfg, num_classes, tuple(level_channels), test, key, key=key)


def _rpn(cfg: S.RPNHeadConfig, in_channels: int, num_levels: int, key: str) -> RPNHead:
    _check_levels(cfg.anchor.strides, num_levels, f"{key}.anchor.strides")
    return RPNHead(
        in_channels=in_channels, feat_channels=cfg.feat_channels, num_convs=cfg.num_convs,
        **_anchor_modules(cfg, key), loss_cls=build_loss(cfg.loss_cls, f"{key}.loss_cls"),
        reg_decoded_bbox=cfg.reg_decoded_bbox, train_proposals=proposal_settings(cfg.train_proposals),
        test_proposals=proposal_settings(cfg.test_proposals))


def _ga_rpn(cfg: S.GARPNHeadConfig, in_channels: int, num_levels: int, key: str) -> GARPNHead:
    _check_levels(cfg.square_anchor.strides, num_levels, f"{key}.square_anchor.strides")
    return GARPNHead(in_channels=in_channels, feat_channels=cfg.feat_channels, deform_groups=cfg.deform_groups,
                     train_proposals=proposal_settings(cfg.train_proposals),
                     test_proposals=proposal_settings(cfg.test_proposals), **_guided_anchor_args(cfg, key))


RPN_HEADS = Table("proposal head", {S.RPNHeadConfig: _rpn, S.GARPNHeadConfig: _ga_rpn})


def build_rpn_head(cfg, in_channels: int, num_levels: int) -> nn.Module:
    """The proposal head of ``model.rpn_head`` (RPN or GA-RPN), with its training and test proposal settings."""
    key = "model.rpn_head"
    return RPN_HEADS.build(cfg, in_channels, num_levels, key, key=key)
