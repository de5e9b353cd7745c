"""SSD300 exported to ONNX (custom-op and portable) gives the PyTorch model's detections on ONNX
Runtime: the softmax scores over C + 1 classes, the per-level anchors, and with torchvision's
options (anchor sides capped at the input, the best ``nms_pre`` boxes of each class over all
levels) too (``slow``: each export traces for a minute or two)."""
from __future__ import annotations

import pytest
from detector_helpers import CONFIGS, random_detector, tiny_sets
from test_scratchdet_m2det_onnx import assert_matched
from test_zoo_onnx import export_and_run

from dettool.config import load_config

TORCHVISION_SSD = ["model.bbox_head.anchor.clip_to_input=true", "test.nms_pre=400", "test.nms_pre_per_class=true"]


@pytest.mark.slow
@pytest.mark.parametrize("flavour", ["custom", "portable"])
@pytest.mark.parametrize("options", ["mmdet", "torchvision"])
def test_ssd300_exports_and_matches_torch(options, flavour, tiny_synth, tmp_path):
    extra = ["data.test_scale=300x300", *(TORCHVISION_SSD if options == "torchvision" else [])]
    cfg = load_config(CONFIGS / "ssd300_synth.yaml", tiny_sets(tiny_synth, *extra))
    ref, got, meta = export_and_run(cfg, random_detector(cfg), tmp_path, "ssd300", flavour)
    assert meta.model_type == "ssd"
    assert_matched(ref, got)
