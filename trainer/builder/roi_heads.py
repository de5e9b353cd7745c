"""RoI-head configs -> standard, Double-Head, cascade, R-FCN, Mask Scoring, Grid and Hybrid Task Cascade RoI heads,
their box, mask, grid and semantic heads."""
from __future__ import annotations

from torch import nn

from dettool.config import schema as S
from dettool.errors import ConfigError
from dettool.trainer.builder.dense_heads import nms_settings
from dettool.trainer.builder.losses import build_loss
from dettool.trainer.builder.table import Table
from dettool.trainer.builder.task_modules import ASSIGNERS, SAMPLERS
from dettool.trainer.models.backbones.conv_ws import standardize_convs
from dettool.trainer.models.roi_extractors.multi_level_roi_align import MultiLevelRoIAlign
from dettool.trainer.models.roi_heads.bbox_head import ConvFCBBoxHead
from dettool.trainer.models.roi_heads.cascade_roi_head import CascadeRoIHead
from dettool.trainer.models.roi_heads.double_bbox_head import DoubleConvFCBBoxHead
from dettool.trainer.models.roi_heads.double_roi_head import DoubleHeadRoIHead
from dettool.trainer.models.roi_heads.fused_semantic_head import FusedSemanticHead
from dettool.trainer.models.roi_heads.grid_head import GridHead
from dettool.trainer.models.roi_heads.grid_roi_head import GridRoIHead
from dettool.trainer.models.roi_heads.htc_mask_head import HTCMaskHead
from dettool.trainer.models.roi_heads.htc_roi_head import HybridTaskCascadeRoIHead
from dettool.trainer.models.roi_heads.mask_head import FCNMaskHead
from dettool.trainer.models.roi_heads.mask_scoring_roi_head import MaskScoringRoIHead
from dettool.trainer.models.roi_heads.maskiou_head import MaskIoUHead
from dettool.trainer.models.roi_heads.rfcn_head import PSRoIBBoxHead, RFCNRoIHead
from dettool.trainer.models.roi_heads.standard_roi_head import MaskBranch, StandardRoIHead
from dettool.trainer.models.task_modules.delta_xywh_coder import DeltaXYWHCoder


def build_roi_extractor(cfg: S.RoIExtractorConfig) -> MultiLevelRoIAlign:
    return MultiLevelRoIAlign(output_size=cfg.output_size, strides=cfg.strides, sampling_ratio=cfg.sampling_ratio,
                              finest_scale=cfg.finest_scale, aligned=cfg.aligned)


def _bbox_head_args(cfg, num_classes: int, key: str) -> dict:
    return dict(num_classes=num_classes, reg_class_agnostic=cfg.reg_class_agnostic,
                bbox_coder=DeltaXYWHCoder(target_stds=cfg.target_stds),
                loss_cls=build_loss(cfg.loss_cls, f"{key}.loss_cls"), loss_bbox=build_loss(cfg.loss_bbox,
                                                                                           f"{key}.loss_bbox"))


def _conv_fc(cfg: S.ConvFCBBoxHeadConfig, num_classes: int, in_channels: int, roi_feat_size: int,
             key: str) -> ConvFCBBoxHead:
    head = ConvFCBBoxHead(in_channels=in_channels, roi_feat_size=roi_feat_size, num_shared_convs=cfg.num_shared_convs,
                          num_shared_fcs=cfg.num_shared_fcs, conv_out_channels=cfg.conv_out_channels,
                          fc_out_channels=cfg.fc_out_channels, norm=cfg.norm, with_reg=cfg.with_reg,
                          **_bbox_head_args(cfg, num_classes, key))
    if cfg.conv == "ws":
        standardize_convs(head.shared_convs)
    return head


def _double_conv_fc(cfg: S.DoubleConvFCBBoxHeadConfig, num_classes: int, in_channels: int, roi_feat_size: int,
                    key: str) -> DoubleConvFCBBoxHead:
    return DoubleConvFCBBoxHead(in_channels=in_channels, roi_feat_size=roi_feat_size, num_convs=cfg.num_convs,
                                num_fcs=cfg.num_fcs, conv_out_channels=cfg.conv_out_channels,
                                fc_out_channels=cfg.fc_out_channels, norm=cfg.norm,
                                **_bbox_head_args(cfg, num_classes, key))


BBOX_HEADS = Table("RoI box head", {S.ConvFCBBoxHeadConfig: _conv_fc, S.DoubleConvFCBBoxHeadConfig: _double_conv_fc})


