"""MaxIoUAssigner against a hand-made IoU setup."""
from __future__ import annotations

import pytest
import torch

from dettool.trainer.models.task_modules.max_iou_assigner import MaxIoUAssigner, box_iof

GT = torch.tensor([[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 110.0, 110.0]])
GT_LABELS = torch.tensor([3, 7])
CANDIDATES = torch.tensor([
    [0.0, 0.0, 10.0, 10.0],        # 0: IoU 1.0 with gt 0
    [0.0, 0.0, 10.0, 20.0],        # 1: IoU 100/200 = 0.5 with gt 0 (== pos_iou_thr)
    [0.0, 0.0, 10.0, 25.0],        # 2: IoU 100/250 = 0.4 (between thresholds)
    [0.0, 0.0, 10.0, 40.0],        # 3: IoU 0.25 -> negative
    [50.0, 50.0, 60.0, 60.0],      # 4: IoU 0 -> negative
    [100.0, 100.0, 110.0, 130.0],  # 5: IoU 1/3 with gt 1: gt 1's best candidate
])


def assigner(**kwargs) -> MaxIoUAssigner:
    """A ``MaxIoUAssigner`` with the rule-neutral settings (no crowd ignoring, all ties assigned)."""
    return MaxIoUAssigner(**{"min_pos_iou": 0.0, "gt_max_assign_all": True, "ignore_iof_thr": -1.0,
                             "match_low_quality": True, **kwargs})


def test_thresholds_and_best_candidate_rule():
    res = assigner(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.3).assign(CANDIDATES, GT, GT_LABELS)
    assert res.gt_inds.tolist() == [1, 1, -1, 0, 0, 2]
    assert res.labels.tolist() == [3, 3, -1, -1, -1, 7]
    torch.testing.assert_close(res.max_overlaps, torch.tensor([1.0, 0.5, 0.4, 0.25, 0.0, 1 / 3]))
    assert res.num_gts == 2


def test_without_low_quality_matching_only_the_thresholds_assign():
    # The setup above with match_low_quality off: gt 1's best candidate (IoU 1/3, below
    # neg_iou_thr 0.4) stays negative instead of being promoted.
    res = assigner(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.3, match_low_quality=False).assign(
        CANDIDATES, GT, GT_LABELS)
    assert res.gt_inds.tolist() == [1, 1, -1, 0, 0, 0]
    assert res.labels.tolist() == [3, 3, -1, -1, -1, -1]


def test_min_pos_iou_blocks_weak_best_candidates():
    # gt 1's best IoU (1/3) is below min_pos_iou = 0.5: its candidate stays negative (IoU < neg_iou_thr).
    res = assigner(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.5).assign(CANDIDATES, GT, GT_LABELS)
    assert res.gt_inds.tolist() == [1, 1, -1, 0, 0, 0]
    assert res.labels[5] == -1


def test_best_candidate_rule_promotes_an_ignored_candidate():
    # A third gt whose best candidate is 2 (IoU 0.8, below pos_iou_thr = 0.9, so ignored by the
    # thresholds): the per-gt rule still makes it positive for that gt.
    gt = torch.cat([GT, torch.tensor([[0.0, 5.0, 10.0, 25.0]])])  # IoU with cand 2: 200/250 = 0.8
    res = assigner(pos_iou_thr=0.9, neg_iou_thr=0.1, min_pos_iou=0.0).assign(
        CANDIDATES, gt, torch.tensor([3, 7, 5]))
    assert res.gt_inds[2] == 3 and res.labels[2] == 5
    assert res.gt_inds[5] == 2  # gt 1 keeps its best candidate (IoU 1/3 < pos_iou_thr)


