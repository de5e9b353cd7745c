"""OHEMSampler keeps the highest-loss positives and negatives, with RandomSampler's counts."""
from __future__ import annotations

import torch

from dettool.trainer.models.task_modules.max_iou_assigner import AssignResult
from dettool.trainer.models.task_modules.ohem_sampler import OHEMSampler


def _assign(gt_inds: list[int]) -> AssignResult:
    t = torch.tensor(gt_inds)
    labels = torch.where(t > 0, torch.zeros_like(t), torch.full_like(t, -1))
    return AssignResult(t, torch.zeros(t.numel()), labels)


def _case(num_pos: int, num_neg: int, num_ignored: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    gt = [1] * num_pos + [0] * num_neg + [-1] * num_ignored
    perm = torch.randperm(len(gt), generator=g)
    assign = _assign([gt[i] for i in perm])
    losses = torch.rand(len(gt), generator=g)
    return assign, losses


def _top(inds: torch.Tensor, losses: torch.Tensor, k: int) -> set[int]:
    return set(inds[losses[inds].topk(k).indices].tolist())


def test_ohem_keeps_the_hardest_positives_and_negatives():
    assign, losses = _case(num_pos=20, num_neg=60)
    losses[assign.gt_inds == -1] = 10.0  # ignored candidates are never sampled, however hard
    res = OHEMSampler(num=32, pos_fraction=0.25, neg_pos_ub=-1.0).sample(assign, losses)
    pos = (assign.gt_inds > 0).nonzero().squeeze(1)
    neg = (assign.gt_inds == 0).nonzero().squeeze(1)
    assert set(res.pos_inds.tolist()) == _top(pos, losses, 8)
    assert set(res.neg_inds.tolist()) == _top(neg, losses, 24)
    assert losses[res.neg_inds].diff().le(0).all()  # hardest first


def test_ohem_counts_follow_random_sampler():
    assign, losses = _case(num_pos=3, num_neg=60)
    res = OHEMSampler(num=32, pos_fraction=0.5, neg_pos_ub=-1.0).sample(assign, losses)
    assert res.pos_inds.numel() == 3 and res.neg_inds.numel() == 29
    res = OHEMSampler(num=32, pos_fraction=0.5, neg_pos_ub=2.0).sample(assign, losses)
    assert res.neg_inds.numel() == 6
    neg = (assign.gt_inds == 0).nonzero().squeeze(1)
    assert set(res.neg_inds.tolist()) == _top(neg, losses, 6)
    assign, losses = _case(num_pos=0, num_neg=5)
    res = OHEMSampler(num=32, pos_fraction=0.25, neg_pos_ub=-1.0).sample(assign, losses)
    assert res.pos_inds.numel() == 0 and res.neg_inds.numel() == 5
    res = OHEMSampler(num=32, pos_fraction=0.25, neg_pos_ub=-1.0).sample(_assign([]), torch.zeros(0))
    assert res.pos_inds.numel() == 0 and res.neg_inds.numel() == 0
