"""Matching engine detections to PyTorch detections, and the summed output differences."""
from __future__ import annotations

import pytest
import torch

from dettool.runtime.parity import OutputDiff, match_detections
from dettool.structures.detections import Detections


def dets(boxes, scores, labels, masks=None) -> Detections:
    return Detections(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(scores,
                                                                                            dtype=torch.float32),
                      torch.tensor(labels, dtype=torch.int64), masks)


def test_same_label_and_highest_iou_one_to_one():
    ref = dets([[0, 0, 10, 10], [0, 0, 10, 11], [50, 50, 60, 60]], [0.9, 0.8, 0.7], [0, 1, 0])
    # engine: a near copy of ref 1 (label 1), two boxes competing for ref 0, one box far from all
    got = dets([[0, 0, 10, 11.2], [0.5, 0, 10, 10], [0, 0, 10, 10.2], [100, 100, 110, 110]],
               [0.8, 0.85, 0.9, 0.5], [1, 0, 0, 0])
    pairs = match_detections(ref, got)
    # highest score first: got 2 takes ref 0, got 1 finds ref 0 taken (ref 2 does not overlap), got 0 -> ref 1
    assert pairs == [(0, 2), (1, 0)]


def test_iou_threshold_and_empty_inputs():
    ref = dets([[0, 0, 10, 10]], [0.9], [0])
    assert match_detections(ref, dets([[5, 0, 15, 10]], [0.9], [0])) == []  # IoU 1/3
    assert match_detections(ref, dets([[5, 0, 15, 10]], [0.9], [0]), iou_thr=0.3) == [(0, 0)]
    assert match_detections(ref, dets([], [], [])) == []
    assert match_detections(dets([], [], []), ref) == []


def test_output_diff_summary():
    diff = OutputDiff()
    diff.add(dets([[0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.5], [0, 1]),
             dets([[0, 0, 10.5, 10], [40, 40, 50, 50]], [0.8, 0.4], [0, 1]))
    diff.add(dets([], [], []), dets([], [], []))
    s = diff.summary()
    assert (s["matched"], s["unmatched_engine"], s["unmatched_torch"]) == (1, 1, 1)
    assert s["box_linf_px_max"] == pytest.approx(0.5) and s["box_linf_px_mean"] == pytest.approx(0.5)
    assert s["score_diff_max"] == pytest.approx(0.1)
    assert s["matched_fraction"] == pytest.approx(0.5)
    assert (s["torch_detections"], s["engine_detections"]) == (2, 2)
    assert s["matched_score_fraction"] == pytest.approx((0.9 + 0.8) / (0.9 + 0.5 + 0.8 + 0.4))
    assert s["box_linf_px_p99"] == pytest.approx(0.5)
    assert "mask_diff_max" not in s


def test_mask_difference_is_one_minus_mask_iou():
    a = torch.zeros(1, 8, 8, dtype=torch.bool)
    a[0, :4, :4] = True  # 16 pixels
    b = a.clone()
    b[0, 4, :4] = True  # 4 more
    diff = OutputDiff()
    diff.add(dets([[0, 0, 4, 4]], [0.9], [0], a), dets([[0, 0, 4, 5]], [0.9], [0], b))
    assert diff.summary()["mask_diff_max"] == pytest.approx(4 / 20)


def test_nothing_matched_gives_none():
    s = OutputDiff().summary()
    assert s["matched"] == 0 and s["box_linf_px_max"] is None and s["matched_fraction"] == 1.0
    assert s["matched_score_fraction"] == 1.0 and s["box_linf_px_p99"] is None


def test_equal_boxes_without_area_are_matched():
    """Boxes clipped to the image border can have zero width; equal ones still pair up."""
    ref = dets([[30, 5, 30, 20], [0, 0, 10, 10]], [0.3, 0.9], [2, 0])
    got = dets([[0, 0, 10, 10], [30, 5, 30, 20]], [0.9, 0.3], [0, 2])
    assert match_detections(ref, got) == [(1, 0), (0, 1)]
    assert match_detections(ref, dets([[31, 5, 31, 20]], [0.3], [2])) == []  # another degenerate box


def test_boxes_without_area_pair_within_half_a_pixel():
    """FP16 moves a border-flat box by thousandths of a pixel: still the same detection."""
    ref = dets([[30, 5, 30, 20], [0, 0, 10, 10]], [0.3, 0.9], [2, 0])
    got = dets([[30.004, 5.003, 30.004, 19.997], [0.2, 0.1, 10.1, 9.9]], [0.31, 0.9], [2, 0])
    assert sorted(match_detections(ref, got)) == [(0, 0), (1, 1)]
    # one flat, one with a sliver of area: no IoU to speak of, the distance decides
    assert match_detections(ref, dets([[29.999, 5, 30.003, 20]], [0.3], [2])) == [(0, 0)]
    # farther than half a pixel, or another label: another detection
    assert match_detections(ref, dets([[30.6, 5, 30.6, 20]], [0.3], [2])) == []
    assert match_detections(ref, dets([[30.004, 5, 30.004, 20]], [0.3], [1])) == []
