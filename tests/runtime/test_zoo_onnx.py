"""GHM RetinaNet and Double-Head Faster R-CNN exported to ONNX (custom-op and portable) give the
PyTorch model's detections on ONNX Runtime (``slow``: each export traces for a minute or two)."""
from __future__ import annotations

import pytest
import torch
from detector_helpers import CONFIGS
from detector_helpers import tiny_sets as dense_sets
from runtime_helpers import random_detector, tiny_sets
from test_backends import assert_same, val_batch

from dettool.config import load_config
from dettool.exporters.torch2onnx import export_onnx
from dettool.runtime import load_backend
from dettool.runtime.torch_backend import TorchBackend


@pytest.mark.slow
@pytest.mark.parametrize("flavour", ["custom", "portable"])
@pytest.mark.parametrize("name", ["ghm_retinanet_r18_fpn_synth", "dh_faster_rcnn_r18_fpn_synth"])
def test_new_members_export_and_match_torch(name, flavour, tiny_synth, tmp_path):
    sets = tiny_sets(tiny_synth) if name.startswith("dh_") else dense_sets(tiny_synth, "model.backbone.weights=null")
    cfg = load_config(CONFIGS / f"{name}.yaml", sets)
    checkpoint = tmp_path / f"{name}.pth"
    torch.save({"model": random_detector(cfg).state_dict(), "meta": {}}, checkpoint)
    path, meta = export_onnx(cfg, checkpoint, tmp_path / f"{name}.onnx", portable=flavour == "portable",
                             dynamic_batch=True)
    if name.startswith("dh_"):
        assert meta.model_type == "double_head_rcnn"
    engine = load_backend("onnxruntime", path, "cpu")
    images, metas = val_batch(cfg, 3)
    ref = TorchBackend.from_checkpoint(cfg, checkpoint, "cpu").infer(images, metas)
    assert sum(len(d) for d in ref) > 0
    got = engine.infer(images, metas)
    for d in list(ref) + list(got):
        d.masks = torch.zeros((len(d), 1, 1), dtype=torch.bool)
    assert_same(ref, got)
