"""The eval-engine verdict: "same detections" and "same AP" as separate checks, an AP difference
judged with its bootstrap interval (pass / fail / inconclusive), and the overall ``passed``."""
from __future__ import annotations

import copy

import pytest
import torch
from test_verdict_bootstrap import coco_of, toy_set

from dettool.runtime.eval_engine import Tolerances, ap_status, metric_intervals, overall_verdict, parity_checks
from dettool.runtime.parity import DETECTION_TOLERANCES, OutputDiff, detections_check
from dettool.runtime.report import format_report
from dettool.structures.detections import Detections

FP16 = DETECTION_TOLERANCES["fp16"]


def dets_of(results: list[dict], image_id: int, shift: float = 0.0) -> Detections:
    """One image's COCO results as ``Detections`` (xyxy), boxes moved right by ``shift`` px."""
    rows = [r for r in results if r["image_id"] == image_id]
    boxes = torch.tensor([[x + shift, y, x + w + shift, y + h] for x, y, w, h in (r["bbox"] for r in rows)],
                         dtype=torch.float32).reshape(-1, 4)
    return Detections(boxes, torch.tensor([r["score"] for r in rows]),
                      torch.tensor([r["category_id"] - 1 for r in rows], dtype=torch.int64))


def shifted(results: list[dict], image_ids: set[int], shift: float) -> list[dict]:
    out = copy.deepcopy(results)
    for r in out:
        if r["image_id"] in image_ids:
            r["bbox"][0] += shift
    return out


def judge(gt: dict, results_torch: list[dict], results_engine: list[dict], precision: str = "fp16",
          shift: dict[int, float] | None = None, num_resamples: int = 200):
    """The checks and the overall verdict, as ``evaluate_engine`` makes them."""
    from dettool.evaluation.coco_eval import coco_bbox_metrics

    coco = coco_of(gt)
    ids = [img["id"] for img in gt["images"]]
    torch_m = {"bbox_AP": coco_bbox_metrics(coco, results_torch)["bbox_AP"]}
    engine_m = {"bbox_AP": coco_bbox_metrics(coco, results_engine)["bbox_AP"]}
    intervals = metric_intervals(coco, results_torch, results_engine, ids, False, num_resamples)
    checks = parity_checks(torch_m, engine_m, precision, False, Tolerances(), intervals)
    diff = OutputDiff()
    for i in ids:
        diff.add(dets_of(results_torch, i), dets_of(results_torch, i, (shift or {}).get(i, 0.0)))
    summary = diff.summary()
    detections = detections_check(summary, Tolerances().for_detections(precision))
    basis = {"num_images": len(ids), "torch_detections": summary["torch_detections"],
             "engine_detections": summary["engine_detections"], "matched": summary["matched"]}
    return checks, detections, overall_verdict(checks, detections, "onnxruntime", basis)


def test_ap_status_is_an_equivalence_test():
    class Interval:
        def __init__(self, low, high):
            self.low, self.high = low, high

    assert ap_status(0.0, 0.003, Interval(-0.001, 0.002)) == "pass"
    assert ap_status(0.01, 0.003, Interval(0.006, 0.014)) == "fail"
    assert ap_status(-0.01, 0.003, Interval(-0.014, -0.006)) == "fail"
    assert ap_status(0.0094, 0.003, Interval(-0.004, 0.021)) == "inconclusive"  # too few images
    assert ap_status(0.0028, 0.003, Interval(0.0024, 0.0033)) == "inconclusive"  # on the edge
    assert ap_status(0.0, 0.003, None) == "pass" and ap_status(0.004, 0.003, None) == "fail"  # no interval
    assert ap_status(0.0, -1, Interval(0.0, 0.0)) == "fail"  # a negative tolerance fails everything


def test_identical_detections_pass_with_a_zero_width_interval():
    gt, results, _ = toy_set()
    (check,), detections, (passed, verdict, failures) = judge(gt, results, copy.deepcopy(results))
    assert (check.status, check.low, check.high, check.delta) == ("pass", 0.0, 0.0, 0.0)
    assert detections.passed and passed and failures == []
    assert verdict.startswith("PASSED (7 images, ") and "the detections are the same" in verdict


def test_a_tiny_set_cannot_resolve_an_ap_difference():
    """Boxes moved on one image of four: AP moves, but a resample without that image sees no
    difference, so the interval reaches from 0 to past the tolerance: inconclusive, and the
    verdict rests on the detections check (which fails: the boxes moved)."""
    gt, results, _ = toy_set(num_images=4, seed=3)
    moved = gt["images"][1]["id"]
    engine = shifted(results, {moved}, 6.0)
    (check,), detections, (passed, verdict, failures) = judge(gt, results, engine, shift={moved: 6.0})
    assert check.engine < check.torch - 0.003 and check.low < -0.003 <= check.high  # 0 is in the interval
    assert check.status == "inconclusive" and check.num_images == 4 and check.num_resamples == 200
    assert not detections.passed and not passed
    assert "verdict rests on the detections check (bbox_AP inconclusive)" in verdict
    assert failures[0].startswith("detections differ: ") and "inconclusive" in failures[0]
    # the same AP check with detections that agree passes on the detections check alone
    _, _, (passed, verdict, _) = judge(gt, results, engine)
    assert passed and verdict.startswith("PASSED (4 images") and "rests on the detections check" in verdict


