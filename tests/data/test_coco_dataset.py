"""CocoDetection on hand-built COCO files: id mapping, crowd, empty images, image modes, boxes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from pipeline_helpers import standard_pipeline

from dettool.data.coco import CocoDetection, load_image
from dettool.data.pipeline import Pipeline

CATEGORIES = [{"id": 2, "name": "cat"}, {"id": 5, "name": "dog"}, {"id": 9, "name": "emu"}]


def spec(flip_prob: float = 0.0, scale: str = "1333x800") -> Pipeline:
    return standard_pipeline(scale, flip_prob)


def write_coco(root: Path, images: list[tuple[str, Image.Image]], annotations: list[dict],
               categories: list[dict] = CATEGORIES) -> Path:
    """Save ``images`` (file name, PIL image) under root/img and a COCO JSON; returns the JSON path."""
    img_dir = root / "img"
    img_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, (name, img) in enumerate(images, start=1):
        img.save(img_dir / name)
        entries.append({"id": i, "file_name": name, "width": img.width, "height": img.height})
    anns = [dict({"id": k, "iscrowd": 0}, **a) for k, a in enumerate(annotations, start=1)]
    for a in anns:
        a.setdefault("area", a["bbox"][2] * a["bbox"][3])
    path = root / "ann.json"
    path.write_text(json.dumps({"images": entries, "annotations": anns, "categories": categories}), encoding="utf-8")
    return path


def rgb(w: int, h: int, color=(90, 120, 150)) -> Image.Image:
    return Image.new("RGB", (w, h), color)


def test_non_contiguous_category_ids_map_to_contiguous_labels(tmp_path):
    ann = write_coco(tmp_path, [("a.png", rgb(64, 48))], [
        {"image_id": 1, "category_id": 9, "bbox": [1, 2, 10, 10]},
        {"image_id": 1, "category_id": 2, "bbox": [20, 2, 10, 10]},
        {"image_id": 1, "category_id": 5, "bbox": [40, 2, 10, 10]},
    ])
    ds = CocoDetection(ann, tmp_path / "img", spec())
    assert ds.cat_ids == [2, 5, 9]
    assert ds.class_names == ["cat", "dog", "emu"]
    _, target, _ = ds[0]
    assert target["labels"].tolist() == [2, 0, 1]
    assert target["labels"].dtype == torch.int64
    assert [ds.label_to_cat_id(int(lab)) for lab in target["labels"]] == [9, 2, 5]
    assert all(ds.cat_id_to_label[ds.label_to_cat_id(k)] == k for k in range(3))


def test_given_category_ids_set_the_label_map(tmp_path):
    """``data.category_ids`` (a torchvision model's COCO ids): labels follow the given order, ids
    the file lacks are "N/A" classes, per-class AP keeps the file's categories; an id of the file
    missing from the list is refused naming the file."""
    from dettool.errors import DataError

    ann = write_coco(tmp_path, [("a.png", rgb(64, 48))], [
        {"image_id": 1, "category_id": 9, "bbox": [1, 2, 10, 10]},
        {"image_id": 1, "category_id": 2, "bbox": [20, 2, 10, 10]},
    ])
    ds = CocoDetection(ann, tmp_path / "img", spec(), category_ids=(1, 2, 3, 4, 5, 6, 7, 8, 9))
    assert ds.class_names == ["N/A", "cat", "N/A", "N/A", "dog", "N/A", "N/A", "N/A", "emu"]
    assert ds.eval_class_names == ["cat", "dog", "emu"]
    _, target, _ = ds[0]
    assert target["labels"].tolist() == [8, 1]
    assert ds.label_to_cat_id(8) == 9
    with pytest.raises(DataError, match=r"ann.json: categories \[9\] are not in data.category_ids"):
        CocoDetection(ann, tmp_path / "img", spec(), category_ids=(2, 5))


def test_crowd_annotations_become_ignore_boxes(tmp_path):
    ann = write_coco(tmp_path, [("a.png", rgb(100, 100)), ("b.png", rgb(100, 100))], [
        {"image_id": 1, "category_id": 2, "bbox": [10, 10, 20, 20]},
        {"image_id": 1, "category_id": 5, "bbox": [50, 50, 30, 30], "iscrowd": 1},
        {"image_id": 2, "category_id": 5, "bbox": [5, 5, 30, 30], "iscrowd": 1},
    ])
    ds = CocoDetection(ann, tmp_path / "img", spec(scale="100x100"))
    boxes, labels, ignore = ds.annotations(1)
    assert boxes.tolist() == [[10, 10, 30, 30]]
    assert labels.tolist() == [0]
    assert ignore.tolist() == [[50, 50, 80, 80]]
    _, target, _ = ds[0]
    assert target["boxes"].shape == (1, 4) and target["ignore_boxes"].shape == (1, 4)
    # an image holding only crowd regions has no training target
    assert CocoDetection(ann, tmp_path / "img", spec(), filter_empty_gt=True).image_ids == [1]


def test_degenerate_boxes_are_dropped(tmp_path):
    ann = write_coco(tmp_path, [("a.png", rgb(64, 64))], [
        {"image_id": 1, "category_id": 2, "bbox": [1, 1, 0.5, 10]},
        {"image_id": 1, "category_id": 2, "bbox": [1, 1, 10, 10], "area": 0},
        {"image_id": 1, "category_id": 5, "bbox": [1, 1, 10, 10]},
    ])
    boxes, labels, _ = CocoDetection(ann, tmp_path / "img", spec()).annotations(1)
    assert labels.tolist() == [1] and boxes.shape == (1, 4)


def test_image_without_annotations_kept_for_val_filtered_for_train(tmp_path):
    ann = write_coco(tmp_path, [("a.png", rgb(40, 30)), ("empty.png", rgb(40, 30))], [
        {"image_id": 1, "category_id": 2, "bbox": [1, 1, 10, 10]},
    ])
    val = CocoDetection(ann, tmp_path / "img", spec(), filter_empty_gt=False)
    assert len(val) == 2
    _, target, meta = val[1]
    assert meta["file_name"] == "empty.png"
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert target["ignore_boxes"].shape == (0, 4)
    train = CocoDetection(ann, tmp_path / "img", spec(), filter_empty_gt=True)
    assert len(train) == 1 and train.image_ids == [1]


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "I;16", "CMYK"])
def test_image_modes_come_out_as_three_channels(tmp_path, mode):
    img = Image.new("RGB", (40, 30), (200, 100, 50)).convert(mode)
    name = "img.tif" if mode in ("I;16", "CMYK") else "img.png"
    ann = write_coco(tmp_path, [(name, img)], [])
    tensor, _, meta = CocoDetection(ann, tmp_path / "img", spec())[0]
    assert tensor.ndim == 3 and tensor.shape[0] == 3
    assert meta["ori_shape"] == (30, 40)


def test_grayscale_pixel_is_replicated_to_rgb(tmp_path):
    ann = write_coco(tmp_path, [("g.png", Image.new("L", (40, 30), 77))], [])
    tensor, _, _ = CocoDetection(ann, tmp_path / "img", spec())[0]
    assert torch.all(tensor == 77)


def test_rgba_is_composited_on_black_and_palette_keeps_colours(tmp_path):
    rgba = Image.new("RGBA", (40, 30), (10, 20, 30, 255))
    rgba.paste((200, 200, 200, 0), (0, 0, 20, 30))  # left half fully transparent
    pal = Image.new("RGB", (40, 30), (240, 16, 32)).convert("P", palette=Image.ADAPTIVE)
    ann = write_coco(tmp_path, [("rgba.png", rgba), ("pal.png", pal)], [])
    ds = CocoDetection(ann, tmp_path / "img", spec(scale="40x30"))
    t_rgba, _, _ = ds[0]
    assert t_rgba[:, 0, 0].tolist() == [0, 0, 0]
    assert t_rgba[:, 0, -1].tolist() == [10, 20, 30]
    t_pal, _, _ = ds[1]
    assert t_pal[:, 5, 5].tolist() == [240, 16, 32]


def test_exif_rotated_jpeg_has_swapped_size(tmp_path):
    img = Image.new("RGB", (60, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 10, 20))  # white strip at the left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    (tmp_path / "img").mkdir()
    img.save(tmp_path / "img" / "rot.jpg", exif=exif, quality=95)
    assert Image.open(tmp_path / "img" / "rot.jpg").size == (60, 20)  # stored unrotated
    decoded = load_image(tmp_path / "img" / "rot.jpg")
    assert decoded.size == (20, 60)
    assert decoded.getpixel((10, 5))[0] > 200  # the left strip is now at the top
    assert decoded.getpixel((10, 55))[0] < 60
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "rot.jpg", "width": 20, "height": 60}],
                               "annotations": [], "categories": CATEGORIES}))
    tensor, _, meta = CocoDetection(ann, tmp_path / "img", spec(scale="120x120"))[0]
    assert meta["ori_shape"] == (60, 20)
    assert tensor.shape[1] > tensor.shape[2]  # portrait after the transpose


@pytest.mark.parametrize("name", ["with space.png", "Grüße ü.png", "日本 語.jpg", "é é (1).png"])
def test_unusual_file_names_load(tmp_path, name):
    ann = write_coco(tmp_path, [(name, rgb(50, 40))], [{"image_id": 1, "category_id": 2, "bbox": [1, 1, 10, 10]}])
    tensor, target, meta = CocoDetection(ann, tmp_path / "img", spec())[0]
    assert meta["file_name"] == name
    assert tensor.shape[0] == 3 and target["labels"].tolist() == [0]


def test_boxes_follow_the_keep_ratio_resize(tmp_path):
    ann = write_coco(tmp_path, [("a.png", rgb(200, 100))], [
        {"image_id": 1, "category_id": 5, "bbox": [10, 20, 30, 40]},
        {"image_id": 1, "category_id": 9, "bbox": [100, 0, 50, 50], "iscrowd": 1},
    ])
    tensor, target, meta = CocoDetection(ann, tmp_path / "img", spec())[0]
    # long side 200 -> 1333 (factor 6.665) binds before short side 100 -> 800
    assert meta["img_shape"] == (667, 1333) == tuple(tensor.shape[1:])
    assert meta["ori_shape"] == (100, 200)
    sx, sy = 1333 / 200, 667 / 100
    assert meta["scale_factor"] == pytest.approx((sx, sy))
    expected = torch.tensor([[10 * sx, 20 * sy, 40 * sx, 60 * sy]])
    assert torch.allclose(target["boxes"], expected, atol=1e-3)
    assert torch.allclose(target["ignore_boxes"], torch.tensor([[100 * sx, 0.0, 150 * sx, 50 * sy]]), atol=1e-3)
    assert meta["flip"] is False


def test_short_side_limit_binds_for_square_images(tmp_path):
    ann = write_coco(tmp_path, [("a.png", rgb(100, 100))], [{"image_id": 1, "category_id": 2, "bbox": [0, 0, 50, 25]}])
    tensor, target, meta = CocoDetection(ann, tmp_path / "img", spec())[0]
    assert meta["img_shape"] == (800, 800)
    assert target["boxes"].tolist() == [[0.0, 0.0, 400.0, 200.0]]


def test_horizontal_flip_mirrors_boxes_and_pixels(tmp_path):
    img = rgb(200, 100, (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 20, 100))  # white band on the left
    ann = write_coco(tmp_path, [("a.png", img)], [
        {"image_id": 1, "category_id": 2, "bbox": [10, 20, 30, 40]},
        {"image_id": 1, "category_id": 5, "bbox": [0, 0, 200, 100], "iscrowd": 1},
    ])
    plain_t, plain, _ = CocoDetection(ann, tmp_path / "img", spec(flip_prob=0.0))[0]
    flip_t, flipped, meta = CocoDetection(ann, tmp_path / "img", spec(flip_prob=1.0))[0]
    assert meta["flip"] is True
    width = meta["img_shape"][1]
    x1, y1, x2, y2 = plain["boxes"][0].tolist()
    assert flipped["boxes"][0].tolist() == pytest.approx([width - x2, y1, width - x1, y2])
    assert flipped["ignore_boxes"][0].tolist() == pytest.approx([0.0, 0.0, width, 100 * 667 / 100], abs=1e-3)
    assert torch.equal(flip_t, plain_t.flip(-1))
    assert flip_t[0, 50, -1] == 255 and flip_t[0, 50, 0] == 0


def test_same_seed_same_augmentation(tmp_path):
    ann = write_coco(tmp_path, [("a.png", rgb(200, 100))], [{"image_id": 1, "category_id": 2, "bbox": [1, 1, 9, 9]}])
    ds = CocoDetection(ann, tmp_path / "img", spec(flip_prob=0.5, scale="1333x[200:800:8]"))
    draws = {(ds[(0, s)][2]["img_shape"], ds[(0, s)][2]["flip"]) for s in range(12)}
    assert len(draws) > 1  # the seed drives scale and flip
    assert ds[(0, 3)][2] == ds[(0, 3)][2]
