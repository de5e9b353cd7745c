"""Task-module configs -> anchor generators, box coders, assigners and samplers."""
from __future__ import annotations

from dettool.config import schema as S
from dettool.trainer.builder.table import Table
from dettool.trainer.models.task_modules.anchor_generator import AnchorGenerator
from dettool.trainer.models.task_modules.delta_xywh_coder import DeltaXYWHCoder
from dettool.trainer.models.task_modules.max_iou_assigner import MaxIoUAssigner
from dettool.trainer.models.task_modules.ohem_sampler import OHEMSampler
from dettool.trainer.models.task_modules.samplers import PseudoSampler, RandomSampler

CODERS = Table("box coder", {
    S.DeltaCoderConfig: lambda c: DeltaXYWHCoder(target_means=c.target_means, target_stds=c.target_stds),
})

ASSIGNERS = Table("assigner", {
    S.MaxIoUAssignerConfig: lambda c: MaxIoUAssigner(
        pos_iou_thr=c.pos_iou_thr, neg_iou_thr=c.neg_iou_thr, min_pos_iou=c.min_pos_iou,
        gt_max_assign_all=c.gt_max_assign_all, ignore_iof_thr=c.ignore_iof_thr, match_low_quality=c.match_low_quality),
})

SAMPLERS = Table("sampler", {
    S.PseudoSamplerConfig: lambda c: PseudoSampler(),
    S.RandomSamplerConfig: lambda c: RandomSampler(num=c.num, pos_fraction=c.pos_fraction, neg_pos_ub=c.neg_pos_ub),
    S.OHEMSamplerConfig: lambda c: OHEMSampler(num=c.num, pos_fraction=c.pos_fraction, neg_pos_ub=c.neg_pos_ub),
})


def build_anchor_generator(cfg: S.AnchorConfig) -> AnchorGenerator:
    return AnchorGenerator(strides=cfg.strides, ratios=cfg.ratios, octave_base_scale=cfg.octave_base_scale,
                           scales_per_octave=cfg.scales_per_octave, center_offset=cfg.center_offset,
                           sizes=cfg.sizes, round_base=cfg.round_base, stride_from_input=cfg.stride_from_input)
