"""tests/gpu/check_gpu.py in its CPU quick mode: the deploy and train parts, their table and report.

Runs everywhere (CI included): ``python -m pytest tests/gpu/test_gpu_check.py``. On the CPU the
deploy part compares the CPU with itself, so the test also checks that the comparison fails on
a slightly different model. On a machine with a GPU, ``-m gpu`` runs the quick mode on CUDA.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from deploy_graph_checks import REPO, compare_detections, compare_detector, synth_images, synth_overrides
from detector_helpers import random_detector

from dettool.config import load_config
from dettool.structures.detections import Detections

SCRIPT = Path(__file__).with_name("check_gpu.py")
DETECTOR = "retinanet_r18_fpn"


def run_check(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict | None]:
    out = tmp_path / "report"
    result = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out), *args],
                            capture_output=True, text=True, timeout=600)
    report = out / "check_gpu.json"
    return result, json.loads(report.read_text()) if report.is_file() else None


def assert_quick_report(report: dict, device: str) -> None:
    rows = {r["name"]: r for r in report["results"]}
    assert [r["part"] for r in report["results"]] == ["deploy", "deploy", "train"], list(rows)
    assert all(r["ok"] for r in rows.values()), [r["detail"] for r in rows.values() if not r["ok"]]
    deploy = rows[f"{DETECTOR} {device} vs cpu"]["values"]
    for path in ("deploy", "predict"):  # two images, at least 10 detections each, all matched
        assert deploy[path]["num_cpu"] >= 20 and deploy[path]["matched"] == deploy[path]["num_cpu"]
    train = rows["faster_rcnn_r50_fpn step fp32 1x128x160"]["values"]
    for name in ("dettool", "torchvision"):
        assert train[name]["ms_per_iter"] > 0 and len(train[name]["losses"]) == 2
    assert report["ok"] and report["summary"] == "3 passed, 0 failed"


def test_cpu_quick_mode_writes_a_passing_table(tmp_path):
    result, report = run_check(tmp_path, "--device", "cpu", "--detectors", DETECTOR, "--train-precisions", "fp32")
    assert result.returncode == 0, result.stdout + result.stderr
    assert_quick_report(report, "cpu")
    markdown = (tmp_path / "report" / "check_gpu.md").read_text()
    assert f"| deploy | {DETECTOR} cpu vs cpu | pass |" in markdown


def test_unknown_detector_cannot_run(tmp_path):
    result, report = run_check(tmp_path, "--device", "cpu", "--detectors", "yolo")
    assert result.returncode == 2 and "unknown detectors ['yolo']" in result.stderr and report is None


def test_comparison_fails_on_a_different_model(tmp_path):
    root = synth_images(tmp_path, num_images=2)
    cfg = load_config(REPO / "configs" / f"{DETECTOR}_synth.yaml", synth_overrides(root, "128x96"))
    other = random_detector(cfg, seed=0)
    with torch.no_grad():
        other.bbox_head.retina_cls.bias.add_(1e-2)  # every score moves, boxes do not
    with pytest.raises(AssertionError, match="raw outputs differ"):
        compare_detector(cfg, torch.device("cpu"), model=other)


def test_detection_comparison_flags_missing_moved_and_no_detections():
    boxes = torch.tensor([[10.0, 10.0, 50.0, 40.0]]).repeat(12, 1) + torch.arange(12.0)[:, None] * 20
    ref = [Detections(boxes, torch.linspace(0.9, 0.1, 12), torch.zeros(12, dtype=torch.long))]
    assert compare_detections(ref, ref)[2] == []
    missing = compare_detections(ref, [Detections(boxes[:10], ref[0].scores[:10], ref[0].labels[:10])])[2]
    assert missing == ["too few matched (< 97%)", "too few within 0.02 px / 0.0005 (< 97%)"]
    moved = compare_detections(ref, [Detections(boxes + 0.5, ref[0].scores, ref[0].labels)])[2]
    assert moved == ["too few within 0.02 px / 0.0005 (< 97%)"]
    none = compare_detections([Detections(boxes[:0], ref[0].scores[:0], ref[0].labels[:0])], [ref[0]])[2]
    assert none[0] == "only 0 CPU detections on 1 images"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_quick_mode_writes_a_passing_table(tmp_path):
    result, report = run_check(tmp_path, "--device", "cuda", "--parts", "deploy,train", "--detectors", DETECTOR,
                               "--train-precisions", "fp32")
    assert result.returncode == 0, result.stdout + result.stderr
    assert_quick_report(report, "cuda")
