"""RandomSampler (num, pos_fraction, neg_pos_ub) and PseudoSampler."""
from __future__ import annotations

import torch

from dettool.trainer.models.task_modules.max_iou_assigner import AssignResult
from dettool.trainer.models.task_modules.samplers import PseudoSampler, RandomSampler


def _assign(num_pos: int, num_neg: int, num_ignored: int = 5) -> AssignResult:
    """Candidates in a shuffled order: ``num_pos`` positives (gt 1), negatives, ignored."""
    gt_inds = torch.cat([torch.ones(num_pos, dtype=torch.long), torch.zeros(num_neg, dtype=torch.long),
                         torch.full((num_ignored,), -1, dtype=torch.long)])
    gt_inds = gt_inds[torch.randperm(gt_inds.numel(), generator=torch.Generator().manual_seed(1))]
    labels = torch.where(gt_inds > 0, torch.zeros_like(gt_inds), torch.full_like(gt_inds, -1))
    return AssignResult(gt_inds, torch.zeros(gt_inds.numel()), labels)


def _check_partition(assign: AssignResult, res) -> None:
    assert (assign.gt_inds[res.pos_inds] > 0).all()
    assert (assign.gt_inds[res.neg_inds] == 0).all()
    assert res.pos_inds.unique().numel() == res.pos_inds.numel()
    assert res.neg_inds.unique().numel() == res.neg_inds.numel()


def test_random_sampler_respects_num_and_pos_fraction():
    assign = _assign(num_pos=20, num_neg=100)
    res = RandomSampler(num=32, pos_fraction=0.25, neg_pos_ub=-1.0,
                        generator=torch.Generator().manual_seed(0)).sample(assign)
    assert res.pos_inds.numel() == 8  # int(32 * 0.25)
    assert res.neg_inds.numel() == 24  # the remainder
    _check_partition(assign, res)


def test_random_sampler_fills_with_negatives_when_positives_are_few():
    assign = _assign(num_pos=3, num_neg=100)
    res = RandomSampler(num=32, pos_fraction=0.5, neg_pos_ub=-1.0).sample(assign)
    assert res.pos_inds.numel() == 3 and res.neg_inds.numel() == 29
    _check_partition(assign, res)


def test_random_sampler_takes_all_when_candidates_are_few():
    assign = _assign(num_pos=2, num_neg=6)
    res = RandomSampler(num=32, pos_fraction=0.5, neg_pos_ub=-1.0).sample(assign)
    assert res.pos_inds.numel() == 2 and res.neg_inds.numel() == 6  # ignored (-1) never sampled
    _check_partition(assign, res)


def test_neg_pos_ub_caps_negatives_per_positive():
    assign = _assign(num_pos=3, num_neg=100)
    res = RandomSampler(num=32, pos_fraction=0.5, neg_pos_ub=2.0).sample(assign)
    assert res.pos_inds.numel() == 3 and res.neg_inds.numel() == 6  # 2 * 3
    res = RandomSampler(num=32, pos_fraction=0.5, neg_pos_ub=1.5).sample(assign)
    assert res.neg_inds.numel() == 4  # int(1.5 * 3)


def test_neg_pos_ub_with_zero_positives_uses_one():
    assign = _assign(num_pos=0, num_neg=100)
    res = RandomSampler(num=32, pos_fraction=0.5, neg_pos_ub=2.0).sample(assign)
    assert res.pos_inds.numel() == 0 and res.neg_inds.numel() == 2  # 2 * max(0, 1)
    res = RandomSampler(num=32, pos_fraction=0.5, neg_pos_ub=-1.0).sample(assign)
    assert res.neg_inds.numel() == 32  # cap disabled: the whole budget goes to negatives


def test_neg_pos_ub_does_not_raise_the_count_above_the_budget():
    assign = _assign(num_pos=10, num_neg=100)
    res = RandomSampler(num=16, pos_fraction=0.5, neg_pos_ub=5.0).sample(assign)
    assert res.pos_inds.numel() == 8 and res.neg_inds.numel() == 8


def test_random_sampler_is_reproducible_with_a_generator_and_random_without_fixing():
    assign = _assign(num_pos=50, num_neg=200)
    a = RandomSampler(num=16, pos_fraction=0.5, neg_pos_ub=-1.0,
                      generator=torch.Generator().manual_seed(7)).sample(assign)
    b = RandomSampler(num=16, pos_fraction=0.5, neg_pos_ub=-1.0,
                      generator=torch.Generator().manual_seed(7)).sample(assign)
    c = RandomSampler(num=16, pos_fraction=0.5, neg_pos_ub=-1.0,
                      generator=torch.Generator().manual_seed(8)).sample(assign)
    assert torch.equal(a.pos_inds, b.pos_inds) and torch.equal(a.neg_inds, b.neg_inds)
    assert not (torch.equal(a.pos_inds, c.pos_inds) and torch.equal(a.neg_inds, c.neg_inds))


def test_pseudo_sampler_keeps_every_positive_and_negative():
    assign = _assign(num_pos=7, num_neg=40, num_ignored=9)
    res = PseudoSampler().sample(assign)
    assert torch.equal(res.pos_inds, torch.nonzero(assign.gt_inds > 0).squeeze(1))
    assert torch.equal(res.neg_inds, torch.nonzero(assign.gt_inds == 0).squeeze(1))
    assert res.pos_inds.numel() == 7 and res.neg_inds.numel() == 40


def test_pseudo_sampler_on_empty_assignment():
    empty = AssignResult(torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    res = PseudoSampler().sample(empty)
    assert res.pos_inds.numel() == 0 and res.neg_inds.numel() == 0
