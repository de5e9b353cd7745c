"""The paired bootstrap of an AP difference: each resample's AP equals a direct COCOeval of the
resampled images (an image drawn twice copied under two ids), so the interval is exact."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO

from dettool.evaluation.coco_eval import coco_bbox_metrics, cocoeval_of
from dettool.evaluation.paired_bootstrap import image_matches, paired_bootstrap
from dettool.evaluation.proposal_eval import proposal_cocoeval, proposal_recall


def coco_of(data: dict) -> COCO:
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def toy_set(num_images: int = 7, seed: int = 0) -> tuple[dict, list[dict], list[dict]]:
    """Ground truth (3 classes, one crowd box, class 3 only in some images) and two result sets:
    jittered copies of the gt with false positives, one of them shifted a little more, with a
    few tied scores."""
    rng = np.random.default_rng(seed)
    images = [{"id": 10 + i, "width": 200, "height": 160, "file_name": f"{i}.png"} for i in range(num_images)]
    anns = []
    for img in images:
        for _ in range(rng.integers(1, 5)):
            x, y = rng.uniform(0, 120, 2)
            w, h = rng.uniform(8, 70, 2)
            cat = int(rng.integers(1, 3 if img["id"] % 3 else 4))
            anns.append({"id": len(anns) + 1, "image_id": img["id"], "category_id": cat, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": int(len(anns) == 2)})
    gt = {"images": images, "annotations": anns, "categories": [{"id": c, "name": str(c)} for c in (1, 2, 3)]}

    def detections(jitter: float) -> list[dict]:
        out = []
        for a in anns:
            if rng.random() < 0.85:
                box = list(np.asarray(a["bbox"]) + rng.normal(0, jitter, 4))
                out.append({"image_id": a["image_id"], "category_id": a["category_id"], "bbox": box,
                            "score": float(np.round(rng.uniform(0.3, 1.0), 1))})  # rounded: ties
        for img in images:
            for _ in range(2):
                out.append({"image_id": img["id"], "category_id": int(rng.integers(1, 4)),
                            "bbox": [*rng.uniform(0, 150, 2), *rng.uniform(5, 40, 2)],
                            "score": float(rng.uniform(0.05, 0.8))})
        return out

    return gt, detections(1.0), detections(4.0)


def resampled(gt: dict, results: list[dict], positions: list[int]) -> tuple[dict, list[dict]]:
    """The data set holding image ``positions[j]`` as image ``j + 1`` (repeats become copies)."""
    images, anns, dets = [], [], []
    for j, pos in enumerate(positions):
        img = gt["images"][pos]
        images.append(dict(img, id=j + 1))
        anns += [dict(a, id=len(anns) + n + 1, image_id=j + 1)
                 for n, a in enumerate(a for a in gt["annotations"] if a["image_id"] == img["id"])]
        dets += [dict(r, image_id=j + 1) for r in results if r["image_id"] == img["id"]]
    return dict(gt, images=images, annotations=anns), dets


def direct_ap(gt: dict, results: list[dict], positions) -> float:
    new_gt, dets = resampled(gt, results, list(positions))
    return coco_bbox_metrics(coco_of(new_gt), [dict(d) for d in dets])["bbox_AP"]


def test_accumulate_equals_cocoeval_on_all_and_on_a_resample():
    gt, results, _ = toy_set()
    coco = coco_of(gt)
    matches = image_matches(cocoeval_of(coco, [dict(r) for r in results], "bbox"))
    assert matches.average_precision() == pytest.approx(coco_bbox_metrics(coco, results)["bbox_AP"], abs=1e-12)
    positions = [3, 3, 0, 6, 1, 1, 1]  # repeats, and images 2, 4, 5 left out
    assert matches.average_precision(np.array(positions)) == pytest.approx(direct_ap(gt, results, positions),
                                                                           abs=1e-12)
    assert matches.average_precision(np.array([2])) == pytest.approx(direct_ap(gt, results, [2]), abs=1e-12)


def test_average_recall_equals_proposal_recall_on_a_resample():
    gt, results, _ = toy_set(seed=1)
    positions = [5, 0, 0, 2, 6, 6, 4]
    matches = image_matches(proposal_cocoeval(coco_of(gt), results, (1, 2, 100)))
    new_gt, dets = resampled(gt, results, positions)
    direct = proposal_recall(coco_of(new_gt), dets, (1, 2, 100))
    for m in (1, 2, 100):
        assert matches.average_recall(m, np.array(positions)) == pytest.approx(direct[f"AR@{m}"], abs=1e-12)


def test_interval_equals_direct_recomputation_of_each_resample():
    gt, results_a, results_b = toy_set(num_images=6, seed=2)
    coco = coco_of(gt)
    a = image_matches(cocoeval_of(coco, [dict(r) for r in results_a], "bbox"))
    b = image_matches(cocoeval_of(coco, [dict(r) for r in results_b], "bbox"))
    interval = paired_bootstrap(a, b, lambda m, i: m.average_precision(i), num_resamples=5, seed=7)
    rng = np.random.default_rng(7)  # the same draws, recomputed from scratch
    diffs = []
    for _ in range(5):
        positions = rng.integers(0, 6, 6)
        diffs.append(direct_ap(gt, results_b, positions) - direct_ap(gt, results_a, positions))
    low, high = np.percentile(diffs, [2.5, 97.5])
    assert (interval.low, interval.high) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
    assert interval.delta == pytest.approx(coco_bbox_metrics(coco, results_b)["bbox_AP"]
                                           - coco_bbox_metrics(coco, results_a)["bbox_AP"], abs=1e-12)
    assert (interval.num_images, interval.num_resamples, interval.seed) == (6, 5, 7)


def test_identical_results_give_a_zero_width_interval():
    gt, results, _ = toy_set()
    coco = coco_of(gt)
    a = image_matches(cocoeval_of(coco, [dict(r) for r in results], "bbox"))
    b = image_matches(cocoeval_of(coco, [dict(r) for r in results], "bbox"))
    interval = paired_bootstrap(a, b, lambda m, i: m.average_precision(i), num_resamples=50)
    assert (interval.delta, interval.low, interval.high) == (0.0, 0.0, 0.0)
