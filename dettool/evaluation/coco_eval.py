"""COCO bbox metrics through pycocotools, and the inference loop that feeds it."""
from __future__ import annotations

import contextlib
import io
import sys

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm import tqdm

BBOX_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")


@torch.no_grad()
def inference(model: torch.nn.Module, loader, label_to_cat_id: list[int], device: torch.device,
              progress: bool = True) -> list[dict]:
    """Run ``model.predict`` over ``loader``; COCO result dicts (xywh boxes, category ids)."""
    model.eval()
    results = []
    bar = tqdm(loader, desc="eval", unit="batch", disable=not progress or not sys.stderr.isatty(), leave=False)
    for images, _, metas in bar:
        for meta, det in zip(metas, model.predict(images.to(device), metas)):
            boxes = det.boxes.cpu().numpy()
            scores = det.scores.cpu().numpy()
            labels = det.labels.cpu().numpy()
            for b, s, lab in zip(boxes, scores, labels):
                results.append({"image_id": meta["image_id"], "category_id": int(label_to_cat_id[int(lab)]),
                                "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                                "score": float(s)})
    return results


def coco_bbox_metrics(coco_gt: COCO, results: list[dict], image_ids: list[int] | None = None) -> dict[str, float]:
    """``bbox_AP`` ... ``bbox_AR100`` in [0, 1] (0 for every metric when there are no detections)."""
    if not results:
        return {f"bbox_{k}": 0.0 for k in BBOX_METRICS}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, dt, "bbox")
        if image_ids is not None:
            ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [max(float(v), 0.0) for v in ev.stats]  # pycocotools uses -1 for "no gt of this size"
    out = {f"bbox_{k}": stats[i] for i, k in enumerate(BBOX_METRICS)}
    out["_precision"] = ev.eval["precision"]  # [T, R, K, A, M]; for PR curves, not serialised
    return out


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
    if per_class:
        lines += ["", "| class | AP |", "|---|---|"] + [f"| {n} | {v:.4f} |" for n, v in per_class.items()]
    return "\n".join(lines)
