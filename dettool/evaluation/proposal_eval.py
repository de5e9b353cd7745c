"""Class-agnostic proposal recall (AR@N) through pycocotools, as MMDetection's ``proposal`` metric."""
from __future__ import annotations

import contextlib
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def proposal_recall(coco_gt: COCO, proposals: list[dict], max_dets: tuple[int, ...] = (100, 300, 1000),
                    image_ids: list[int] | None = None) -> dict[str, float]:
    """Average recall over IoU .50:.05:.95, area 'all', for each number of proposals per image.

    Categories are ignored (``params.useCats = 0``): a proposal may match a gt of any class.
    Crowd gt are ignored as in the COCO bbox metric.

    Args:
        coco_gt: ground truth.
        proposals: dicts with ``image_id``, ``bbox`` (x, y, w, h in original pixels) and ``score``;
            any ``category_id`` is ignored.
        max_dets: proposals per image kept (highest scores first) for each AR value.
        image_ids: images to evaluate (default: every image of ``coco_gt``).

    Returns: ``{'AR@<n>': recall in [0, 1]}`` for each ``n`` in ``max_dets`` (0 where there are no
    proposals or no gt).
    """
    keys = [f"AR@{m}" for m in max_dets]
    if not proposals:
        return {k: 0.0 for k in keys}
    ev = proposal_cocoeval(coco_gt, proposals, max_dets, image_ids)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    recall = ev.eval["recall"]  # [T, K = 1, A, M]; -1 where there is no gt
    area = ev.params.areaRngLbl.index("all")
    out = {}
    for k, m in zip(keys, max_dets):
        r = recall[:, 0, area, ev.params.maxDets.index(m)]
        r = r[r > -1]
        out[k] = float(np.mean(r)) if r.size else 0.0
    return out


def proposal_cocoeval(coco_gt: COCO, proposals: list[dict], max_dets: tuple[int, ...] = (100, 300, 1000),
                      image_ids: list[int] | None = None) -> COCOeval:
    """The class-agnostic ``COCOeval`` behind ``proposal_recall`` (not yet evaluated); ``proposals``
    must not be empty."""
    # COCOeval files detections under their category even with useCats = 0; loadRes edits its input.
    cat_ids = coco_gt.getCatIds()
    cat_id = cat_ids[0] if cat_ids else 1
    results = [{"image_id": p["image_id"], "bbox": [float(v) for v in p["bbox"]], "score": float(p["score"]),
                "category_id": cat_id} for p in proposals]
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
    ev.params.useCats = 0
    ev.params.maxDets = list(max_dets)
    if image_ids is not None:
        ev.params.imgIds = list(image_ids)
    return ev


def format_recall_table(recall: dict[str, float]) -> str:
    """Markdown table of ``proposal_recall``'s values."""
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in recall.items()]
    return "\n".join(lines)
