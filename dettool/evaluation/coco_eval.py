"""COCO bbox and segm metrics through pycocotools, and the inference loop that feeds them."""
from __future__ import annotations

import contextlib
import io
import sys

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm import tqdm

from dettool.errors import DataError

BBOX_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")
SEGM_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def encode_masks(masks: torch.Tensor) -> list[dict]:
    """``bool Tensor[K, H, W]`` -> K compressed COCO RLEs ``{"size": [H, W], "counts": str}`` (JSON-ready)."""
    if masks.shape[0] == 0:
        return []
    arr = np.asfortranarray(masks.cpu().numpy().astype(np.uint8).transpose(1, 2, 0))  # [H, W, K], column-major
    rles = mask_utils.encode(arr)
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


@torch.no_grad()
def inference(model: torch.nn.Module, loader, label_to_cat_id: list[int], device: torch.device,
              progress: bool = True) -> list[dict]:
    """Run ``model.predict`` over ``loader``; COCO result dicts (xywh boxes, category ids).

    When a ``Detections`` carries ``masks`` (bool ``[K, H, W]`` at the original size), each of
    its dicts also holds ``segmentation``: a compressed RLE with ``counts`` as ``str``, so the
    list serialises to JSON and feeds both ``coco_bbox_metrics`` and ``coco_segm_metrics``.
    """
    model.eval()
    results = []
    bar = tqdm(loader, desc="eval", unit="batch", disable=not progress or not sys.stderr.isatty(), leave=False)
    for images, _, metas in bar:
        results += detections_to_results(model.predict(images.to(device), metas), metas, label_to_cat_id)
    return results


def detections_to_results(dets: list, metas: list[dict], label_to_cat_id: list[int]) -> list[dict]:
    """One ``Detections`` per image -> COCO result dicts (xywh boxes, category ids, RLE masks)."""
    results = []
    for meta, det in zip(metas, dets):
        boxes = det.boxes.cpu().numpy()
        scores = det.scores.cpu().numpy()
        labels = det.labels.cpu().numpy()
        rles = encode_masks(det.masks) if det.masks is not None else None
        for i, (b, s, lab) in enumerate(zip(boxes, scores, labels)):
            result = {"image_id": meta["image_id"], "category_id": int(label_to_cat_id[int(lab)]),
                      "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                      "score": float(s)}
            if rles is not None:
                result["segmentation"] = rles[i]
            results.append(result)
    return results


def _cocoeval(coco_gt: COCO, dets: list[dict], iou_type: str, image_ids: list[int] | None) -> COCOeval:
    """A ``COCOeval`` of ``dets`` on ``image_ids`` (default all), not yet evaluated."""
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco_gt, coco_gt.loadRes(dets), iou_type)
    if image_ids is not None:
        ev.params.imgIds = list(image_ids)
    return ev


def _bbox_dets(results: list[dict]) -> list[dict]:
    # loadRes edits the dicts it gets (adds polygons), so it gets copies without masks
    return [{k: v for k, v in r.items() if k != "segmentation"} for r in results]


def _segm_dets(results: list[dict]) -> list[dict]:
    """Copies without ``bbox`` of the results that carry a ``segmentation`` (see ``coco_segm_metrics``)."""
    return [{"image_id": r["image_id"], "category_id": r["category_id"], "score": r["score"],
             "segmentation": r["segmentation"]} for r in results if r.get("segmentation") is not None]


def cocoeval_of(coco_gt: COCO, results: list[dict], iou_type: str,
                image_ids: list[int] | None = None) -> COCOeval | None:
    """The ``COCOeval`` (``bbox`` or ``segm``, not yet evaluated) behind ``coco_bbox_metrics`` /
    ``coco_segm_metrics``, its detections prepared the same way; None when there are none."""
    dets = _bbox_dets(results) if iou_type == "bbox" else _segm_dets(results)
    return _cocoeval(coco_gt, dets, iou_type, image_ids) if dets else None


