"""CocoDetection(with_masks=True): masks follow resize and flip, match their boxes, decode from
polygons and both RLE forms, and broken segmentations are a DataError naming file and id."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pipeline_helpers import standard_pipeline
from pycocotools import mask as mask_utils

from dettool.data.coco import CocoDetection
from dettool.data.pipeline import Pipeline
from dettool.errors import DataError

CATEGORIES = [{"id": 1, "name": "a"}, {"id": 4, "name": "b"}]


def spec(scale: str, flip_prob: float = 0.0) -> Pipeline:
    return standard_pipeline(scale, flip_prob)


def synth(root: Path, scale: str, flip_prob: float = 0.0, with_masks: bool = True) -> CocoDetection:
    return CocoDetection(root / "annotations" / "train.json", root / "train", spec(scale, flip_prob),
                         filter_empty_gt=True, with_masks=with_masks)


def write_coco(root: Path, annotations: list[dict], size: tuple[int, int] = (40, 30)) -> Path:
    """One ``size`` (w, h) image ``a.png`` and the given annotations; returns the JSON path."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (50, 60, 70)).save(root / "img" / "a.png")
    anns = [dict({"id": 10 + k, "image_id": 1, "category_id": 1, "iscrowd": 0}, **a) for k, a in enumerate(annotations)]
    path = root / "ann.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png", "width": size[0], "height": size[1]}],
                                "annotations": anns, "categories": CATEGORIES}))
    return path


