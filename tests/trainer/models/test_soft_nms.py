"""Soft-NMS rescoring against hand-computed values, and its use through multiclass_nms."""
from __future__ import annotations

import math

import pytest
import torch

from dettool.trainer.models.postprocess.nms import NMSSettings, multiclass_nms
from dettool.trainer.models.task_modules.soft_nms import soft_nms

# A (area 100) and B overlap by 50: IoU(A, B) = 50 / 150 = 1/3; C is far away.
BOXES = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], [100.0, 100.0, 110.0, 110.0]])
SCORES = torch.tensor([0.9, 0.8, 0.7])
IOU_AB = 1 / 3


def test_linear_soft_nms_decays_overlapping_boxes_above_the_threshold():
    keep, scores = soft_nms(BOXES, SCORES, torch.zeros(3, dtype=torch.long), iou_thr=0.3, method="linear")
    assert keep.tolist() == [0, 2, 1]  # B drops below C: 0.8 * (1 - 1/3) = 0.533
    assert scores.tolist() == pytest.approx([0.9, 0.7, 0.8 * (1 - IOU_AB)])
    # below the threshold nothing decays
    keep, scores = soft_nms(BOXES, SCORES, torch.zeros(3, dtype=torch.long), iou_thr=0.5, method="linear")
    assert keep.tolist() == [0, 1, 2] and scores.tolist() == pytest.approx([0.9, 0.8, 0.7])


def test_gaussian_soft_nms():
    keep, scores = soft_nms(BOXES, SCORES, torch.zeros(3, dtype=torch.long), sigma=0.5, method="gaussian")
    decayed = 0.8 * math.exp(-IOU_AB ** 2 / 0.5)  # 0.6404
    assert keep.tolist() == [0, 2, 1]
    assert scores.tolist() == pytest.approx([0.9, 0.7, decayed])
    keep, scores = soft_nms(BOXES, SCORES, torch.zeros(3, dtype=torch.long), sigma=2.0, method="gaussian")
    assert keep.tolist() == [0, 1, 2]
    assert scores.tolist() == pytest.approx([0.9, 0.8 * math.exp(-IOU_AB ** 2 / 2.0), 0.7])


def test_min_score_max_num_and_empty():
    keep, scores = soft_nms(BOXES, SCORES, torch.zeros(3, dtype=torch.long), method="linear", min_score=0.6)
    assert keep.tolist() == [0, 2]  # B decayed to 0.533 < 0.6
    keep, _ = soft_nms(BOXES, SCORES, torch.zeros(3, dtype=torch.long), method="linear", max_num=2)
    assert keep.tolist() == [0, 2]
    keep, scores = soft_nms(torch.zeros((0, 4)), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    assert keep.shape == (0,) and scores.shape == (0,)


def test_different_classes_do_not_suppress_each_other():
    idxs = torch.tensor([0, 1, 0])
    for method in ("linear", "gaussian"):
        keep, scores = soft_nms(BOXES, SCORES, idxs, iou_thr=0.3, method=method)
        assert keep.tolist() == [0, 1, 2]
        assert scores.tolist() == pytest.approx([0.9, 0.8, 0.7])


def Settings(iou_thr: float = 0.5, **kwargs) -> NMSSettings:
    return NMSSettings(score_thr=0.05, nms_pre=1000, iou_thr=iou_thr, max_per_img=100, **kwargs)


def nms_one(boxes: torch.Tensor, scores: torch.Tensor, settings: NMSSettings):
    """``multiclass_nms`` of one image: its valid rows (boxes, scores, labels)."""
    out = multiclass_nms(boxes[None], scores[None], settings)
    n = int(out.num_dets[0])
    return out.boxes[0, :n], out.scores[0, :n], out.labels[0, :n]


def test_multiclass_nms_with_soft_nms_decays_instead_of_removing():
    boxes = BOXES[:2]
    scores = torch.tensor([[0.9, 0.0], [0.8, 0.0]])  # one class; IoU 1/3
    hard = nms_one(boxes, scores, Settings(iou_thr=0.3))
    assert hard[0].shape == (1, 4)  # plain NMS removes B
    lin = nms_one(boxes, scores, Settings(iou_thr=0.3, nms_type="soft_nms_linear"))
    torch.testing.assert_close(lin[0], boxes)
    assert lin[1].tolist() == pytest.approx([0.9, 0.8 * (1 - IOU_AB)]) and lin[2].tolist() == [0, 0]
    gau = nms_one(boxes, scores, Settings(nms_type="soft_nms_gaussian", soft_nms_sigma=0.5))
    assert gau[1].tolist() == pytest.approx([0.9, 0.8 * math.exp(-IOU_AB ** 2 / 0.5)])
    # per-class boxes [N, C, 4] pick the box of each selected class
    per_class = torch.stack([boxes, boxes + 1.0], dim=1)
    out = nms_one(per_class, torch.tensor([[0.9, 0.0], [0.0, 0.8]]), Settings(nms_type="soft_nms_linear"))
    torch.testing.assert_close(out[0], torch.stack([boxes[0], boxes[1] + 1.0]))
    with pytest.raises(ValueError, match="nms_type"):
        Settings(nms_type="soft")


def test_soft_nms_outputs_are_padded_like_batched_nms():
    boxes = torch.stack([BOXES[:2], BOXES[:2] + 50.0])  # two images
    scores = torch.tensor([[[0.9, 0.0], [0.8, 0.0]], [[0.0, 0.7], [0.0, 0.0]]])
    out = multiclass_nms(boxes, scores, Settings(nms_type="soft_nms_linear", iou_thr=0.3))
    assert out.num_dets.tolist() == [2, 1] and out.num_dets.dtype == torch.int32
    assert out.boxes.shape == (2, 100, 4) and out.labels.dtype == torch.int32
    assert out.labels[1].tolist()[:2] == [1, -1] and out.scores[1, 1:].abs().sum() == 0
