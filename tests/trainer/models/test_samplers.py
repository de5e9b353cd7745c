"""RandomSampler (num, pos_fraction, neg_pos_ub), PseudoSampler and Libra R-CNN's IoU-balanced sampler."""
from __future__ import annotations

import torch

from dettool.trainer.models.task_modules.max_iou_assigner import AssignResult
from dettool.trainer.models.task_modules.samplers import IoUBalancedNegSampler, PseudoSampler, RandomSampler


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


def _libra(**kwargs) -> IoUBalancedNegSampler:
    args = dict(num=40, pos_fraction=0.25, neg_pos_ub=-1.0, floor_thr=-1.0, floor_fraction=0.0, num_bins=3,
                instance_balanced_pos=True, generator=torch.Generator().manual_seed(0))
    return IoUBalancedNegSampler(**{**args, **kwargs})


def _negatives_by_iou(ious: list[tuple[float, int]], max_iou: float = 0.9) -> AssignResult:
    """Negatives of the given IoUs (value, count) and one positive of IoU ``max_iou`` (the image's highest)."""
    iou = torch.tensor([max_iou] + [v for v, n in ious for _ in range(n)])
    gt_inds = torch.zeros(iou.numel(), dtype=torch.long)
    gt_inds[0] = 1
    return AssignResult(gt_inds, iou, torch.where(gt_inds > 0, 0, -1))


def test_iou_balanced_negatives_come_evenly_from_three_bins():
    """Bins of width 0.3 over [0, 0.9] (0.9: the image's highest IoU, the positive's): 60 negatives
    at IoU 0.05 and 60 at 0.45, 39 wanted (40 minus the one positive): int(39 / 3) = 13 from each of
    bins [0, 0.3) and [0.3, 0.6); [0.6, 0.9) has none, so the 13 missing come uniformly from the rest."""
    assign = _negatives_by_iou([(0.05, 60), (0.45, 60)])
    res = _libra().sample(assign)
    assert res.pos_inds.tolist() == [0] and res.neg_inds.numel() == 39
    iou = assign.max_overlaps[res.neg_inds]
    low, mid = int((iou < 0.3).sum()), int((iou >= 0.3).sum())
    assert low >= 13 and mid >= 13 and low + mid == 39
    _check_partition(assign, res)


def test_iou_balanced_sampling_favours_the_rare_high_iou_negatives():
    """200 negatives at IoU 0.02 and 10 at 0.5: a uniform draw of 39 would take about 2 of the 10;
    the balanced one takes all 10 (its bin's share, 13, is more than there are)."""
    assign = _negatives_by_iou([(0.02, 200), (0.5, 10)])
    res = _libra().sample(assign)
    assert int((assign.max_overlaps[res.neg_inds] == 0.5).sum()) == 10 and res.neg_inds.numel() == 39


def test_iou_balanced_floor_draws_its_fraction_below_the_threshold():
    """floor_thr 0.1 and floor_fraction 0.5: int(39 x 0.5) = 19 above the floor, from the bins over
    [0.1, 0.9] (width 0.267: 0.2 in the first, 0.45 in the second; 6 from each, then filled), and the
    other 20 below it."""
    assign = _negatives_by_iou([(0.02, 100), (0.2, 100), (0.45, 100)])
    res = _libra(floor_thr=0.1, floor_fraction=0.5).sample(assign)
    iou = assign.max_overlaps[res.neg_inds]
    assert int((iou < 0.1).sum()) == 20 and int((iou >= 0.1).sum()) == 19
    assert int((iou == 0.2).sum()) >= 6 and int((iou == 0.45).sum()) >= 6


def test_instance_balanced_positives_share_the_positive_budget_over_the_gt_boxes():
    """10 positives wanted (40 x 0.25) among 30 of gt 1 and 3 of gt 2: int(round(10 / 2) + 1) = 6
    per gt box at most (gt 2 gives its 3, gt 1 gives 6), then one more from gt 1's rest; a uniform
    draw would take gt 2's boxes with a chance of 3 in 33 each."""
    gt_inds = torch.tensor([1] * 30 + [2] * 3 + [0] * 50)
    assign = AssignResult(gt_inds, torch.where(gt_inds > 0, 0.8, 0.1), torch.where(gt_inds > 0, 0, -1))
    res = _libra().sample(assign)
    owners = gt_inds[res.pos_inds]
    assert res.pos_inds.numel() == 10 and int((owners == 2).sum()) == 3 and int((owners == 1).sum()) == 7
    assert res.pos_inds.unique().numel() == 10
    uniform = _libra(instance_balanced_pos=False, generator=torch.Generator().manual_seed(3)).sample(assign)
    assert uniform.pos_inds.numel() == 10