def uncompressed_rle(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE counts: run lengths down the columns, starting with a run of zeros."""
    runs, value, count = [], 0, 0
    for v in mask.flatten(order="F"):
        if v != value:
            runs.append(count)
            value, count = v, 0
        count += 1
    return runs + [count]


@pytest.mark.parametrize("scale", ["1333x800", "200x150"])  # up about 3x, down about 0.6x
def test_synth_masks_follow_the_resize_and_sit_in_their_boxes(tiny_synth, scale):
    ds = synth(tiny_synth, scale)
    plain = synth(tiny_synth, scale, with_masks=False)
    checked = 0
    for index in range(4):
        image, target, meta = ds[index]
        p_image, p_target, _ = plain[index]
        assert torch.equal(image, p_image)  # masks change nothing else
        assert torch.equal(target["boxes"], p_target["boxes"]) and torch.equal(target["labels"], p_target["labels"])
        masks = target["masks"]
        assert masks.dtype == torch.uint8 and set(masks.unique().tolist()) <= {0, 1}
        assert masks.shape == (target["boxes"].shape[0], *meta["img_shape"]) == (masks.shape[0], *image.shape[1:])
        sx, sy = meta["scale_factor"]
        anns = [a for a in ds.coco.imgToAnns[meta["image_id"]] if not a["iscrowd"]]
        for mask, box, ann in zip(masks, target["boxes"], anns):
            expected = ann["area"] * sx * sy
            if expected >= 400:  # below about 20 x 20 px the edge pixels are a large share of the area
                assert abs(int(mask.sum()) - expected) <= 0.1 * expected
                checked += 1
            elif expected >= 100:
                assert abs(int(mask.sum()) - expected) <= 0.2 * expected
            rows, cols = torch.nonzero(mask, as_tuple=True)
            x1, y1, x2, y2 = box.tolist()
            assert cols.min() >= math.floor(x1) - 1 and cols.max() + 1 <= math.ceil(x2) + 1
            assert rows.min() >= math.floor(y1) - 1 and rows.max() + 1 <= math.ceil(y2) + 1
    assert checked >= 3


def test_flip_mirrors_the_masks(tiny_synth):
    _, plain, _ = synth(tiny_synth, "400x300")[0]
    _, flipped, meta = synth(tiny_synth, "400x300", flip_prob=1.0)[0]
    assert meta["flip"] is True
    assert torch.equal(flipped["masks"], plain["masks"].flip(-1))
    x1, _, x2, _ = flipped["boxes"][0].tolist()
    cols = torch.nonzero(flipped["masks"][0], as_tuple=True)[1]
    assert cols.min() >= math.floor(x1) - 1 and cols.max() + 1 <= math.ceil(x2) + 1


def test_polygon_and_both_rle_forms_decode_in_box_order(tmp_path):
    h, w = 30, 40
    square = np.zeros((h, w), dtype=np.uint8)
    square[5:15, 20:32] = 1
    stripe = np.zeros((h, w), dtype=np.uint8)
    stripe[20:26, 2:38] = 1
    compressed = mask_utils.encode(np.asfortranarray(square))
    compressed["counts"] = compressed["counts"].decode("ascii")
    runs = uncompressed_rle(stripe)
    ann = write_coco(tmp_path, [
        {"bbox": [2, 2, 10, 10], "area": 64, "segmentation": [[2, 2, 10, 2, 10, 10, 2, 10]]},
        {"bbox": [0, 0, 40, 30], "area": 50, "iscrowd": 1, "segmentation": {"counts": "not decoded", "size": [h, w]}},
        {"bbox": [20, 5, 12, 10], "area": 120, "segmentation": compressed},
        {"bbox": [2, 20, 36, 6], "area": 216, "segmentation": {"counts": runs, "size": [h, w]}},
    ])
    _, target, _ = CocoDetection(ann, tmp_path / "img", spec("40x30"), with_masks=True)[0]
    masks = target["masks"]
    assert masks.shape == (3, h, w) and target["ignore_boxes"].shape == (1, 4)
    assert masks[0, 3:10, 3:10].all() and masks[0].sum() == 64  # pycocotools' polygon rasterisation
    assert torch.equal(masks[1], torch.from_numpy(square))
    assert torch.equal(masks[2], torch.from_numpy(stripe))


def test_image_without_instances_has_an_empty_mask_stack(tmp_path):
    ann = write_coco(tmp_path, [])
    _, target, meta = CocoDetection(ann, tmp_path / "img", spec("80x60"), with_masks=True)[0]
    assert target["masks"].shape == (0, *meta["img_shape"]) == (0, 60, 80)


def test_polygons_under_three_points_are_skipped(tmp_path):
    ann = write_coco(tmp_path, [{"bbox": [2, 2, 10, 10], "segmentation": [[2, 2, 10, 10]]},
                                {"bbox": [2, 2, 10, 10], "segmentation": [[2, 2, 10, 10], [2, 2, 10, 2, 10, 10]]}])
    _, target, _ = CocoDetection(ann, tmp_path / "img", spec("40x30"), with_masks=True)[0]
    assert target["masks"][0].sum() == 0 and target["masks"][1].sum() > 0


def test_missing_segmentation_fails_at_construction_naming_file_and_id(tmp_path):
    ann = write_coco(tmp_path, [{"bbox": [2, 2, 10, 10], "segmentation": [[2, 2, 10, 2, 10, 10]]},
                                {"bbox": [2, 2, 10, 10]}])
    CocoDetection(ann, tmp_path / "img", spec("40x30"))  # fine without masks
    with pytest.raises(DataError, match=r"ann\.json: annotation id 11: no 'segmentation'"):
        CocoDetection(ann, tmp_path / "img", spec("40x30"), with_masks=True)


@pytest.mark.parametrize("segm,reason", [
    ([[2, 2, 10, 2, 10]], "odd number"),
    ([[2, 2, 10, "x", 10, 10]], "finite numbers"),
    ({"counts": [5, 10], "size": [30, 40]}, "sum to h \\* w"),
    ({"counts": [1200], "size": [31, 40]}, "does not match the image"),
    ({"counts": "P1{{{", "size": [30, 40]}, "invalid character"),
    ({"counts": "0", "size": [30, 40]}, "sum to h \\* w"),
    ({"size": [30, 40]}, "needs 'counts' and 'size'"),
    ([], "empty list"),
    ("polygon", "not str"),
])
def test_malformed_segmentation_is_a_data_error(tmp_path, segm, reason):
    ann = write_coco(tmp_path, [{"bbox": [2, 2, 10, 10], "segmentation": segm}])
    with pytest.raises(DataError, match=f"ann\\.json: annotation id 10: .*{reason}"):
        CocoDetection(ann, tmp_path / "img", spec("40x30"), with_masks=True)[0]