def _run_cocoeval(coco_gt: COCO, dets: list[dict], iou_type: str,
                  image_ids: list[int] | None) -> tuple[COCOeval, list[float]]:
    """Evaluate, accumulate and summarise silently; stats clamped at 0 (pycocotools' -1 = no gt)."""
    ev = _cocoeval(coco_gt, dets, iou_type, image_ids)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev, [max(float(v), 0.0) for v in ev.stats]


def coco_bbox_metrics(coco_gt: COCO, results: list[dict], image_ids: list[int] | None = None) -> dict[str, float]:
    """``bbox_AP`` ... ``bbox_AR100`` in [0, 1] (0 for every metric when there are no detections)."""
    if not results:
        return {f"bbox_{k}": 0.0 for k in BBOX_METRICS}
    ev, stats = _run_cocoeval(coco_gt, _bbox_dets(results), "bbox", image_ids)
    out = {f"bbox_{k}": stats[i] for i, k in enumerate(BBOX_METRICS)}
    out["_precision"] = ev.eval["precision"]  # [T, R, K, A, M]; for PR curves, not serialised
    return out


def coco_segm_metrics(coco_gt: COCO, results: list[dict], image_ids: list[int] | None = None) -> dict[str, float]:
    """``segm_AP`` ... ``segm_APl`` in [0, 1] from the results that carry a ``segmentation``.

    Results without one are skipped; with none left every metric is 0. The dicts are copied
    without ``bbox``: given a box, pycocotools' ``loadRes`` would take the box area as the
    detection's area and shift APs / APm / APl (MMDetection drops it for the same reason).
    """
    dets = _segm_dets(results)
    if not dets:
        return {f"segm_{k}": 0.0 for k in SEGM_METRICS}
    missing = [a["id"] for a in coco_gt.dataset["annotations"] if not a.get("segmentation")]
    if missing:
        raise DataError(f"segm metrics need ground-truth masks; annotation id {missing[0]} "
                        f"({len(missing)} in all) has no 'segmentation'")
    _, stats = _run_cocoeval(coco_gt, dets, "segm", image_ids)
    return {f"segm_{k}": stats[i] for i, k in enumerate(SEGM_METRICS)}


def detection_metrics(coco_gt: COCO, results: list[dict], proposals_only: bool = False,
                      image_ids: list[int] | None = None) -> dict:
    """The metrics a model is judged by: proposal recall (``AR@100/300/1000``) for an RPN, else
    bbox metrics, plus segm metrics when results carry masks. ``_precision`` is kept for plots.
    ``image_ids``: evaluate these images only (default: every image of ``coco_gt``)."""
    if proposals_only:
        from dettool.evaluation.proposal_eval import proposal_recall

        return proposal_recall(coco_gt, results, image_ids=image_ids)
    with_masks = any(r.get("segmentation") is not None for r in results)
    metrics = coco_bbox_metrics(coco_gt, results, image_ids)
    if with_masks:
        metrics.update(coco_segm_metrics(coco_gt, results, image_ids))
    return metrics


def per_class_ap(precision: np.ndarray, names: list[str]) -> dict[str, float]:
    """AP@[.5:.95] per class from COCOeval's precision array ``[T, R, K, A, M]`` (area all, 100 dets)."""
    out = {}
    for k, name in enumerate(names):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        out[name] = float(p.mean()) if p.size else 0.0
    return out


def format_table(metrics: dict[str, float], per_class: dict[str, float] | None = None) -> str:
    """Readable COCO summary table (values in [0, 1])."""
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| bbox {k} | {metrics[f'bbox_{k}']:.4f} |" for k in BBOX_METRICS if f"bbox_{k}" in metrics]
    lines += [f"| segm {k} | {metrics[f'segm_{k}']:.4f} |" for k in SEGM_METRICS if f"segm_{k}" in metrics]
    lines += [f"| {k} | {v:.4f} |" for k, v in metrics.items() if k.startswith("AR@")]
    if per_class:
        lines += ["", "| class | AP |", "|---|---|"] + [f"| {n} | {v:.4f} |" for n, v in per_class.items()]
    return "\n".join(lines)
