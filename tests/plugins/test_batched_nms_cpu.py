"""DettoolBatchedNMS CPU implementation vs torchvision (exact: same boxes, scores, classes, order)."""
from __future__ import annotations

import pytest
import torch
from dettool_op_references import reference_batched_nms, torchvision_batched_nms


def random_boxes(generator: torch.Generator, *shape: int, size: float = 100.0) -> torch.Tensor:
    """``Tensor[*shape, 4]`` xyxy boxes with corners in [0, size] and sides in [1, size / 2]."""
    xy = torch.rand(*shape, 2, generator=generator) * size
    wh = 1 + torch.rand(*shape, 2, generator=generator) * (size / 2 - 1)
    return torch.cat([xy, xy + wh], dim=-1)


def assert_same_detections(got, want) -> None:
    """Equal counts, and equal rows: NMS is a selection, so nothing is rounded."""
    num, boxes, scores, classes = got
    want_num, want_boxes, want_scores, want_classes = want
    assert torch.equal(num, want_num)
    assert torch.equal(classes, want_classes)
    assert torch.equal(scores, want_scores)
    assert torch.equal(boxes, want_boxes)


@pytest.mark.parametrize("per_class", [False, True], ids=["shared-boxes", "boxes-per-class"])
def test_random_inputs_match_torchvision(cpu_ops, per_class):
    g = torch.Generator().manual_seed(0)
    b, n, c = 3, 400, 6
    boxes = random_boxes(g, b, n, c) if per_class else random_boxes(g, b, n)
    scores = torch.rand(b, n, c, generator=g)
    args = (boxes, scores, 0.3, 0.5, 100)
    got = cpu_ops.batched_nms(*args)
    assert_same_detections(got, reference_batched_nms(*args))
    # The spec's literal statement; far from IoU ties its class offsets change nothing.
    assert_same_detections(got, torchvision_batched_nms(*args))
    assert (got[0] > 0).all()


def test_tied_scores_keep_flat_index_order(cpu_ops):
    """Scores from 4 values over 3 classes and many identical boxes: ties everywhere."""
    g = torch.Generator().manual_seed(1)
    b, n, c = 2, 200, 3
    boxes = random_boxes(g, b, n, size=40.0)
    boxes[:, 100:] = boxes[:, :100]  # exact duplicates
    scores = torch.randint(1, 5, (b, n, c), generator=g).float() / 4
    args = (boxes, scores, 0.0, 0.6, 150)
    got = cpu_ops.batched_nms(*args)
    assert_same_detections(got, reference_batched_nms(*args))
    for img in range(b):  # the output really holds ties, resolved by the reference's order
        kept_scores = got[2][img, : int(got[0][img])]
        assert kept_scores.unique().numel() < kept_scores.numel()


def test_k_larger_than_candidates_pads(cpu_ops):
    g = torch.Generator().manual_seed(2)
    boxes = random_boxes(g, 2, 5)
    scores = torch.rand(2, 5, 2, generator=g)
    num, det_boxes, det_scores, det_classes = cpu_ops.batched_nms(boxes, scores, 0.0, 0.5, 50)
    assert_same_detections((num, det_boxes, det_scores, det_classes),
                           reference_batched_nms(boxes, scores, 0.0, 0.5, 50))
    for img in range(2):
        k = int(num[img])
        assert 0 < k <= 10
        assert (det_classes[img, k:] == -1).all()
        assert (det_scores[img, k:] == 0).all() and (det_boxes[img, k:] == 0).all()


@pytest.mark.parametrize("case", ["no-candidate-above-threshold", "no-boxes", "no-images", "k-zero"])
def test_empty_inputs(cpu_ops, case):
    g = torch.Generator().manual_seed(3)
    b, n, c, k, thr = 2, 10, 3, 20, 0.5
    if case == "no-boxes":
        n = 0
    elif case == "no-images":
        b = 0
    elif case == "k-zero":
        k = 0
    elif case == "no-candidate-above-threshold":
        thr = 1.0
    boxes = random_boxes(g, b, n)
    scores = torch.rand(b, n, c, generator=g)
    got = cpu_ops.batched_nms(boxes, scores, thr, 0.5, k)
    assert_same_detections(got, reference_batched_nms(boxes, scores, thr, 0.5, k))
    num, det_boxes, det_scores, det_classes = got
    assert num.shape == (b,) and det_boxes.shape == (b, k, 4) and det_classes.shape == (b, k)
    assert (num == 0).all()
    assert (det_classes == -1).all() and (det_scores == 0).all() and (det_boxes == 0).all()


def test_thresholds_are_strict(cpu_ops):
    """score == score_threshold is no candidate; IoU == iou_threshold does not suppress."""
    boxes = torch.tensor([[[0, 0, 3, 1], [1, 0, 4, 1], [1, 0, 4, 1]]], dtype=torch.float32)  # IoU(0, 1) = 0.5
    scores = torch.tensor([[[0.9], [0.8], [0.25]]])
    num, _, det_scores, _ = cpu_ops.batched_nms(boxes, scores, 0.25, 0.5, 5)
    assert int(num[0]) == 2 and det_scores[0, :2].tolist() == pytest.approx([0.9, 0.8])
    num, _, _, _ = cpu_ops.batched_nms(boxes, scores, 0.25, 0.4999, 5)
    assert int(num[0]) == 1


def test_boxes_without_area_suppress_nothing(cpu_ops):
    """IoU with a zero-area box is 0 (torchvision computes 0 / 0 = NaN, never > threshold)."""
    boxes = torch.tensor([[[5, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 10], [2, 2, 2, 8]]], dtype=torch.float32)
    scores = torch.tensor([[[0.9], [0.8], [0.7], [0.6]]])
    got = cpu_ops.batched_nms(boxes, scores, 0.0, 0.0, 4)
    assert int(got[0][0]) == 4
    assert_same_detections(got, reference_batched_nms(boxes, scores, 0.0, 0.0, 4))


def test_many_candidates_no_cap(cpu_ops):
    """60,000 candidates in one image (every score above 0), K = 300."""
    g = torch.Generator().manual_seed(4)
    boxes = random_boxes(g, 1, 3000, size=400.0)
    scores = torch.rand(1, 3000, 20, generator=g)
    args = (boxes, scores, 0.0, 0.7, 300)
    got = cpu_ops.batched_nms(*args)
    assert int(got[0][0]) == 300
    assert_same_detections(got, reference_batched_nms(*args))