def test_shifted_boxes_fail_the_detections_check():
    gt, results, _ = toy_set()
    diff = OutputDiff()
    for img in gt["images"]:
        diff.add(dets_of(results, img["id"]), dets_of(results, img["id"], 0.37))
    check = detections_check(diff.summary(), FP16)
    assert not check.passed
    failed = {c.name for c in check.criteria if not c.passed}
    assert failed == {"box_linf_mean_px"}  # the p99 limit (1 px) allows a third of a pixel
    assert check.failure() == "detections differ: box_linf_mean_px 0.37 > 0.1"
    same = OutputDiff()
    for img in gt["images"]:
        same.add(dets_of(results, img["id"]), dets_of(results, img["id"], 0.02))
    assert detections_check(same.summary(), FP16).passed
    assert not detections_check(same.summary(), DETECTION_TOLERANCES["fp32"]).passed  # 0.02 px > 0.01


def test_lost_confident_detections_fail_low_score_swaps_do_not():
    ref = Detections(torch.tensor([[0, 0, 10, 10], [50, 50, 60, 60], [80, 0, 90, 10.0]]),
                     torch.tensor([0.9, 0.8, 0.01]), torch.tensor([0, 0, 0]))
    swapped = Detections(torch.tensor([[0, 0, 10, 10], [50, 50, 60, 60], [0, 80, 10, 90.0]]),
                         torch.tensor([0.9, 0.8, 0.01]), torch.tensor([0, 0, 0]))
    lost = Detections(ref.boxes[[0, 2]], ref.scores[[0, 2]], ref.labels[[0, 2]])
    for got, ok in ((swapped, True), (lost, False)):
        diff = OutputDiff()
        diff.add(ref, got)
        s = diff.summary()
        assert detections_check(s, FP16).passed is ok
    assert s["matched_fraction"] == pytest.approx(2 / 3) and s["matched_score_fraction"] == pytest.approx(
        (1.8 + 0.02) / (1.71 + 0.91))


def test_same_ap_with_different_detections_passes_and_says_so():
    gt, results, _ = toy_set(num_images=40, seed=4)
    (check,), detections, (passed, verdict, failures) = judge(gt, results, copy.deepcopy(results),
                                                              shift={gt["images"][0]["id"]: 3.0})
    assert check.status == "pass" and not detections.passed
    assert passed and failures == [] and verdict.startswith("PASSED on AP (40 images")
    assert "but detections differ: box_linf_p99_px 3 > 1" in verdict  # one image's boxes moved by 3 px


def test_report_shows_what_the_verdict_rests_on(tmp_path):
    gt, results, _ = toy_set(num_images=4, seed=3)
    moved = gt["images"][1]["id"]
    checks, detections, (passed, verdict, failures) = judge(gt, results, shifted(results, {moved}, 6.0),
                                                            shift={moved: 6.0})
    from dataclasses import asdict

    report = {"engine": "/x/m.onnx", "backend": "onnxruntime", "engine_size_mb": 1.0, "model_type": "faster_rcnn",
              "precision": "fp16", "flavour": "custom", "config": "c.yaml", "device": "cpu", "num_images": 4,
              "batch_size": 4, "metrics": {"torch": {"bbox_AP": checks[0].torch},
                                           "engine": {"bbox_AP": checks[0].engine}},
              "parity": [asdict(c) for c in checks], "outputs": {"iou_thr": 0.5, "matched": 9, "unmatched_engine": 0,
                                                                 "unmatched_torch": 0, "box_linf_px_max": 6.0,
                                                                 "box_linf_px_mean": 1.0, "score_diff_max": 0.0,
                                                                 "score_diff_mean": 0.0},
              "latency": {}, "basis": {"num_images": 4, "torch_detections": 9, "engine_detections": 9, "matched": 9},
              "detections_check": detections.to_dict(), "passed": passed, "verdict": verdict, "failures": failures}
    text = format_report(report)
    assert "Rests on 4 images: 9 torch and 9 onnxruntime detections, 9 matched." in text
    assert "- same detections: **FAIL** (matched_score_fraction 1 >= 0.95, box_linf_mean_px" in text
    assert f"- same AP: bbox_AP {checks[0].engine - checks[0].torch:+.4f} (95% [" in text
    assert "4 images, 200 resamples), tol 0.003: inconclusive" in text
    assert "Parity FAILED (4 images" in text


def test_rpn_intervals_are_of_average_recall():
    from dettool.evaluation.proposal_eval import proposal_recall

    gt, results_a, results_b = toy_set(num_images=5, seed=5)
    coco = coco_of(gt)
    ids = [img["id"] for img in gt["images"]]
    intervals = metric_intervals(coco, results_a, results_b, ids, True, 20)
    assert set(intervals) == {"AR@100", "AR@300", "AR@1000"}
    a, b = proposal_recall(coco, results_a), proposal_recall(coco, results_b)
    for key, interval in intervals.items():
        assert interval.delta == pytest.approx(b[key] - a[key], abs=1e-12)
        assert interval.low <= interval.high and interval.num_resamples == 20
    assert metric_intervals(coco, results_a, [], ids, True, 20) == {}  # no proposals: no interval
    assert metric_intervals(coco, results_a, results_b, ids, False, 0) == {}  # --bootstrap 0
