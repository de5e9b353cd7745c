"""The synthetic dataset: deterministic, non-contiguous ids, exact polygon masks, odd file names."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pipeline_helpers import standard_pipeline
from pycocotools.coco import COCO

from dettool.data.coco import CocoDetection
from dettool.data.synth import CATEGORIES, generate

# pycocotools 2.0.x calls np.array(copy=False) on NumPy 2; harmless here
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def split_bytes(root: Path, split: str) -> tuple[str, dict[str, bytes]]:
    text = (root / "annotations" / f"{split}.json").read_text(encoding="utf-8")
    return text, {p.name: p.read_bytes() for p in sorted((root / split).iterdir())}


def test_same_seed_gives_identical_files(tmp_path):
    generate(tmp_path / "a", num_train=3, num_val=2, seed=11)
    generate(tmp_path / "b", num_train=3, num_val=2, seed=11)
    for split in ("train", "val"):
        json_a, imgs_a = split_bytes(tmp_path / "a", split)
        json_b, imgs_b = split_bytes(tmp_path / "b", split)
        assert json_a == json_b
        assert imgs_a == imgs_b
    assert len(imgs_a) == 2  # val


def test_different_seed_differs(tmp_path):
    generate(tmp_path / "a", num_train=3, num_val=1, seed=1)
    generate(tmp_path / "b", num_train=3, num_val=1, seed=2)
    json_a, imgs_a = split_bytes(tmp_path / "a", "train")
    json_b, imgs_b = split_bytes(tmp_path / "b", "train")
    assert json.loads(json_a)["annotations"] != json.loads(json_b)["annotations"]
    assert all(imgs_a[name] != imgs_b[name] for name in imgs_a)


def test_train_and_val_differ(tmp_path):
    generate(tmp_path, num_train=2, num_val=2, seed=0)
    assert split_bytes(tmp_path, "train")[1] != split_bytes(tmp_path, "val")[1]


def test_categories_are_non_contiguous(tiny_synth):
    data = json.loads((tiny_synth / "annotations" / "train.json").read_text(encoding="utf-8"))
    ids = [c["id"] for c in data["categories"]]
    assert ids == [c["id"] for c in CATEGORIES]
    assert ids != list(range(1, len(ids) + 1))
    used = {a["category_id"] for a in data["annotations"]}
    assert used <= set(ids) and len(used) >= 2


def test_image_entries_match_files(tiny_synth):
    data = json.loads((tiny_synth / "annotations" / "train.json").read_text(encoding="utf-8"))
    assert len(data["images"]) == 16
    from PIL import Image

    for img in data["images"]:
        with Image.open(tiny_synth / "train" / img["file_name"]) as f:
            assert f.size == (img["width"], img["height"])


def test_polygon_masks_match_area_and_lie_inside_box(tiny_synth):
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(tiny_synth / "annotations" / "train.json"))
    anns = list(coco.anns.values())
    assert len(anns) >= 10
    ratios = []
    for ann in anns:
        info = coco.imgs[ann["image_id"]]
        mask = coco.annToMask(ann)
        assert mask.shape == (info["height"], info["width"])
        # 'area' counts the pixels PIL drew, outline included; pycocotools' decoding of the same
        # polygon leaves out about half the outline, so it is never larger and a little smaller.
        ratio = float(mask.sum()) / ann["area"]
        assert 0.75 <= ratio <= 1.0, (ann["id"], ratio)
        ratios.append(ratio)
        x, y, w, h = ann["bbox"]
        rows, cols = np.nonzero(mask)
        assert cols.min() >= x and cols.max() < x + w, ann["id"]
        assert rows.min() >= y and rows.max() < y + h, ann["id"]
        assert ann["iscrowd"] == 0 and w > 0 and h > 0
    assert np.mean(ratios) > 0.9


def test_some_file_names_have_spaces_and_non_ascii_and_load(tiny_synth):
    data = json.loads((tiny_synth / "annotations" / "train.json").read_text(encoding="utf-8"))
    odd = [img for img in data["images"] if " " in img["file_name"] and not img["file_name"].isascii()]
    assert odd, "expected at least one file name with a space and non-ASCII letters"
    ds = CocoDetection(tiny_synth / "annotations" / "train.json", tiny_synth / "train",
                       standard_pipeline("320x256"))
    index = ds.image_ids.index(odd[0]["id"])
    tensor, _, meta = ds[index]
    assert meta["file_name"] == odd[0]["file_name"] and tensor.shape[0] == 3


def test_cli_data_synth(tmp_path):
    exe = shutil.which("dettool")
    cmd = [exe] if exe else [sys.executable, "-c", "from dettool.cli import main; main()"]
    out = tmp_path / "out dir"
    proc = subprocess.run(cmd + ["data", "synth", str(out), "--num-train", "3", "--num-val", "2", "--seed", "4"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "wrote 3 train and 2 val images" in proc.stdout
    train = json.loads((out / "annotations" / "train.json").read_text(encoding="utf-8"))
    val = json.loads((out / "annotations" / "val.json").read_text(encoding="utf-8"))
    assert len(train["images"]) == 3 and len(val["images"]) == 2
    assert len(list((out / "train").glob("*.jpg"))) == 3 and len(list((out / "val").glob("*.jpg"))) == 2
    generate(tmp_path / "same", 3, 2, seed=4)
    assert split_bytes(out, "train") == split_bytes(tmp_path / "same", "train")
    assert not (out / "stuffthingmaps").exists()
    proc = subprocess.run(cmd + ["data", "synth", str(out), "--num-train", "3", "--num-val", "2", "--seed", "4",
                                 "--semantic"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(list((out / "stuffthingmaps" / "train").glob("*.png"))) == 3
    assert len(list((out / "stuffthingmaps" / "val").glob("*.png"))) == 2
    assert split_bytes(out, "train") == split_bytes(tmp_path / "same", "train")


def test_cli_data_synth_rejects_negative_count(tmp_path):
    exe = shutil.which("dettool")
    cmd = [exe] if exe else [sys.executable, "-c", "from dettool.cli import main; main()"]
    proc = subprocess.run(cmd + ["data", "synth", str(tmp_path / "x"), "--num-train", "-1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "num-train" in proc.stderr
