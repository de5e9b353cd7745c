"""``dettool eval-engine``: parity checks, config/engine agreement, the report, and (slow) the
whole comparison on the session's exported tiny Mask R-CNN.

A random tiny model scores AP ~0 on the synthetic ground truth, which would make the AP parity
check vacuous; the slow tests therefore rewrite the val annotations from the PyTorch model's own
confident detections (boxes and masks), so that AP is high and any engine drift would show.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from pycocotools import mask as mask_utils
from runtime_helpers import FASTER_RCNN, MASK_RCNN, tiny_sets

from dettool.config import load_config
from dettool.errors import BackendError
from dettool.evaluation.coco_eval import encode_masks
from dettool.runtime.eval_engine import (
    Tolerances,
    check_engine_matches_config,
    default_report_path,
    evaluate_engine,
    parity_checks,
)
from dettool.runtime.metadata import DeployMetadata, Postprocess, Preprocess
from dettool.runtime.report import format_report, write_report
from dettool.runtime.torch_backend import TorchBackend
from dettool.trainer import builder


def metadata_of(cfg, **changes) -> DeployMetadata:
    d, t = cfg.data, cfg.test
    meta = DeployMetadata(
        model_type="faster_rcnn", class_names=tuple(f"c{i}" for i in range(cfg.model.num_classes)),
        cat_ids=tuple(range(1, cfg.model.num_classes + 1)),
        preprocess=Preprocess(d.test_scale, tuple(d.mean), tuple(d.std), d.size_divisor),
        postprocess=Postprocess(t.score_thr, t.nms_iou_thr, t.max_per_img, t.mask_thr), with_masks=False,
        flavour="custom", precision="fp32", opset=19, custom_ops=(), dynamic_batch=True, export_batch=1,
        dettool_version="test")
    return dataclasses.replace(meta, **changes)


# ----------------------------------------------------------------------------------- quick


def test_parity_tolerances_follow_precision_and_metric():
    torch_m = {"bbox_AP": 0.500, "bbox_AP50": 0.7, "segm_AP": 0.400}
    engine_m = {"bbox_AP": 0.502, "bbox_AP50": 0.1, "segm_AP": 0.4025}
    fp32 = {c.metric: c for c in parity_checks(torch_m, engine_m, "fp32", False, Tolerances())}
    assert set(fp32) == {"bbox_AP", "segm_AP"}  # AP50 is reported, not checked
    assert fp32["bbox_AP"].tol == 0.001 and not fp32["bbox_AP"].passed
    assert fp32["bbox_AP"].delta == pytest.approx(0.002)
    assert fp32["segm_AP"].tol == 0.003 and fp32["segm_AP"].passed
    fp16 = {c.metric: c for c in parity_checks(torch_m, engine_m, "fp16", False, Tolerances())}
    assert fp16["bbox_AP"].tol == 0.003 and fp16["bbox_AP"].passed
    assert "bbox_AP differs by 0.0020 > 0.001 (onnxruntime 0.5020, torch 0.5000)" == fp32["bbox_AP"].failure(
        "onnxruntime")
    # two-sided: the engine doing better is a difference too
    assert not parity_checks({"bbox_AP": 0.5}, {"bbox_AP": 0.51}, "fp32", False, Tolerances())[0].passed
    assert all(c.passed for c in parity_checks(torch_m, torch_m, "fp32", False, Tolerances()))
    assert not any(c.passed for c in parity_checks(torch_m, torch_m, "fp32", False, Tolerances(-1, -1, -1)))


def test_rpn_checks_average_recall():
    recall = {"AR@100": 0.3, "AR@300": 0.4, "AR@1000": 0.5}
    checks = parity_checks(recall, dict(recall, **{"AR@1000": 0.52}), "fp32", True, Tolerances())
    assert [(c.metric, c.passed) for c in checks] == [("AR@100", True), ("AR@300", True), ("AR@1000", False)]


def test_engine_exported_with_other_settings_is_refused():
    cfg = load_config(FASTER_RCNN, tiny_sets(Path("/data")))
    check_engine_matches_config(cfg, metadata_of(cfg), Path("m.onnx"))
    for key, change in [("data.test_scale", {"preprocess": Preprocess("256x208", (0, 0, 0), (1, 1, 1))}),
                        ("test.score_thr", {"postprocess": Postprocess(0.5, cfg.test.nms_iou_thr,
                                                                       cfg.test.max_per_img)}),
                        ("model.num_classes", {"class_names": ("a",)})]:
        with pytest.raises(BackendError, match=f"m.onnx: exported with {key}="):
            check_engine_matches_config(cfg, metadata_of(cfg, **change), Path("m.onnx"))


def test_report_written_as_json_and_markdown(tmp_path):
    report = {
        "engine": "/x/model.onnx", "backend": "onnxruntime", "engine_size_mb": 12.5, "model_type": "mask_rcnn",
        "precision": "fp32", "flavour": "custom", "config": "c.yaml", "device": "cpu", "num_images": 6,
        "batch_size": 4,
        "metrics": {"torch": {"bbox_AP": 0.5, "bbox_AP50": 0.7, "segm_AP": 0.4},
                    "engine": {"bbox_AP": 0.5, "bbox_AP50": 0.7, "segm_AP": 0.41}},
        "parity": [{"metric": "bbox_AP", "torch": 0.5, "engine": 0.5, "delta": 0.0, "tol": 0.001, "passed": True,
                    "status": "pass", "low": -0.0002, "high": 0.0001, "num_images": 6, "num_resamples": 500},
                   {"metric": "segm_AP", "torch": 0.4, "engine": 0.41, "delta": 0.01, "tol": 0.003, "passed": False}],
        "outputs": {"iou_thr": 0.5, "matched": 10, "unmatched_engine": 1, "unmatched_torch": 0,
                    "box_linf_px_max": 0.25, "box_linf_px_mean": 0.01, "score_diff_max": 1e-6, "score_diff_mean": 1e-7,
                    "mask_diff_max": 0.02, "mask_diff_mean": 0.001},
        "latency": {"torch": {"batch_1": {"batch_size": 1, "p50_ms": 10.0, "p90_ms": 12.0, "images_per_s": 95.0}}},
        "passed": False, "failures": ["segm_AP differs by 0.0100 > 0.003 (onnxruntime 0.4100, torch 0.4000)"],
    }
    text = format_report(report)
    assert "| bbox AP | 0.5000 | 0.5000 | 0.0000 | [-0.0002, +0.0001] | 0.001 | pass |" in text
    assert "| segm AP | 0.4000 | 0.4100 | 0.0100 |  | 0.003 | **FAIL** |" in text  # a report without intervals
    assert "| bbox AP50 | 0.7000 | 0.7000 | 0.0000 |  |  |  |" in text
    assert "| 10 | 1 / 0 | 0.2500 / 0.0100 | 1.00e-06 / 1.00e-07 | 0.0200 / 0.0010 |" in text
    assert "| torch | 1 | 10.0 | 12.0 | 95.00 |" in text
    assert "Parity FAILED: segm_AP differs" in text
    json_path, md_path = write_report(report, tmp_path / "r.eval.json")
    assert json.loads(json_path.read_text()) == report
    assert md_path == tmp_path / "r.eval.md" and md_path.read_text() == text + "\n"
    assert default_report_path("/x/model.onnx") == Path("/x/model.eval.json")


# ----------------------------------------------------------------------------------- slow: exported model


def pseudo_ground_truth(cfg, checkpoint: Path, out: Path, per_image: int = 4) -> Path:
    """The val annotation file with the PyTorch model's best detections as ground truth: those
    scoring at least the ``per_image * num_images``-th best score (so that every detection above
    the threshold is a true positive and AP is close to 1)."""
    backend = TorchBackend.from_checkpoint(cfg, checkpoint, "cpu")
    dataset = builder.build_dataset(cfg, "val")
    found = []
    for images, _, metas in builder.build_dataloader(cfg, dataset, train=False, batch_size=3):
        found += list(zip(metas, backend.infer(images, metas)))
    scores = torch.cat([det.scores for _, det in found])
    threshold = scores.sort(descending=True).values[min(per_image * len(found), len(scores)) - 1]
    anns = []
    for meta, det in found:
        keep = det.scores >= threshold
        for box, label, rle in zip(det.boxes[keep].tolist(), det.labels[keep].tolist(), encode_masks(det.masks[keep])):
            x1, y1, x2, y2 = box
            anns.append({"id": len(anns) + 1, "image_id": meta["image_id"], "iscrowd": 0,
                         "category_id": dataset.cat_ids[label], "bbox": [x1, y1, x2 - x1, y2 - y1],
                         "area": float(mask_utils.area(dict(rle, counts=rle["counts"].encode()))),
                         "segmentation": rle})
    data = json.loads(Path(cfg.data.val.ann_file).read_text())
    data["annotations"] = anns
    out.write_text(json.dumps(data))
    return out


@pytest.fixture(scope="module")
def pseudo_gt(tiny_export, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pseudo_gt") / "val_pseudo.json"
    return pseudo_ground_truth(tiny_export.cfg(), tiny_export.checkpoint, out)


@pytest.mark.slow
def test_eval_engine_report_and_parity(tiny_export, pseudo_gt, tmp_path):
    cfg = tiny_export.cfg(f"data.val.ann_file={pseudo_gt}")
    out = tmp_path / "report.eval.json"
    report = evaluate_engine(cfg, tiny_export.checkpoint, tiny_export.custom, out=out, batch_size=3, warmup=0,
                             iters=1, num_show=2, progress=False)
    torch_m, engine_m = report["metrics"]["torch"], report["metrics"]["engine"]
    assert torch_m["bbox_AP"] > 0.8 and torch_m["segm_AP"] > 0.8  # detections that AP can see
    assert [c["metric"] for c in report["parity"]] == ["bbox_AP", "segm_AP"]
    assert report["passed"] and report["failures"] == []
    # an FP32 graph: the same detections, and every AP difference resolved as within tolerance
    assert [(c["status"], c["num_images"]) for c in report["parity"]] == [("pass", 6), ("pass", 6)]
    assert all(c["low"] <= c["high"] and c["high"] - c["low"] < 0.001 for c in report["parity"])
    assert report["detections_check"]["status"] == "pass" and report["verdict"].startswith("PASSED (6 images, ")
    assert report["basis"]["matched"] == report["outputs"]["matched"] == report["basis"]["torch_detections"]
    assert report["bootstrap"]["num_resamples"] == 500 and report["bootstrap"]["seconds"] > 0
    assert abs(engine_m["bbox_AP"] - torch_m["bbox_AP"]) <= 0.001
    outputs = report["outputs"]
    assert outputs["matched"] > 0 and outputs["unmatched_engine"] == outputs["unmatched_torch"] == 0
    assert outputs["box_linf_px_max"] < 1e-2 and outputs["score_diff_max"] < 1e-4 and outputs["mask_diff_max"] < 0.05
    assert set(report["latency"]) == {"torch", "onnxruntime"}
    for per_batch in report["latency"].values():
        assert set(per_batch) == {"batch_1", "batch_3"}
        assert all(s["p50_ms"] > 0 and s["images_per_s"] > 0 for s in per_batch.values())
    assert report["engine_size_mb"] == pytest.approx(tiny_export.custom.stat().st_size / 2**20)
    assert report["checkpoint_matches_engine"] and report["num_images"] == 6
    assert (report["precision"], report["flavour"], report["model_type"]) == ("fp32", "custom", "mask_rcnn")
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert "| bbox AP |" in out.with_suffix(".md").read_text()
    assert len(list((tmp_path / "report.eval_show").glob("*.png"))) == 2


@pytest.mark.slow
def test_cli_exits_2_naming_the_failed_metric(tiny_export, pseudo_gt, tmp_path, dettool_cli):
    sets = [a for s in (*tiny_export.sets, f"data.val.ann_file={pseudo_gt}") for a in ("--set", s)]
    out = tmp_path / "fail.eval.json"
    code, stdout, stderr = dettool_cli(["eval-engine", MASK_RCNN, tiny_export.checkpoint, "--engine",
                                        tiny_export.portable, "--out", out, "--max-images", 3, "--iters", 0,
                                        "--num-show", 0, "--fp32-tol", -1, *sets])
    assert code == 2, stdout + stderr
    assert "Traceback" not in stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("dettool:")]
    assert len(lines) == 1 and lines[0].startswith("dettool: parity check failed: bbox_AP differs by "), stderr
    assert "segm_AP" not in lines[0]  # within --mask-tol
    report = json.loads(out.read_text())
    assert not report["passed"] and report["num_images"] == 3 and report["latency"] == {}
    assert "| bbox AP |" in stdout  # the table is printed before the verdict
