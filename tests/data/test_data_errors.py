"""Broken data is a DataError naming the file; through the CLI it is one 'dettool: error:' line."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from pipeline_helpers import standard_pipeline

from dettool.data.coco import CocoDetection, load_coco
from dettool.errors import DataError

REPO = Path(__file__).resolve().parents[2]
RETINA = REPO / "configs" / "retinanet_r18_fpn_synth.yaml"
SPEC = standard_pipeline("1333x800")
CATEGORIES = [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}]


def coco_dict(file_names=("ok.png",)) -> dict:
    return {"images": [{"id": i, "file_name": n, "width": 32, "height": 24} for i, n in enumerate(file_names, 1)],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 2, 10, 10], "area": 100,
                             "iscrowd": 0}],
            "categories": CATEGORIES}


def write_json(path: Path, data) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------- images


def test_corrupt_image_raises_data_error_naming_file(tmp_path):
    img_dir = tmp_path / "img"
    img_dir.mkdir()
    (img_dir / "broken.jpg").write_bytes(os.urandom(2048))
    ann = write_json(tmp_path / "ann.json", coco_dict(["broken.jpg"]))
    ds = CocoDetection(ann, img_dir, SPEC)  # images are decoded lazily
    with pytest.raises(DataError, match="broken.jpg") as info:
        ds[0]
    assert "cannot decode" in str(info.value)


def test_truncated_image_raises_data_error(tmp_path):
    img_dir = tmp_path / "img"
    img_dir.mkdir()
    Image.new("RGB", (64, 48), (1, 2, 3)).save(img_dir / "cut.jpg")
    data = (img_dir / "cut.jpg").read_bytes()
    (img_dir / "cut.jpg").write_bytes(data[: len(data) // 3])
    ds = CocoDetection(write_json(tmp_path / "ann.json", coco_dict(["cut.jpg"])), img_dir, SPEC)
    with pytest.raises(DataError, match="cut.jpg"):
        ds[0]


def test_missing_image_raises_data_error_naming_file(tmp_path):
    (tmp_path / "img").mkdir()
    ds = CocoDetection(write_json(tmp_path / "ann.json", coco_dict(["gone missing.png"])), tmp_path / "img", SPEC)
    with pytest.raises(DataError, match="gone missing.png") as info:
        ds[0]
    assert "not found" in str(info.value)


# ----------------------------------------------------------------------------------- annotation files


def _broken(kind: str):
    data = coco_dict()
    if kind == "not_json":
        return "{ this is not json"
    if kind == "not_object":
        return [1, 2, 3]
    if kind == "no_images":
        del data["images"]
    elif kind == "bbox_3":
        data["annotations"][0]["bbox"] = [1, 2, 3]
    elif kind == "bbox_str":
        data["annotations"][0]["bbox"] = [1, 2, "3", 4]
    elif kind == "unknown_image":
        data["annotations"][0]["image_id"] = 99
    elif kind == "unknown_category":
        data["annotations"][0]["category_id"] = 2
    elif kind == "no_categories":
        data["categories"] = []
    elif kind == "image_without_file_name":
        del data["images"][0]["file_name"]
    return data


@pytest.mark.parametrize("kind, problem", [
    ("not_json", "not valid JSON"),
    ("not_object", "top level must be an object"),
    ("no_images", "'images'"),
    ("bbox_3", "'bbox' must be [x, y, w, h]"),
    ("bbox_str", "'bbox' must be [x, y, w, h]"),
    ("unknown_image", "unknown image_id 99"),
    ("unknown_category", "unknown category_id 2"),
    ("no_categories", "'categories' is empty"),
    ("image_without_file_name", "images[0] needs 'id' and 'file_name'"),
])
def test_malformed_annotation_file_names_file_and_problem(tmp_path, kind, problem):
    ann = write_json(tmp_path / "bad ann.json", _broken(kind))
    with pytest.raises(DataError) as info:
        CocoDetection(ann, tmp_path, SPEC)
    msg = str(info.value)
    assert str(ann) in msg
    assert problem in msg


def test_annotation_index_is_named(tmp_path):
    data = coco_dict()
    data["annotations"].append(dict(data["annotations"][0], id=7, bbox=[0, 0]))
    with pytest.raises(DataError, match=r"annotations\[1\] \(id 7\)"):
        load_coco(write_json(tmp_path / "a.json", data))


def test_missing_annotation_file(tmp_path):
    with pytest.raises(DataError, match="annotation file not found"):
        load_coco(tmp_path / "nope.json")


def test_annotations_without_ids_are_indexed(tmp_path):
    data = coco_dict()
    del data["annotations"][0]["id"]
    coco = load_coco(write_json(tmp_path / "a.json", data))
    assert len(coco.imgToAnns[1]) == 1


# ----------------------------------------------------------------------------------- through the CLI


def dettool_cmd() -> list[str]:
    exe = shutil.which("dettool")
    if exe is None:
        exe_dir = Path(sys.executable).parent / "dettool"
        exe = str(exe_dir) if exe_dir.is_file() else None
    return [exe] if exe else [sys.executable, "-c", "from dettool.cli import main; main()"]


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    return subprocess.run(dettool_cmd() + [str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=180)


def assert_one_error_line(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("dettool: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def data_overrides(ann_file: Path, img_dir: Path) -> list[str]:
    sets = [f"data.train.ann_file={ann_file}", f"data.train.img_dir={img_dir}",
            f"data.val.ann_file={ann_file}", f"data.val.img_dir={img_dir}", "data.synth=null",
            "data.num_workers=0"]
    return [a for s in sets for a in ("--set", s)]


def test_cli_train_with_corrupt_annotation_file(tmp_path):
    (tmp_path / "img").mkdir()
    ann = write_json(tmp_path / "train.json", '{"images": [}')
    proc = run_cli(["train", RETINA, "--work-dir", tmp_path / "work", "--device", "cpu",
                    *data_overrides(ann, tmp_path / "img")], cwd=tmp_path)
    assert_one_error_line(proc, str(ann), "not valid JSON")


def test_cli_train_with_misspelled_key(tmp_path):
    cfg = tmp_path / "typo.yaml"
    cfg.write_text(f"base: {RETINA}\ntrain:\n  max_epoch: 3\n", encoding="utf-8")
    proc = run_cli(["train", cfg, "--work-dir", tmp_path / "work"], cwd=tmp_path)
    assert_one_error_line(proc, str(cfg), "train.max_epoch", "did you mean 'max_epochs'")
    assert not (tmp_path / "work").exists()


def test_cli_eval_with_misspelled_set_key(tmp_path):
    proc = run_cli(["eval", RETINA, tmp_path / "no_such.pth", "--set", "model.backbone.nrom=bn"], cwd=tmp_path)
    assert_one_error_line(proc, str(RETINA), "model.backbone.nrom", "did you mean 'norm'")


def test_cli_eval_with_missing_checkpoint(tmp_path):
    proc = run_cli(["eval", RETINA, tmp_path / "no_such.pth", "--device", "cpu"], cwd=tmp_path)
    assert_one_error_line(proc, str(tmp_path / "no_such.pth"), "checkpoint not found")


def test_worker_error_is_reduced_to_the_users_line(tmp_path):
    """A DataLoader worker re-raises with its traceback inside; the CLI keeps only the DataError line."""
    import torch

    from dettool.cli import _one_line
    from dettool.data.loader import Collate, EpochSampler

    img_dir = tmp_path / "img"
    img_dir.mkdir()
    (img_dir / "bad.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    ds = CocoDetection(write_json(tmp_path / "ann.json", coco_dict(["bad.jpg"])), img_dir, SPEC)
    loader = torch.utils.data.DataLoader(ds, batch_size=1, sampler=EpochSampler(1, shuffle=False), num_workers=1,
                                         collate_fn=Collate())
    with pytest.raises(DataError) as info:
        next(iter(loader))
    assert "Traceback" in str(info.value)  # the worker's traceback rides along in the message
    line = _one_line(info.value)
    assert line.startswith(str(img_dir / "bad.jpg") + ": cannot decode image")
    assert "\n" not in line and "Traceback" not in line
