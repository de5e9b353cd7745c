"""GA-RetinaNet exported to ONNX (custom-op and portable) gives the PyTorch model's detections on
ONNX Runtime: the deformable feature adaption (``DettoolModulatedDeformConv`` / ``DeformConv``),
the guided anchors and the location filter in the graph (``slow``: each export traces for a
minute or two)."""
from __future__ import annotations

import pytest
import torch
from detector_helpers import CONFIGS, random_detector, tiny_sets
from test_backends import assert_same, val_batch
from test_zoo_onnx import tie_order

from dettool.config import load_config
from dettool.exporters.torch2onnx import export_onnx
from dettool.runtime import load_backend
from dettool.runtime.torch_backend import TorchBackend


@pytest.mark.slow
@pytest.mark.parametrize("flavour", ["custom", "portable"])
def test_ga_retinanet_exports_and_matches_torch(flavour, tiny_synth, tmp_path):
    cfg = load_config(CONFIGS / "ga_retinanet_r18_fpn_synth.yaml", tiny_sets(tiny_synth, "test.score_thr=0.001"))
    model = random_detector(cfg)
    with torch.no_grad():  # most locations pass the location filter, some do not
        model.bbox_head.conv_loc.weight.normal_(0.0, 0.05)
        model.bbox_head.conv_loc.bias.fill_(-3.0)
    checkpoint = tmp_path / "ga_retinanet.pth"
    torch.save({"model": model.state_dict(), "meta": {}}, checkpoint)
    path, meta = export_onnx(cfg, checkpoint, tmp_path / "ga_retinanet.onnx", portable=flavour == "portable",
                             dynamic_batch=True)
    assert meta.model_type == "ga_retinanet"
    engine = load_backend("onnxruntime", path, "cpu")
    images, metas = val_batch(cfg, 3)
    ref = TorchBackend.from_checkpoint(cfg, checkpoint, "cpu").infer(images, metas)
    assert sum(len(d) for d in ref) > 0
    got = engine.infer(images, metas)
    for d in list(ref) + list(got):
        d.masks = torch.zeros((len(d), 1, 1), dtype=torch.bool)
    assert_same([tie_order(d) for d in ref], [tie_order(d) for d in got])
