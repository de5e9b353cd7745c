"""Dense decoders pick candidates as MMDetection 3.x does: the best (anchor, class) pairs above
the score threshold per level, and drop boxes not larger than ``min_bbox_size``."""
from __future__ import annotations

import torch

from dettool.trainer.models.postprocess.dense_decoders import AnchorDecoder, top_pairs
from dettool.trainer.models.postprocess.nms import NMSSettings
from dettool.trainer.models.task_modules.anchor_generator import AnchorGenerator
from dettool.trainer.models.task_modules.delta_xywh_coder import DeltaXYWHCoder


def test_top_pairs_ranks_anchor_class_pairs_not_anchors():
    # anchor 0 scores 0.9 / 0.8 for classes 0 / 1, anchor 1 scores 0.85 for class 2: the best
    # three pairs take two from anchor 0 (an anchor-wise top-2 would also keep anchor 1's 0.1s).
    scores = torch.tensor([[[0.9, 0.8, 0.1], [0.1, 0.1, 0.85], [0.3, 0.02, 0.01]]])
    s, rows, classes = top_pairs(scores, thr=0.05, k=3)  # in (anchor, class) order
    assert s.tolist() == [[0.8999999761581421, 0.800000011920929, 0.8500000238418579]]
    assert rows.tolist() == [[0, 0, 1]] and classes.tolist() == [[0, 1, 2]]
    s, _, _ = top_pairs(scores, thr=0.5, k=5)  # fewer pairs pass the threshold than k: zeros after
    assert (s[0, 3:] == 0).all() and (s[0, :3] > 0.5).all()


def test_equal_scores_reach_nms_lower_index_first():
    """A trained RPN's saturated sigmoid gives equal top scores; NMS keeps the first of two
    overlapping ones, which must be the lower index (MMDetection's stable sort), whatever order
    ``torch.topk`` returns them in."""
    from dettool.trainer.models.postprocess.batched import top_k_rows

    ranking = torch.tensor([[0.5, 0.9, 0.9, 0.1, 0.9, 0.7, 0.9]])
    assert top_k_rows(ranking, 5).tolist() == [[1, 2, 4, 5, 6]]
    assert top_k_rows(ranking, 0).tolist() == [list(range(7))]


def decoder(min_bbox_size: float, nms_pre: int) -> AnchorDecoder:
    anchors = AnchorGenerator(strides=(8,), ratios=(1.0,), octave_base_scale=4.0, scales_per_octave=1)
    nms = NMSSettings(score_thr=0.05, nms_pre=nms_pre, iou_thr=0.99, max_per_img=10, min_bbox_size=min_bbox_size)
    return AnchorDecoder(anchors, DeltaXYWHCoder(target_means=(0.0,) * 4, target_stds=(1.0,) * 4), 2, nms)


def test_min_bbox_size_drops_boxes_clipped_to_nothing():
    # 2 x 2 locations, one anchor each, 2 classes; location (0, 0) regresses its box far off the
    # image (left), where clipping leaves zero width.
    logits = torch.full((1, 2, 2, 2), -5.0)
    logits[0, 0] = 3.0  # class 0 scores high everywhere
    deltas = torch.zeros(1, 4, 2, 2)
    deltas[0, 0, 0, 0] = -40.0  # dx: 40 widths to the left
    shapes = torch.tensor([[64.0, 64.0]])
    kept = decoder(-1.0, 1000)([logits], [deltas], shapes)
    dropped = decoder(0.0, 1000)([logits], [deltas], shapes)
    assert int(kept.num_dets[0]) == 4
    widths = kept.boxes[0, :4, 2] - kept.boxes[0, :4, 0]
    assert (widths == 0).sum() == 1
    assert int(dropped.num_dets[0]) == 3
    assert (dropped.boxes[0, :3, 2] - dropped.boxes[0, :3, 0] > 0).all()