def build_bbox_head(cfg, num_classes: int, in_channels: int, roi_feat_size: int, key: str) -> nn.Module:
    return BBOX_HEADS.build(cfg, num_classes, in_channels, roi_feat_size, key, key=key)


def build_mask_branch(cfg: S.MaskHeadConfig | None, num_classes: int, in_channels: int,
                      test: S.TestConfig, htc_conv_res: bool | None = None) -> MaskBranch | None:
    """The mask branch of ``cfg``; ``htc_conv_res`` not None: an HTC mask head, with or without
    the 1x1 conv of the previous stage's features."""
    if cfg is None:
        return None
    args = dict(num_classes=num_classes, in_channels=in_channels, conv_out_channels=cfg.conv_out_channels,
                num_convs=cfg.num_convs, norm=cfg.norm, roi_feat_size=cfg.roi_extractor.output_size,
                class_agnostic=cfg.class_agnostic, loss_weight=cfg.loss_weight)
    head = FCNMaskHead(**args) if htc_conv_res is None else HTCMaskHead(with_conv_res=htc_conv_res, **args)
    return MaskBranch(build_roi_extractor(cfg.roi_extractor), head, mask_thr=test.mask_thr, mask_paste=test.mask_paste)


def _standard_args(cfg, num_classes: int, in_channels: int, test: S.TestConfig, key: str) -> dict:
    return dict(roi_extractor=build_roi_extractor(cfg.roi_extractor),
                bbox_head=build_bbox_head(cfg.bbox_head, num_classes, in_channels, cfg.roi_extractor.output_size,
                                          f"{key}.bbox_head"),
                assigner=ASSIGNERS.build(cfg.assigner, key=f"{key}.assigner"),
                sampler=SAMPLERS.build(cfg.sampler, key=f"{key}.sampler"),
                add_gt_as_proposals=cfg.sampler.add_gt_as_proposals,
                mask_branch=build_mask_branch(cfg.mask_head, num_classes, in_channels,
                                              test), test_cfg=nms_settings(test))


def _standard(cfg: S.StandardRoIHeadConfig, num_classes: int, in_channels: int, test: S.TestConfig,
              key: str) -> StandardRoIHead:
    return StandardRoIHead(**_standard_args(cfg, num_classes, in_channels, test, key))


def _double_head(cfg: S.DoubleHeadRoIHeadConfig, num_classes: int, in_channels: int, test: S.TestConfig,
                 key: str) -> DoubleHeadRoIHead:
    return DoubleHeadRoIHead(reg_roi_scale_factor=cfg.reg_roi_scale_factor,
                             **_standard_args(cfg, num_classes, in_channels, test, key))


def _mask_scoring(cfg: S.MaskScoringRoIHeadConfig, num_classes: int, in_channels: int, test: S.TestConfig,
                  key: str) -> MaskScoringRoIHead:
    m = cfg.mask_iou_head
    head = MaskIoUHead(num_classes=num_classes, in_channels=in_channels,
                       roi_feat_size=cfg.mask_head.roi_extractor.output_size, num_convs=m.num_convs, num_fcs=m.num_fcs,
                       conv_out_channels=m.conv_out_channels, fc_out_channels=m.fc_out_channels,
                       loss_weight=m.loss_weight, mask_thr_binary=m.mask_thr_binary)
    return MaskScoringRoIHead(mask_iou_head=head, **_standard_args(cfg, num_classes, in_channels, test, key))


def _grid(cfg: S.GridRoIHeadConfig, num_classes: int, in_channels: int, test: S.TestConfig,
          key: str) -> GridRoIHead:
    g = cfg.grid_head
    head = GridHead(in_channels=in_channels, roi_feat_size=cfg.grid_roi_extractor.output_size,
                    grid_points=g.grid_points, num_convs=g.num_convs, point_feat_channels=g.point_feat_channels,
                    num_groups=g.num_groups, loss_weight=g.loss_weight)
    return GridRoIHead(grid_roi_extractor=build_roi_extractor(cfg.grid_roi_extractor), grid_head=head,
                       pos_radius=cfg.pos_radius, max_num_grid=cfg.max_num_grid, jitter_amplitude=cfg.jitter_amplitude,
                       **_standard_args(cfg, num_classes, in_channels, test, key))


