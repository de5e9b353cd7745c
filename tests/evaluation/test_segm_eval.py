"""COCO segm metrics: perfect masks score 1, none score 0; inference emits JSON-ready RLEs."""
from __future__ import annotations

import json

import pytest
import torch

from dettool.data.coco import load_coco
from dettool.errors import DataError
from dettool.evaluation.coco_eval import (
    SEGM_METRICS,
    coco_bbox_metrics,
    coco_segm_metrics,
    encode_masks,
    format_table,
    inference,
)
from dettool.structures.detections import Detections


@pytest.fixture(scope="module")
def coco_gt(tiny_synth):
    return load_coco(tiny_synth / "annotations" / "val.json")


def _gt_detections(coco_gt, image_id: int) -> Detections:
    """The image's ground truth as detections with score 1 and bool masks at the original size."""
    anns = coco_gt.imgToAnns.get(image_id, [])
    cat_ids = sorted(coco_gt.getCatIds())
    boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                          for a in anns], dtype=torch.float32).reshape(-1, 4)
    info = coco_gt.imgs[image_id]
    masks = torch.stack([torch.from_numpy(coco_gt.annToMask(a)).bool() for a in anns]) if anns else \
        torch.zeros((0, info["height"], info["width"]), dtype=torch.bool)
    return Detections(boxes, torch.ones(len(anns)), torch.tensor([cat_ids.index(a["category_id"]) for a in anns]),
                      masks=masks)


class _GroundTruthModel(torch.nn.Module):
    def __init__(self, coco_gt) -> None:
        super().__init__()
        self.coco_gt = coco_gt

    def predict(self, images: torch.Tensor, metas: list[dict]) -> list[Detections]:
        return [_gt_detections(self.coco_gt, m["image_id"]) for m in metas]


def test_perfect_masks_score_one_and_results_are_json(coco_gt):
    loader = [(torch.zeros(1, 3, 8, 8), [{}], [{"image_id": i}]) for i in sorted(coco_gt.imgs)]
    results = inference(_GroundTruthModel(coco_gt), loader, sorted(coco_gt.getCatIds()), torch.device("cpu"),
                         progress=False)
    assert results and all(isinstance(r["segmentation"]["counts"], str) for r in results)
    json.dumps(results)
    bbox = coco_bbox_metrics(coco_gt, results)  # pycocotools' loadRes adds keys to the dicts it is given
    segm = coco_segm_metrics(coco_gt, results)
    assert set(segm) == {f"segm_{k}" for k in SEGM_METRICS}
    assert segm["segm_AP"] == pytest.approx(1.0) and segm["segm_AP50"] == pytest.approx(1.0)
    assert all(0.0 <= v <= 1.0 for v in segm.values())
    assert bbox["bbox_AP"] == pytest.approx(1.0)
    table = format_table(dict(bbox, **segm))
    assert "| segm AP | 1.0000 |" in table and "| bbox AP | 1.0000 |" in table


def test_a_wrong_mask_lowers_segm_ap_but_not_bbox_ap(coco_gt):
    results = []
    for image_id in sorted(coco_gt.imgs):
        det = _gt_detections(coco_gt, image_id)
        det.masks[:, :, : det.masks.shape[2] // 2] = False  # keep the boxes, cut the masks in half
        for b, rle, lab in zip(det.boxes.tolist(), encode_masks(det.masks), det.labels.tolist()):
            results.append({"image_id": image_id, "category_id": sorted(coco_gt.getCatIds())[lab],
                            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": 1.0, "segmentation": rle})
    assert coco_segm_metrics(coco_gt, results)["segm_AP"] < 0.9
    assert coco_bbox_metrics(coco_gt, results)["bbox_AP"] == pytest.approx(1.0)


def test_no_results_or_box_only_results_score_zero(coco_gt):
    assert coco_segm_metrics(coco_gt, []) == {f"segm_{k}": 0.0 for k in SEGM_METRICS}
    box_only = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9}]
    assert coco_segm_metrics(coco_gt, box_only)["segm_AP"] == 0.0
    assert "segm" not in format_table(coco_bbox_metrics(coco_gt, box_only))


def test_ground_truth_without_masks_is_a_data_error(tmp_path):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png", "width": 20, "height": 10}],
                                "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5],
                                                 "area": 25, "iscrowd": 0}],
                                "categories": [{"id": 1, "name": "a"}]}))
    masks = torch.zeros((1, 10, 20), dtype=torch.bool)
    masks[0, 1:6, 1:6] = True
    results = [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "score": 0.9,
                "segmentation": encode_masks(masks)[0]}]
    with pytest.raises(DataError, match="annotation id 7"):
        coco_segm_metrics(load_coco(path), results)