@pytest.mark.parametrize("assign_all, expected", [(True, [1, 1]), (False, None)])
def test_gt_max_assign_all_ties(assign_all, expected):
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    cands = torch.tensor([[0.0, 0.0, 10.0, 30.0], [0.0, -20.0, 10.0, 10.0]])  # both IoU 1/3
    res = assigner(pos_iou_thr=0.5, neg_iou_thr=0.2, min_pos_iou=0.3,
                         gt_max_assign_all=assign_all).assign(cands, gt, torch.tensor([0]))
    if expected is not None:
        assert res.gt_inds.tolist() == expected
    else:
        # exactly one of the tied candidates is positive; the other is ignored (0.2 <= IoU < 0.5)
        assert sorted(res.gt_inds.tolist()) == [-1, 1]


def test_gt_overlapping_nothing_takes_no_candidates():
    # min_pos_iou = 0 must not hand every zero-IoU candidate to a gt that overlaps none of them
    far = torch.tensor([[500.0, 500.0, 510.0, 510.0]])
    res = assigner(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0).assign(
        CANDIDATES, torch.cat([GT[:1], far]), torch.tensor([3, 7]))
    assert res.gt_inds.tolist() == [1, 1, -1, 0, 0, 0]
    assert (res.gt_inds != 2).all()


def test_empty_gt_gives_all_negative():
    no_gt = torch.zeros((0, 4)), torch.zeros((0,), dtype=torch.long)
    res = assigner(pos_iou_thr=0.5, neg_iou_thr=0.4).assign(CANDIDATES, *no_gt)
    assert res.gt_inds.tolist() == [0] * len(CANDIDATES)
    assert res.labels.tolist() == [-1] * len(CANDIDATES)
    assert torch.equal(res.max_overlaps, torch.zeros(len(CANDIDATES)))
    assert res.num_gts == 0


def test_empty_candidates():
    res = assigner(pos_iou_thr=0.5, neg_iou_thr=0.4).assign(torch.zeros((0, 4)), GT, GT_LABELS)
    assert res.gt_inds.numel() == 0 and res.labels.numel() == 0


CROWD = torch.tensor([[0.0, 200.0, 50.0, 250.0]])
CROWD_CANDIDATES = torch.cat([CANDIDATES, torch.tensor([
    [10.0, 210.0, 20.0, 220.0],  # 6: fully inside the crowd box (IoF 1)
    [40.0, 240.0, 60.0, 260.0],  # 7: IoF 10*10 / 400 = 0.25
])])


def test_box_iof_hand_values():
    torch.testing.assert_close(box_iof(CROWD_CANDIDATES[6:], CROWD), torch.tensor([[1.0], [0.25]]))


def test_ignore_iof_thr_ignores_candidates_in_crowd_boxes():
    crowd_aware = assigner(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.3, ignore_iof_thr=0.5)
    res = crowd_aware.assign(CROWD_CANDIDATES, GT, GT_LABELS, ignore_boxes=CROWD)
    assert res.gt_inds.tolist() == [1, 1, -1, 0, 0, 2, -1, 0]
    assert res.labels[6] == -1


def test_ignore_iof_disabled_or_without_crowd_boxes():
    disabled = assigner(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.3, ignore_iof_thr=-1.0)
    assert disabled.assign(CROWD_CANDIDATES, GT, GT_LABELS, ignore_boxes=CROWD).gt_inds[6:].tolist() == [0, 0]
    enabled = assigner(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.3, ignore_iof_thr=0.5)
    assert enabled.assign(CROWD_CANDIDATES, GT, GT_LABELS).gt_inds[6:].tolist() == [0, 0]
    assert enabled.assign(CROWD_CANDIDATES, GT, GT_LABELS,
                          ignore_boxes=torch.zeros((0, 4))).gt_inds[6:].tolist() == [0, 0]


def test_positive_candidate_inside_crowd_box_is_ignored():
    # A crowd region covering gt 0 (COCO: a person inside a crowd): MMDetection sets these
    # candidates' overlaps to -1 before assignment, so they are neither positive nor negative.
    crowd = torch.tensor([[-5.0, -5.0, 15.0, 45.0]])
    res = assigner(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.3, ignore_iof_thr=0.5).assign(
        CANDIDATES, GT, GT_LABELS, ignore_boxes=crowd)
    assert res.gt_inds[:4].tolist() == [-1, -1, -1, -1]
