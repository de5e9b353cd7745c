"""Guided Anchoring's task modules: guided anchors, location targets (hand-computed and
MMDetection's ``ga_loc_targets``) and the approximating-anchor assignment."""
from __future__ import annotations

import math

import torch

from dettool.trainer.models.task_modules.approx_max_iou_assigner import ApproxMaxIoUAssigner
from dettool.trainer.models.task_modules.delta_xywh_coder import DeltaXYWHCoder
from dettool.trainer.models.task_modules.guided_anchors import guided_anchors, location_targets


def test_guided_anchors_scale_the_squares_about_their_centres():
    squares = torch.tensor([[0.0, 0.0, 32.0, 32.0], [8.0, 8.0, 40.0, 40.0]])
    shapes = torch.tensor([[[math.log(2.0), 0.0], [0.0, math.log(0.5)]]])  # [B=1, N=2, (dw, dh)]
    out = guided_anchors(squares, shapes, DeltaXYWHCoder(wh_ratio_clip=1e-6))
    torch.testing.assert_close(out, torch.tensor([[[-16.0, 0.0, 48.0, 32.0], [8.0, 16.0, 40.0, 32.0]]]))


def test_location_targets_hand_computed():
    """One 32-pixel gt on the first level (anchors 4 x stride 8 = 32): centre region 0.2 of its
    sides, ignore region 0.5; on the next level its ignore region, rounded half to even."""
    gt = torch.tensor([[16.0, 16.0, 48.0, 48.0]])  # cells 2..6 of stride 8, 1..3 of stride 16
    targets, weights, avg = location_targets([gt], [(10, 10), (5, 5)], (8, 16), 4.0, 0.2, 0.5)
    expected_t = torch.zeros(10, 10)
    expected_t[4, 4] = 1  # round(0.6 * 2 + 0.4 * 6) = round(3.6) = 4 = round(4.4)
    torch.testing.assert_close(targets[0][0, 0], expected_t)
    assert targets[1].sum() == 0
    expected_w = torch.full((10, 10), 0.1)
    expected_w[3:6, 3:6] = 0  # round(0.75 * 2 + 0.25 * 6) = 3, round(0.25 * 2 + 0.75 * 6) = 5
    expected_w[4, 4] = 1
    torch.testing.assert_close(weights[0][0, 0], expected_w)
    expected_w1 = torch.full((5, 5), 0.1)
    expected_w1[2, 2] = 0  # round(0.75 + 0.75) = round(1.5) = 2 = round(2.5): half to even
    torch.testing.assert_close(weights[1][0, 0], expected_w1)
    assert avg == (100 + 25) / 200


def test_location_targets_level_by_scale_and_empty_image():
    big = torch.tensor([[0.0, 0.0, 64.0, 64.0]])  # sqrt(area) 64 = 2 x 32: the second level
    targets, weights, _ = location_targets([big, torch.zeros(0, 4)], [(10, 10), (5, 5)], (8, 16), 4.0, 0.2, 0.5)
    assert targets[0].sum() == 0 and targets[1][0].sum() == 1 and targets[1][1].sum() == 0
    assert (weights[0][1] == 0.1).all() and (weights[1][1] == 0.1).all()  # no gt: every location negative
    assert (weights[0][0] == 0).any()  # ignored near the gt on the neighbouring level


def test_location_targets_equal_mmdetection():
    from mmdet_reference import import_mmdet

    import_mmdet()
    from mmdet.models.dense_heads import GuidedAnchorHead
    from mmengine.structures import InstanceData

    g = torch.Generator().manual_seed(0)
    gts = []
    for n in (7, 3):
        xy = torch.rand(n, 2, generator=g) * 150
        gts.append(torch.cat([xy, xy + 4 + torch.rand(n, 2, generator=g) * 200], 1))
    sizes = [(25, 30), (13, 15), (7, 8), (4, 4), (2, 2)]
    head = GuidedAnchorHead(num_classes=3, in_channels=8, feat_channels=8,
                            approx_anchor_generator=dict(type="AnchorGenerator", octave_base_scale=4,
                                                         scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                                                         strides=[8, 16, 32, 64, 128]),
                            square_anchor_generator=dict(type="AnchorGenerator", ratios=[1.0], scales=[4],
                                                         strides=[8, 16, 32, 64, 128]),
                            train_cfg=dict(center_ratio=0.2, ignore_ratio=0.5,
                                           assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.4),
                                           ga_assigner=dict(type="ApproxMaxIoUAssigner", pos_iou_thr=0.5,
                                                            neg_iou_thr=0.4)))
    ref_t, ref_w, ref_avg = head.ga_loc_targets([InstanceData(bboxes=b) for b in gts], sizes)
    targets, weights, avg = location_targets(gts, sizes, (8, 16, 32, 64, 128), 4.0, 0.2, 0.5)
    assert avg == ref_avg
    for got, ref in zip(targets + weights, ref_t + ref_w):
        torch.testing.assert_close(got, ref)


def test_approx_assignment_uses_the_best_approximating_anchor():
    squares = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    approxs = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 20.0, 10.0]],
                            [[50.0, 50.0, 60.0, 60.0], [50.0, 50.0, 70.0, 60.0]]])
    gt = torch.tensor([[0.0, 0.0, 20.0, 10.0]])  # IoU 0.5 with square 0, 1.0 with its second approx
    assigner = ApproxMaxIoUAssigner(pos_iou_thr=0.6, neg_iou_thr=0.4, min_pos_iou=0.4, gt_max_assign_all=True,
                                    ignore_iof_thr=-1.0, match_low_quality=False)
    out = assigner.assign_approxs(squares, approxs, gt, torch.tensor([2]))
    assert out.gt_inds.tolist() == [1, 0] and out.labels.tolist() == [2, -1]
    assert assigner.assign(squares, gt, torch.tensor([2])).gt_inds.tolist() == [-1, 0]  # the squares alone: 0.5
    empty = assigner.assign_approxs(squares, approxs, gt[:0], torch.zeros(0, dtype=torch.long))
    assert empty.gt_inds.tolist() == [0, 0]


def test_approx_assignment_equals_mmdetection():
    from mmdet_reference import import_mmdet

    import_mmdet()
    from mmdet.models.task_modules.assigners import ApproxMaxIoUAssigner as Reference
    from mmengine.structures import InstanceData

    g = torch.Generator().manual_seed(1)
    centres = torch.rand(60, 2, generator=g) * 200
    sizes = torch.tensor([[16.0, 16.0], [22.6, 11.3], [11.3, 22.6], [32.0, 32.0]])
    approxs = torch.cat([centres[:, None] - sizes / 2, centres[:, None] + sizes / 2], dim=2)  # [60, 4, 4]
    squares = approxs[:, 0]
    xy = torch.rand(5, 2, generator=g) * 180
    gt = torch.cat([xy, xy + 10 + torch.rand(5, 2, generator=g) * 30], 1)
    labels = torch.tensor([0, 1, 2, 1, 0])
    kwargs = dict(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.4)
    ref = Reference(**kwargs).assign(InstanceData(priors=squares, approxs=approxs),
                                     InstanceData(bboxes=gt, labels=labels))
    out = ApproxMaxIoUAssigner(**kwargs, gt_max_assign_all=True, ignore_iof_thr=-1.0,
                               match_low_quality=True).assign_approxs(squares, approxs, gt, labels)
    assert out.gt_inds.tolist() == ref.gt_inds.tolist()
    assert out.labels[out.gt_inds > 0].tolist() == ref.labels[ref.gt_inds > 0].tolist()
    torch.testing.assert_close(out.max_overlaps, ref.max_overlaps)
