"""The one place where config objects become constructor calls.

Models and data classes take plain typed arguments and never see a config object. The explicit
mappings below are the whole "registry": a config ``type`` string names a key here.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from dettool.config import schema as S
from dettool.data.coco import CocoDetection, TransformSpec
from dettool.data.loader import Collate, EpochSampler
from dettool.data.proposals import load_proposals
from dettool.data.transforms import ScaleSpec
from dettool.errors import ConfigError, DataError
from dettool.trainer.models import losses as L
from dettool.trainer.models.backbones.norm import norm_layer
from dettool.trainer.models.backbones.resnet import ResNet
from dettool.trainer.models.dense_heads.base_dense_head import TestSettings
from dettool.trainer.models.dense_heads.fcos_head import FCOSHead
from dettool.trainer.models.dense_heads.retina_head import RetinaHead
from dettool.trainer.models.dense_heads.rpn_head import ProposalSettings, RPNHead, SigmoidBinaryLoss
from dettool.trainer.models.detectors.single_stage import SingleStageDetector
from dettool.trainer.models.detectors.two_stage import TwoStageDetector
from dettool.trainer.models.roi_extractors.multi_level_roi_align import MultiLevelRoIAlign
from dettool.trainer.models.roi_heads.bbox_head import ConvFCBBoxHead
from dettool.trainer.models.roi_heads.cascade_roi_head import CascadeRoIHead
from dettool.trainer.models.roi_heads.mask_head import FCNMaskHead
from dettool.trainer.models.roi_heads.standard_roi_head import MaskBranch, StandardRoIHead
from dettool.trainer.models.necks.fpn import FPN
from dettool.trainer.models.task_modules.anchor_generator import AnchorGenerator
from dettool.trainer.models.task_modules.delta_xywh_coder import DeltaXYWHCoder
from dettool.trainer.models.task_modules.max_iou_assigner import MaxIoUAssigner
from dettool.trainer.models.task_modules.ohem_sampler import OHEMSampler
from dettool.trainer.models.task_modules.samplers import PseudoSampler, RandomSampler

LOSSES = {S.FocalLossConfig: lambda c: L.FocalLoss(c.gamma, c.alpha, c.weight),
          S.SmoothL1LossConfig: lambda c: L.SmoothL1Loss(c.beta, c.weight),
          S.L1LossConfig: lambda c: L.L1Loss(c.weight),
          S.IoULossConfig: lambda c: L.IoULoss(c.mode, c.weight),
          S.GIoULossConfig: lambda c: L.GIoULoss(c.weight),
          S.BCELossConfig: lambda c: L.BCEWithLogitsLoss(c.weight),
          S.CrossEntropyLossConfig: lambda c: L.CrossEntropyLoss(c.weight)}


def build_loss(cfg) -> nn.Module:
    return LOSSES[type(cfg)](cfg)


def build_backbone(cfg: S.ResNetConfig) -> ResNet:
    if cfg.depth not in (18, 34, 50, 101):
        raise ConfigError(f"model.backbone.depth: {cfg.depth} is not one of 18, 34, 50, 101")
    return ResNet(depth=cfg.depth, groups=cfg.groups, width_per_group=cfg.width_per_group, norm=cfg.norm,
                  gn_groups=cfg.gn_groups, norm_eval=cfg.norm_eval, frozen_stages=cfg.frozen_stages,
                  out_indices=cfg.out_indices, dcn_stages=cfg.dcn_stages, dcn_modulated=cfg.dcn_modulated,
                  weights=cfg.weights)


def build_neck(cfg: S.FPNConfig, in_channels: tuple[int, ...]) -> FPN:
    norm = None if cfg.norm == "none" else norm_layer(cfg.norm)
    return FPN(in_channels, cfg.out_channels, cfg.num_outs, cfg.add_extra_convs, cfg.relu_before_extra_convs, norm)


def test_settings(cfg: S.TestConfig) -> TestSettings:
    return TestSettings(cfg.score_thr, cfg.nms_pre, cfg.nms_iou_thr, cfg.max_per_img, cfg.nms_type,
                        cfg.soft_nms_sigma, cfg.soft_nms_min_score)


def build_head(cfg, num_classes: int, in_channels: int, test_cfg: S.TestConfig, num_levels: int) -> nn.Module:
    if isinstance(cfg, S.RetinaHeadConfig):
        if len(cfg.anchor.strides) != num_levels:
            raise ConfigError(f"model.bbox_head.anchor.strides: {len(cfg.anchor.strides)} strides for {num_levels} neck levels")
        a = cfg.anchor
        sampler = build_sampler(cfg.sampler)
        return RetinaHead(
            feat_channels=cfg.feat_channels, stacked_convs=cfg.stacked_convs, norm=cfg.norm,
            num_classes=num_classes, in_channels=in_channels,
            anchor_generator=AnchorGenerator(a.strides, a.ratios, a.octave_base_scale, a.scales_per_octave, a.center_offset),
            bbox_coder=DeltaXYWHCoder(cfg.bbox_coder.target_means, cfg.bbox_coder.target_stds),
            assigner=build_assigner(cfg.assigner),
            sampler=sampler, loss_cls=build_loss(cfg.loss_cls), loss_bbox=build_loss(cfg.loss_bbox),
            allowed_border=cfg.allowed_border, reg_decoded_bbox=cfg.reg_decoded_bbox, test_cfg=test_settings(test_cfg))
    if isinstance(cfg, S.FCOSHeadConfig):
        if len(cfg.strides) != num_levels:
            raise ConfigError(f"model.bbox_head.strides: {len(cfg.strides)} strides for {num_levels} neck levels")
        return FCOSHead(num_classes, in_channels, feat_channels=cfg.feat_channels, stacked_convs=cfg.stacked_convs,
                        norm=cfg.norm, strides=cfg.strides, regress_ranges=cfg.regress_ranges,
                        center_sampling=cfg.center_sampling, center_sample_radius=cfg.center_sample_radius,
                        norm_on_bbox=cfg.norm_on_bbox, centerness_on_reg=cfg.centerness_on_reg,
                        loss_cls=build_loss(cfg.loss_cls), loss_bbox=build_loss(cfg.loss_bbox),
                        loss_centerness=build_loss(cfg.loss_centerness), test_cfg=test_settings(test_cfg))
    raise ConfigError(f"model.bbox_head: unsupported head {type(cfg).__name__}")


def build_assigner(cfg: S.MaxIoUAssignerConfig) -> MaxIoUAssigner:
    return MaxIoUAssigner(cfg.pos_iou_thr, cfg.neg_iou_thr, cfg.min_pos_iou, cfg.gt_max_assign_all, cfg.ignore_iof_thr)


def build_sampler(cfg):
    if isinstance(cfg, S.PseudoSamplerConfig):
        return PseudoSampler()
    if isinstance(cfg, S.OHEMSamplerConfig):
        return OHEMSampler(cfg.num, cfg.pos_fraction, cfg.neg_pos_ub)
    return RandomSampler(cfg.num, cfg.pos_fraction, cfg.neg_pos_ub)


def proposal_settings(cfg: S.ProposalConfig) -> ProposalSettings:
    return ProposalSettings(cfg.nms_pre, cfg.nms_iou_thr, cfg.max_per_img, cfg.min_bbox_size)


def build_rpn_head(cfg: S.RPNHeadConfig, in_channels: int, num_levels: int) -> RPNHead:
    if len(cfg.anchor.strides) != num_levels:
        raise ConfigError(f"model.rpn_head.anchor.strides: {len(cfg.anchor.strides)} strides for {num_levels} neck levels")
    a = cfg.anchor
    return RPNHead(in_channels, feat_channels=cfg.feat_channels,
                   anchor_generator=AnchorGenerator(a.strides, a.ratios, a.octave_base_scale, a.scales_per_octave, a.center_offset),
                   bbox_coder=DeltaXYWHCoder(cfg.bbox_coder.target_means, cfg.bbox_coder.target_stds),
                   assigner=build_assigner(cfg.assigner), sampler=build_sampler(cfg.sampler),
                   loss_cls=SigmoidBinaryLoss(cfg.loss_cls.weight), loss_bbox=build_loss(cfg.loss_bbox),
                   allowed_border=cfg.allowed_border, proposal_cfg=proposal_settings(cfg.test_proposals))


def build_roi_extractor(cfg: S.RoIExtractorConfig) -> MultiLevelRoIAlign:
    return MultiLevelRoIAlign(cfg.output_size, cfg.strides, cfg.sampling_ratio, cfg.finest_scale)


def build_bbox_head(cfg: S.BBoxHeadConfig, num_classes: int, in_channels: int, roi_feat_size: int) -> ConvFCBBoxHead:
    return ConvFCBBoxHead(num_classes, in_channels, roi_feat_size, cfg.num_shared_convs, cfg.num_shared_fcs,
                          cfg.conv_out_channels, cfg.fc_out_channels, cfg.norm, cfg.reg_class_agnostic,
                          DeltaXYWHCoder(target_stds=cfg.target_stds), loss_cls=build_loss(cfg.loss_cls),
                          loss_bbox=build_loss(cfg.loss_bbox))


def build_mask_branch(cfg: S.MaskHeadConfig | None, num_classes: int, in_channels: int, mask_thr: float) -> MaskBranch | None:
    if cfg is None:
        return None
    head = FCNMaskHead(num_classes, in_channels, cfg.conv_out_channels, cfg.num_convs, cfg.roi_extractor.output_size,
                       cfg.class_agnostic, cfg.loss_weight)
    return MaskBranch(build_roi_extractor(cfg.roi_extractor), head, mask_thr)


def build_roi_head(cfg, num_classes: int, in_channels: int, test_cfg: S.TestConfig):
    tests = test_settings(test_cfg)
    if isinstance(cfg, S.StandardRoIHeadConfig):
        return StandardRoIHead(build_roi_extractor(cfg.roi_extractor),
                               build_bbox_head(cfg.bbox_head, num_classes, in_channels, cfg.roi_extractor.output_size),
                               build_assigner(cfg.assigner), build_sampler(cfg.sampler), cfg.sampler.add_gt_as_proposals,
                               build_mask_branch(cfg.mask_head, num_classes, in_channels, test_cfg.mask_thr), tests)
    if any(isinstance(st.sampler, S.OHEMSamplerConfig) for st in cfg.stages):
        raise ConfigError("model.roi_head.stages: OHEM is supported by the standard RoI head only")
    masks = [build_mask_branch(cfg.mask_head, num_classes, in_channels, test_cfg.mask_thr) for _ in cfg.stages] \
        if cfg.mask_head is not None else None
    return CascadeRoIHead(
        build_roi_extractor(cfg.roi_extractor),
        [build_bbox_head(st.bbox_head, num_classes, in_channels, cfg.roi_extractor.output_size) for st in cfg.stages],
        [build_assigner(st.assigner) for st in cfg.stages], [build_sampler(st.sampler) for st in cfg.stages],
        [st.loss_weight for st in cfg.stages], cfg.stages[0].sampler.add_gt_as_proposals, masks, tests)


def build_model(cfg: S.Config) -> nn.Module:
    """Detector for ``cfg.model`` (weights random, or the backbone's from ``backbone.weights``)."""
    m = cfg.model
    backbone = build_backbone(m.backbone)
    neck = build_neck(m.neck, backbone.out_channels)
    if isinstance(m, S.SingleStageConfig):
        return SingleStageDetector(backbone, neck, build_head(m.bbox_head, m.num_classes, m.neck.out_channels,
                                                              cfg.test, m.neck.num_outs))
    if isinstance(m, S.RPNConfig):
        return SingleStageDetector(backbone, neck, build_rpn_head(m.rpn_head, m.neck.out_channels, m.neck.num_outs))
    rpn = build_rpn_head(m.rpn_head, m.neck.out_channels, m.neck.num_outs) if m.rpn_head is not None else None
    roi = build_roi_head(m.roi_head, m.num_classes, m.neck.out_channels, cfg.test)
    return TwoStageDetector(backbone, neck, rpn, roi,
                            proposal_settings(m.rpn_head.train_proposals) if rpn else ProposalSettings(),
                            proposal_settings(m.rpn_head.test_proposals) if rpn else ProposalSettings())


# ----------------------------------------------------------------------------------- data


def ensure_synthetic(cfg: S.DataConfig) -> None:
    """Generate the synthetic dataset where the config asks for it and its files are missing."""
    if cfg.synth is None:
        return
    from dettool.data.synth import generate

    train_ann, val_ann = Path(cfg.train.ann_file), Path(cfg.val.ann_file)
    if train_ann.is_file() and val_ann.is_file():
        return
    root = train_ann.parent.parent
    expected = {"train": (root / "annotations" / "train.json", root / "train"),
                "val": (root / "annotations" / "val.json", root / "val")}
    for split, sc in (("train", cfg.train), ("val", cfg.val)):
        if (Path(sc.ann_file), Path(sc.img_dir)) != expected[split]:
            raise ConfigError(f"data.{split}: synthetic data lives at {expected[split][0]} and {expected[split][1]}; "
                              f"got {sc.ann_file} and {sc.img_dir}")
    print(f"dettool: generating the synthetic dataset in {root} (first use)", flush=True)
    generate(root, cfg.synth.num_train, cfg.synth.num_val, cfg.synth.seed)


def has_masks(cfg: S.Config) -> bool:
    """Whether the model predicts instance masks."""
    return isinstance(cfg.model, S.TwoStageConfig) and cfg.model.roi_head.mask_head is not None


def build_dataset(cfg: S.Config, split: str, augment: bool | None = None) -> CocoDetection:
    """``split`` is 'train' (augmented, empty images filtered, masks loaded for mask models) or
    'val'; ``augment=False`` reads the train split as a test set (no augmentation, no filtering)."""
    d = cfg.data
    ensure_synthetic(d)
    sc = d.train if split == "train" else d.val
    augment = split == "train" if augment is None else augment
    if augment:
        spec = TransformSpec(ScaleSpec.parse(d.train_scale, "data.train_scale"), d.flip_prob, d.mean, d.std)
    else:
        spec = TransformSpec(ScaleSpec.parse(d.test_scale, "data.test_scale"), 0.0, d.mean, d.std)
    if not Path(sc.img_dir).is_dir():
        raise DataError(f"{sc.img_dir}: image folder not found (data.{split}.img_dir)")
    fast_rcnn = isinstance(cfg.model, S.TwoStageConfig) and cfg.model.rpn_head is None
    proposals = load_proposals(sc.proposals_file) if sc.proposals_file and fast_rcnn else None
    if fast_rcnn and proposals is None:
        raise ConfigError(f"data.{split}.proposals_file: required when model.rpn_head is null (Fast R-CNN)")
    ds = CocoDetection(sc.ann_file, sc.img_dir, spec, filter_empty_gt=augment and d.filter_empty_gt,
                       with_masks=augment and has_masks(cfg), proposals=proposals)
    if len(ds.cat_ids) != cfg.model.num_classes:
        raise ConfigError(f"model.num_classes: {cfg.model.num_classes} but {sc.ann_file} has {len(ds.cat_ids)} categories")
    if len(ds) == 0:
        raise DataError(f"{sc.ann_file}: no usable images")
    return ds


def build_dataloader(cfg: S.Config, dataset: CocoDetection, train: bool, rank: int = 0, world_size: int = 1,
                     batch_size: int | None = None) -> torch.utils.data.DataLoader:
    sampler = EpochSampler(len(dataset), shuffle=train, seed=cfg.train.seed, rank=rank, world_size=world_size)
    workers = cfg.data.num_workers
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size or (cfg.train.batch_size if train else 1), sampler=sampler,
        num_workers=workers, collate_fn=Collate(cfg.data.size_divisor), drop_last=False,
        persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None)


# ----------------------------------------------------------------------------------- optimisation


def build_optimizer(cfg: S.OptimizerConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD or AdamW; norm weights and biases (1-D parameters) get no weight decay unless
    ``decay_norm_and_bias``."""
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 and not cfg.decay_norm_and_bias else decay).append(p)
    groups = [g for g in ({"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0})
              if g["params"]]
    if cfg.type == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


def import_hook(spec: S.HookConfig, index: int):
    """Resolve a user hook ``package.module:ClassName`` (imported, never evaluated)."""
    if ":" not in spec.type:
        raise ConfigError(f"train.custom_hooks[{index}].type: {spec.type!r} is neither a built-in hook "
                          "nor 'package.module:ClassName'")
    module_name, cls_name = spec.type.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"train.custom_hooks[{index}].type: cannot import {module_name!r} ({exc})") from None
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise ConfigError(f"train.custom_hooks[{index}].type: {module_name!r} has no {cls_name!r}")
    return cls
