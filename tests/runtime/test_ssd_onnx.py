"""SSD300 exported to ONNX (custom-op and portable) gives the PyTorch model's detections on ONNX
Runtime: the softmax scores over C + 1 classes, the per-level anchors, and with torchvision's
options (anchor sides capped at the input, the best ``nms_pre`` boxes of each class over all
levels) too (``slow``: each export traces for a minute or two)."""
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

TORCHVISION_SSD = ["model.bbox_head.anchor.clip_to_input=true", "test.nms_pre=400", "test.nms_pre_per_class=true"]


@pytest.mark.slow
@pytest.mark.parametrize("flavour", ["custom", "portable"])
@pytest.mark.parametrize("options", ["mmdet", "torchvision"])
def test_ssd300_exports_and_matches_torch(options, flavour, tiny_synth, tmp_path):
    extra = ["data.test_scale=300x300", *(TORCHVISION_SSD if options == "torchvision" else [])]
    cfg = load_config(CONFIGS / "ssd300_synth.yaml", tiny_sets(tiny_synth, *extra))
    checkpoint = tmp_path / "ssd300.pth"
    torch.save({"model": random_detector(cfg).state_dict(), "meta": {}}, checkpoint)
    path, meta = export_onnx(cfg, checkpoint, tmp_path / "ssd300.onnx", portable=flavour == "portable",
                             dynamic_batch=True)
    assert meta.model_type == "ssd"
    engine = load_backend("onnxruntime", path, "cpu")
    images, metas = val_batch(cfg, 3)
    ref = TorchBackend.from_checkpoint(cfg, checkpoint, "cpu").infer(images, metas)
    assert sum(len(d) for d in ref) > 0
    got = engine.infer(images, metas)
    for d in list(ref) + list(got):
        d.masks = torch.zeros((len(d), 1, 1), dtype=torch.bool)
    assert_same([tie_order(d) for d in ref], [tie_order(d) for d in got])