def _cascade_args(cfg: S.CascadeRoIHeadConfig, num_classes: int, in_channels: int, test: S.TestConfig,
                  key: str, masks: list[MaskBranch] | None) -> dict:
    size = cfg.roi_extractor.output_size
    stages = [f"{key}.stages[{i}]" for i in range(len(cfg.stages))]
    return dict(
        roi_extractor=build_roi_extractor(cfg.roi_extractor),
        bbox_heads=[build_bbox_head(st.bbox_head, num_classes, in_channels, size, f"{k}.bbox_head")
                    for st, k in zip(cfg.stages, stages)],
        assigners=[ASSIGNERS.build(st.assigner, key=f"{k}.assigner") for st, k in zip(cfg.stages, stages)],
        samplers=[SAMPLERS.build(st.sampler, key=f"{k}.sampler") for st, k in zip(cfg.stages, stages)],
        add_gt_as_proposals=[st.sampler.add_gt_as_proposals for st in cfg.stages],
        stage_loss_weights=[st.loss_weight for st in cfg.stages], mask_branches=masks, test_cfg=nms_settings(test))


def _cascade(cfg: S.CascadeRoIHeadConfig, num_classes: int, in_channels: int, test: S.TestConfig,
             key: str) -> CascadeRoIHead:
    masks = ([build_mask_branch(cfg.mask_head, num_classes, in_channels, test) for _ in cfg.stages]
             if cfg.mask_head is not None else None)
    return CascadeRoIHead(**_cascade_args(cfg, num_classes, in_channels, test, key, masks))


def _htc(cfg: S.HTCRoIHeadConfig, num_classes: int, in_channels: int, test: S.TestConfig,
         key: str) -> HybridTaskCascadeRoIHead:
    if cfg.mask_info_flow and cfg.mask_head.conv_out_channels != in_channels:
        raise ConfigError(f"{key}.mask_head.conv_out_channels: the mask information flow adds a stage's mask "
                          f"features to the RoI features: it must equal the neck's channels ({in_channels}), got "
                          f"{cfg.mask_head.conv_out_channels}")
    masks = [build_mask_branch(cfg.mask_head, num_classes, in_channels, test, htc_conv_res=cfg.mask_info_flow and s > 0)
             for s in range(len(cfg.stages))]
    sem = cfg.semantic_head
    semantic = None if sem is None else FusedSemanticHead(
        num_ins=sem.num_ins, fusion_level=sem.fusion_level, in_channels=in_channels,
        conv_out_channels=sem.conv_out_channels, num_convs=sem.num_convs, num_classes=sem.num_classes,
        loss_weight=sem.loss_weight, seg_stride=cfg.semantic_roi_extractor.strides[0])
    return HybridTaskCascadeRoIHead(
        semantic_head=semantic, semantic_roi_extractor=build_roi_extractor(cfg.semantic_roi_extractor) if sem else None,
        interleaved=cfg.interleaved, mask_info_flow=cfg.mask_info_flow,
        **_cascade_args(cfg, num_classes, in_channels, test, key, masks))


def _rfcn(cfg: S.RFCNRoIHeadConfig, num_classes: int, in_channels: int, test: S.TestConfig,
          key: str) -> RFCNRoIHead:
    head = PSRoIBBoxHead(in_channels=in_channels, feat_channels=cfg.feat_channels, output_size=cfg.output_size,
                         stride=cfg.stride, sampling_ratio=cfg.sampling_ratio,
                         **_bbox_head_args(cfg, num_classes, key))
    return RFCNRoIHead(bbox_head=head, assigner=ASSIGNERS.build(cfg.assigner, key=f"{key}.assigner"),
                       sampler=SAMPLERS.build(cfg.sampler, key=f"{key}.sampler"),
                       add_gt_as_proposals=cfg.sampler.add_gt_as_proposals, test_cfg=nms_settings(test))


ROI_HEADS = Table("RoI head", {S.StandardRoIHeadConfig: _standard, S.DoubleHeadRoIHeadConfig: _double_head,
                               S.CascadeRoIHeadConfig: _cascade, S.RFCNRoIHeadConfig: _rfcn,
                               S.MaskScoringRoIHeadConfig: _mask_scoring, S.GridRoIHeadConfig: _grid,
                               S.HTCRoIHeadConfig: _htc})


def build_roi_head(cfg, num_classes: int, in_channels: int, test: S.TestConfig) -> nn.Module:
    """The RoI head of ``model.roi_head`` on neck levels of ``in_channels``."""
    key = "model.roi_head"
    return ROI_HEADS.build(cfg, num_classes, in_channels, test, key, key=key)
