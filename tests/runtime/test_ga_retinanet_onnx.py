"""GA-RetinaNet exported to ONNX (custom-op and portable) gives the PyTorch model's detections on
ONNX Runtime: the deformable feature adaption (``DettoolModulatedDeformConv`` / ``DeformConv``),
the guided anchors and the location filter in the graph (``slow``: each export traces for a
minute or two)."""
from __future__ import annotations

import pytest
import torch
from detector_helpers import CONFIGS, random_detector, tiny_sets
from test_backends import assert_same
from test_zoo_onnx import export_and_run, tie_order

from dettool.config import load_config


@pytest.mark.slow
@pytest.mark.parametrize("flavour", ["custom", "portable"])
def test_ga_retinanet_exports_and_matches_torch(flavour, tiny_synth, tmp_path):
    cfg = load_config(CONFIGS / "ga_retinanet_r18_fpn_synth.yaml", tiny_sets(tiny_synth, "test.score_thr=0.001"))
    model = random_detector(cfg)
    with torch.no_grad():  # most locations pass the location filter, some do not
        model.bbox_head.conv_loc.weight.normal_(0.0, 0.05)
        model.bbox_head.conv_loc.bias.fill_(-3.0)
    ref, got, meta = export_and_run(cfg, model, tmp_path, "ga_retinanet", flavour)
    assert meta.model_type == "ga_retinanet"
    assert_same([tie_order(d) for d in ref], [tie_order(d) for d in got])
