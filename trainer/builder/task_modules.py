"""Task-module configs -> anchor generators, box coders, assigners and samplers."""
from __future__ import annotations

from dettool.config import schema as S
from dettool.errors import ConfigError
from dettool.trainer.builder.table import Table
from dettool.trainer.models.task_modules.anchor_generator import AnchorGenerator
from dettool.trainer.models.task_modules.approx_max_iou_assigner import ApproxMaxIoUAssigner
from dettool.trainer.models.task_modules.center_region_assigner import CenterRegionAssigner
from dettool.trainer.models.task_modules.delta_xywh_coder import DeltaXYWHCoder
from dettool.trainer.models.task_modules.max_iou_assigner import MaxIoUAssigner
from dettool.trainer.models.task_modules.ohem_sampler import OHEMSampler
from dettool.trainer.models.task_modules.samplers import IoUBalancedNegSampler, PseudoSampler, RandomSampler
from dettool.trainer.models.task_modules.ssd_anchor_generator import SSDAnchorGenerator, ssd_anchor_sizes
from dettool.trainer.models.task_modules.tblr_coder import TBLRCoder

CODERS = Table("box coder", {
    S.DeltaCoderConfig: lambda c: DeltaXYWHCoder(target_means=c.target_means, target_stds=c.target_stds),
    S.TBLRCoderConfig: lambda c: TBLRCoder(normalizer=c.normalizer),
})

ASSIGNERS = Table("assigner", {
    S.MaxIoUAssignerConfig: lambda c: MaxIoUAssigner(
        pos_iou_thr=c.pos_iou_thr, neg_iou_thr=c.neg_iou_thr, min_pos_iou=c.min_pos_iou,
        gt_max_assign_all=c.gt_max_assign_all, ignore_iof_thr=c.ignore_iof_thr, match_low_quality=c.match_low_quality),
    S.ApproxMaxIoUAssignerConfig: lambda c: ApproxMaxIoUAssigner(
        pos_iou_thr=c.pos_iou_thr, neg_iou_thr=c.neg_iou_thr, min_pos_iou=c.min_pos_iou,
        gt_max_assign_all=c.gt_max_assign_all, ignore_iof_thr=c.ignore_iof_thr, match_low_quality=c.match_low_quality),
    S.CenterRegionAssignerConfig: lambda c: CenterRegionAssigner(
        pos_scale=c.pos_scale, neg_scale=c.neg_scale, min_pos_iof=c.min_pos_iof, ignore_gt_scale=c.ignore_gt_scale,
        foreground_dominate=c.foreground_dominate),
})

SAMPLERS = Table("sampler", {
    S.PseudoSamplerConfig: lambda c: PseudoSampler(),
    S.RandomSamplerConfig: lambda c: RandomSampler(num=c.num, pos_fraction=c.pos_fraction, neg_pos_ub=c.neg_pos_ub),
    S.OHEMSamplerConfig: lambda c: OHEMSampler(num=c.num, pos_fraction=c.pos_fraction, neg_pos_ub=c.neg_pos_ub),
    S.IoUBalancedSamplerConfig: lambda c: IoUBalancedNegSampler(
        num=c.num, pos_fraction=c.pos_fraction, neg_pos_ub=c.neg_pos_ub, floor_thr=c.floor_thr,
        floor_fraction=c.floor_fraction, num_bins=c.num_bins, instance_balanced_pos=c.instance_balanced_pos),
})


def _ssd_anchor_generator(cfg: S.SSDAnchorConfig) -> SSDAnchorGenerator:
    if cfg.min_sizes is not None:
        min_sizes, max_sizes = cfg.min_sizes, cfg.max_sizes
    else:
        try:
            min_sizes, max_sizes = ssd_anchor_sizes(cfg.input_size, cfg.basesize_ratio_range, len(cfg.strides))
        except ValueError as e:
            raise ConfigError(str(e)) from None
    return SSDAnchorGenerator(strides=cfg.strides, ratios=cfg.ratios, min_sizes=min_sizes, max_sizes=max_sizes,
                              max_side=cfg.input_size if cfg.clip_to_input else None)


ANCHOR_GENERATORS = Table("anchor generator", {
    S.AnchorConfig: lambda c: AnchorGenerator(
        strides=c.strides, ratios=c.ratios, octave_base_scale=c.octave_base_scale,
        scales_per_octave=c.scales_per_octave, center_offset=c.center_offset, sizes=c.sizes,
        round_base=c.round_base, stride_from_input=c.stride_from_input),
    S.SSDAnchorConfig: _ssd_anchor_generator,
})
