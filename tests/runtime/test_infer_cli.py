"""``dettool infer``: folders, globs and awkward files in; results JSON, pictures and a summary out.

Run in-process on a random tiny Faster R-CNN checkpoint (eager torch); that the ONNX graph gives
the same detections as the checkpoint is tests/runtime/test_detector.py's slow test.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from detector_helpers import run_cli
from pycocotools.coco import COCO
from runtime_helpers import FASTER_RCNN
from test_cli_deploy import assert_one_error_line
from test_detector import awkward_images, tiny_checkpoint

from dettool.config import load_config
from dettool.evaluation.coco_eval import detection_metrics, inference
from dettool.trainer import builder
from dettool.trainer.evaluate import load_trained_model


def infer(checkpoint, sets, *args) -> tuple[int, str, str]:
    return run_cli(["infer", checkpoint, *args, "--config", FASTER_RCNN, "--device", "cpu",
                    *[a for s in sets for a in ("--set", s)]])


def test_a_folder_of_awkward_files(tiny_synth, tmp_path):
    checkpoint, sets = tiny_checkpoint(tiny_synth, tmp_path)
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    awkward_images(folder)
    (folder / "sub" / "plain.jpg").write_bytes((folder / "plain.jpg").read_bytes())  # same name, other folder
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    code, stdout, stderr = infer(checkpoint, sets, folder, "--out", out, "--batch-size", "2",
                                 "--set", "test.score_thr=0.0")
    assert code == 0, stdout + stderr
    warnings = [ln for ln in stderr.splitlines() if ln.startswith("dettool: warning:")]
    assert len(warnings) == 1 and "broken.jpg" in warnings[0] and "skipped" in warnings[0], stderr
    assert "Traceback" not in stderr
    images = json.loads((out / "images.json").read_text(encoding="utf-8"))
    names = [row["file_name"] for row in images]
    assert sorted(names) == sorted(["alpha.png", "gray.png", "palette.png", "plain.jpg", "rotated ü.jpg",
                                    "sub/plain.jpg"])
    assert {row["id"] for row in images} == set(range(1, 7))
    rotated = next(row for row in images if row["file_name"] == "rotated ü.jpg")
    assert (rotated["height"], rotated["width"]) == (90, 70)  # EXIF orientation applied
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results and {r["file_name"] for r in results} <= set(names)
    assert {r["category_id"] for r in results} <= {1, 2, 3, 4}
    for r in results:
        assert len(r["bbox"]) == 4 and r["bbox"][2] >= 0 and 0.0 <= r["score"] <= 1.0
    for name in names:
        assert (out / "vis" / name).with_suffix(".jpg").is_file()
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["num_images"] == 6 and summary["num_detections"] == len(results)
    assert [s["path"] for s in summary["skipped"]] == [str(folder / "broken.jpg")]
    assert sum(summary["detections_per_class"].values()) == len(results)
    assert (out / "summary.md").read_text(encoding="utf-8").startswith("| class | detections |")
    # an output folder inside the input folder: its pictures are not inputs of the next run
    inner = folder / "out"
    for _ in range(2):
        code, stdout, stderr = infer(checkpoint, sets, folder, "--out", inner, "--no-draw" if _ else "--draw-thr=0.5")
        assert code == 0, stderr
        assert json.loads((inner / "summary.json").read_text(encoding="utf-8"))["num_images"] == 6


def test_results_are_dettool_evals_and_evaluate_to_its_ap(tiny_synth, tmp_path):
    """With the val annotations: the same ids, detections and COCO metrics as ``dettool eval``."""
    checkpoint, sets = tiny_checkpoint(tiny_synth, tmp_path)
    out = tmp_path / "out"
    ann = tiny_synth / "annotations" / "val.json"
    code, stdout, stderr = infer(checkpoint, sets, str(tiny_synth / "val" / "*.jpg"), "--out", out,
                                 "--ann-file", ann, "--no-draw")
    assert code == 0, stdout + stderr
    assert not (out / "vis").exists()
    got = json.loads((out / "results.json").read_text(encoding="utf-8"))
    cfg = load_config(FASTER_RCNN, sets)
    dataset = builder.build_dataset(cfg, "val")
    loader = builder.build_dataloader(cfg, dataset, train=False, batch_size=2)
    model = load_trained_model(cfg, checkpoint, torch.device("cpu"))
    expected = inference(model, loader, dataset.cat_ids, torch.device("cpu"), progress=False)
    assert len(got) == len(expected) > 0

    def key(r):
        return r["image_id"], -r["score"], r["category_id"]

    for a, b in zip(sorted(got, key=key), sorted(expected, key=key)):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        np.testing.assert_allclose(a["bbox"], b["bbox"], atol=1e-4)
        assert a["score"] == pytest.approx(b["score"], abs=1e-6)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    reference = detection_metrics(COCO(str(ann)), expected)
    assert summary["num_evaluated"] == len(dataset)
    for k, v in summary["metrics"].items():
        assert v == pytest.approx(reference[k], abs=1e-9), k


def test_bad_inputs_end_in_one_line(tiny_synth, tmp_path):
    checkpoint, sets = tiny_checkpoint(tiny_synth, tmp_path)
    assert_one_error_line(*run_cli(["infer", tmp_path / "none.onnx", tiny_synth / "val"]), "model file not found")
    assert_one_error_line(*run_cli(["infer", checkpoint, tiny_synth / "val"]), "needs its config")
    empty = tmp_path / "empty"
    empty.mkdir()
    code, stdout, stderr = infer(checkpoint, sets, empty, "--out", tmp_path / "o1")
    assert code == 1 and "no images found" in stderr.splitlines()[-1] and "Traceback" not in stderr
    (empty / "a.jpg").write_bytes(b"nope")
    code, stdout, stderr = infer(checkpoint, sets, empty / "a.jpg", "--out", tmp_path / "o2")
    assert code == 1 and "none of the 1 input files" in stderr.splitlines()[-1]
