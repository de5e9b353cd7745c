"""Faster R-CNN HRNetV2p (the synth config) exported to ONNX (custom-op and portable) gives the PyTorch
model's detections on ONNX Runtime: the fusion's and HRFPN's upsampling to the branches' sizes
traces with a symbolic input size, on a batch of padded images of varied sizes (``slow``: each
export traces for a minute or two)."""
from __future__ import annotations

import pytest
from detector_helpers import CONFIGS
from runtime_helpers import random_detector, tiny_sets
from test_backends import assert_same
from test_zoo_onnx import export_and_run

from dettool.config import load_config

NAME = "faster_rcnn_hrnetv2p_w18_synth"


@pytest.mark.slow
@pytest.mark.parametrize("flavour", ["custom", "portable"])
def test_exports_and_matches_torch(flavour, tiny_synth, tmp_path):
    cfg = load_config(CONFIGS / f"{NAME}.yaml", tiny_sets(tiny_synth))
    ref, got, meta = export_and_run(cfg, random_detector(cfg), tmp_path, NAME, flavour)
    assert meta.model_type == "faster_rcnn"
    # ONNX Runtime's float noise through a random HRNet moves a few box edges by up to 3e-3 px
    assert_same(ref, got, box_atol=5e-3)
