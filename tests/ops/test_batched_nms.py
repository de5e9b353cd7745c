"""dettool::batched_nms against torchvision.ops.batched_nms and against the spec's greedy rule."""
from __future__ import annotations

import pytest
import torch
import torchvision

from dettool.errors import DettoolError
from dettool.ops import batched_nms


def random_boxes(*shape: int, size: float = 100.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """``Tensor[*shape, 4]`` xyxy boxes with positive area inside ``[0, 1.5 * size]``."""
    xy = torch.rand(*shape, 2, generator=generator) * size
    wh = torch.rand(*shape, 2, generator=generator) * size / 2 + 1
    return torch.cat([xy, xy + wh], dim=-1)


def torchvision_expected(boxes, scores, score_threshold, iou_threshold, k):
    """Per image ``(boxes, scores, classes)``: torchvision's batched_nms over the thresholded candidates."""
    results = []
    for b in range(scores.shape[0]):
        n, c = (scores[b] > score_threshold).nonzero(as_tuple=True)
        cand_boxes = boxes[b, n] if boxes.dim() == 3 else boxes[b, n, c]
        keep = torchvision.ops.batched_nms(cand_boxes, scores[b, n, c], c, iou_threshold)[:k]
        results.append((cand_boxes[keep], scores[b, n, c][keep], c[keep]))
    return results


def greedy_expected(boxes, scores, score_threshold, iou_threshold, k):
    """The spec read literally: visit by (decreasing score, increasing n * C + c), keep unless a kept
    candidate of the same class has IoU > iou_threshold."""
    results = []
    num_classes = scores.shape[2]
    for b in range(scores.shape[0]):
        flat = scores[b].reshape(-1)
        candidates = [i for i in range(flat.numel()) if flat[i] > score_threshold]
        order = sorted(candidates, key=lambda i: (-flat[i].item(), i))
        kept: list[int] = []
        for i in order:
            box = boxes[b, i // num_classes] if boxes.dim() == 3 else boxes[b].reshape(-1, 4)[i]
            same_class = [j for j in kept if j % num_classes == i % num_classes]
            if same_class:
                others = torch.stack([boxes[b, j // num_classes] if boxes.dim() == 3 else boxes[b].reshape(-1, 4)[j]
                                      for j in same_class])
                if (torchvision.ops.box_iou(box[None], others) > iou_threshold).any():
                    continue
            kept.append(i)
        kept = kept[:k]
        idx = torch.tensor(kept, dtype=torch.long)
        kept_boxes = boxes[b, idx // num_classes] if boxes.dim() == 3 else boxes[b].reshape(-1, 4)[idx]
        results.append((kept_boxes.reshape(-1, 4), flat[idx], idx % num_classes))
    return results


def assert_matches(outputs, expected, k: int) -> None:
    num_dets, det_boxes, det_scores, det_classes = outputs
    batch = len(expected)
    assert num_dets.dtype == torch.int32 and det_classes.dtype == torch.int32
    assert det_boxes.dtype == torch.float32 and det_scores.dtype == torch.float32
    assert det_boxes.shape == (batch, k, 4) and det_scores.shape == (batch, k) and det_classes.shape == (batch, k)
    for b, (boxes, scores, classes) in enumerate(expected):
        n = len(scores)
        assert num_dets[b].item() == n
        torch.testing.assert_close(det_boxes[b, :n], boxes.float(), rtol=0, atol=0)
        torch.testing.assert_close(det_scores[b, :n], scores.float(), rtol=0, atol=0)
        assert det_classes[b, :n].tolist() == classes.tolist()
        assert (det_boxes[b, n:] == 0).all() and (det_scores[b, n:] == 0).all() and (det_classes[b, n:] == -1).all()


@pytest.mark.parametrize("per_class", [False, True])
def test_random_inputs_match_torchvision_and_greedy_rule(per_class: bool) -> None:
    g = torch.Generator().manual_seed(0)
    boxes = random_boxes(2, 60, 3, generator=g) if per_class else random_boxes(2, 60, generator=g)
    scores = torch.rand(2, 60, 3, generator=g)
    outputs = batched_nms(boxes, scores, 0.3, 0.5, 25)
    assert_matches(outputs, torchvision_expected(boxes, scores, 0.3, 0.5, 25), 25)
    assert_matches(outputs, greedy_expected(boxes, scores, 0.3, 0.5, 25), 25)


def test_images_of_a_batch_keep_different_counts() -> None:
    g = torch.Generator().manual_seed(1)
    boxes, scores = random_boxes(3, 40, generator=g), torch.rand(3, 40, 2, generator=g)
    scores[1] *= 0.5  # fewer candidates above 0.4
    scores[2] = 0.0  # none
    num_dets, *_ = outputs = batched_nms(boxes, scores, 0.4, 0.6, 100)
    assert len(set(num_dets.tolist())) == 3 and num_dets[2] == 0
    assert_matches(outputs, torchvision_expected(boxes, scores, 0.4, 0.6, 100), 100)


def test_score_threshold_is_strict_and_nothing_passes() -> None:
    boxes = random_boxes(1, 5)
    scores = torch.full((1, 5, 2), 0.5)
    num_dets, det_boxes, det_scores, det_classes = batched_nms(boxes, scores, 0.5, 0.5, 4)
    assert num_dets.tolist() == [0]
    assert (det_boxes == 0).all() and (det_scores == 0).all() and (det_classes == -1).all()


@pytest.mark.parametrize("per_class", [False, True])
def test_empty_input(per_class: bool) -> None:
    boxes = torch.zeros(2, 0, 3, 4) if per_class else torch.zeros(2, 0, 4)
    num_dets, det_boxes, det_scores, det_classes = batched_nms(boxes, torch.zeros(2, 0, 3), 0.05, 0.5, 7)
    assert num_dets.tolist() == [0, 0]
    assert det_boxes.shape == (2, 7, 4) and (det_boxes == 0).all()
    assert (det_scores == 0).all() and (det_classes == -1).all()


def test_k_larger_than_candidates_and_k_zero() -> None:
    g = torch.Generator().manual_seed(2)
    boxes, scores = random_boxes(1, 4, generator=g), torch.rand(1, 4, 2, generator=g)
    outputs = batched_nms(boxes, scores, 0.0, 0.5, 50)
    assert_matches(outputs, torchvision_expected(boxes, scores, 0.0, 0.5, 50), 50)
    num_dets, det_boxes, _, _ = batched_nms(boxes, scores, 0.0, 0.5, 0)
    assert num_dets.tolist() == [0] and det_boxes.shape == (1, 0, 4)


def test_equal_scores_are_ordered_by_flat_index() -> None:
    # Disjoint boxes, one score for all: the output is the flat index order n * C + c.
    boxes = torch.tensor([[[0.0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]]])
    scores = torch.full((1, 3, 2), 0.7)
    num_dets, det_boxes, _, det_classes = batched_nms(boxes, scores, 0.1, 0.5, 10)
    assert num_dets.item() == 6
    assert det_classes[0, :6].tolist() == [0, 1, 0, 1, 0, 1]
    assert det_boxes[0, :6, 0].tolist() == [0, 0, 20, 20, 40, 40]
    # Two overlapping boxes of one class with equal scores: the smaller index is kept.
    boxes = torch.tensor([[[0.0, 0, 10, 10], [1, 1, 10, 10]]])
    num_dets, det_boxes, _, _ = batched_nms(boxes, torch.full((1, 2, 1), 0.9), 0.1, 0.5, 10)
    assert num_dets.item() == 1 and det_boxes[0, 0].tolist() == [0, 0, 10, 10]


@pytest.mark.parametrize("num_boxes", [40, 300])
def test_many_ties_follow_the_greedy_rule(num_boxes: int) -> None:
    g = torch.Generator().manual_seed(3)
    boxes = random_boxes(1, num_boxes, size=300, generator=g)
    scores = torch.randint(1, 5, (1, num_boxes, 3), generator=g).float() / 4  # four distinct values
    outputs = batched_nms(boxes, scores, 0.2, 0.3, 60)
    assert_matches(outputs, greedy_expected(boxes, scores, 0.2, 0.3, 60), 60)


def test_iou_uses_the_original_coordinates() -> None:
    # IoU(box 0, box 1) = 0.9434 < 0.945: both kept. batched_nms's small-input path shifts class 1
    # by 3e6 + 1 (the largest coordinate), where float32 rounds 10.6 to 10.5 and the IoU to 0.952.
    boxes = torch.tensor([[[0.0, 0, 10, 10], [0, 0, 10, 10.6], [3e6, 3e6, 3e6 + 10, 3e6 + 10]]])
    scores = torch.tensor([[[0.0, 0.9], [0.0, 0.8], [0.7, 0.0]]])
    shifted = torchvision.ops.batched_nms(boxes[0], torch.tensor([0.9, 0.8, 0.7]), torch.tensor([1, 1, 0]), 0.945)
    assert shifted.tolist() == [0, 2]
    outputs = batched_nms(boxes, scores, 0.1, 0.945, 5)
    assert outputs[0].tolist() == [3]
    assert_matches(outputs, greedy_expected(boxes, scores, 0.1, 0.945, 5), 5)


def test_float16_inputs_compute_in_float32() -> None:
    g = torch.Generator().manual_seed(4)
    boxes, scores = random_boxes(2, 30, generator=g).half(), torch.rand(2, 30, 4, generator=g).half()
    outputs = batched_nms(boxes, scores, 0.25, 0.5, 20)
    assert_matches(outputs, torchvision_expected(boxes.float(), scores.float(), 0.25, 0.5, 20), 20)


def test_bad_shapes_raise_a_dettool_error() -> None:
    with pytest.raises(DettoolError, match="boxes must be"):
        batched_nms(torch.zeros(1, 5, 5), torch.zeros(1, 5, 2), 0.1, 0.5, 3)
    with pytest.raises(DettoolError, match="scores must be"):
        batched_nms(torch.zeros(1, 5, 4), torch.zeros(5, 2), 0.1, 0.5, 3)
