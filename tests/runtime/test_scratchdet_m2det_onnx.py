"""ScratchDet (Root-ResNet, SSD with BatchNorm) and M2Det (VGG16 + MLFPN) exported to ONNX (custom-op
and portable) give the PyTorch model's detections on ONNX Runtime: the root block, the BatchNorm
predictors, the TUMs' nearest upsampling to the lateral sizes and SFAM's attention all trace to
static shapes at the models' input sizes (``slow``: each export traces for a minute or two)."""
from __future__ import annotations

import pytest
import torch
from detector_helpers import CONFIGS, random_detector, tiny_sets
from test_backends import val_batch

from dettool.config import load_config
from dettool.exporters.torch2onnx import export_onnx
from dettool.runtime import load_backend
from dettool.runtime.torch_backend import TorchBackend

MODELS = {"scratchdet_rootres18_synth": "300x300", "m2det_vgg16_synth": "320x320"}


def assert_matched(ref, got, box_atol: float = 5e-3, score_atol: float = 1e-4) -> None:
    """Each image's detections pair up one to one: same label, box and score up to float noise.
    Matched rather than sorted: two hundred scores of a random model hold pairs within 1e-5 of
    each other, whose order ONNX Runtime's float noise may swap."""
    for r, d in zip(ref, got, strict=True):
        assert len(r) == len(d) > 0
        dist = (r.boxes[:, None] - d.boxes[None]).abs().amax(-1) + (r.scores[:, None] - d.scores[None]).abs()
        dist[r.labels[:, None] != d.labels[None]] = float("inf")
        nearest = dist.argmin(1)
        assert len(set(nearest.tolist())) == len(r)  # one to one
        torch.testing.assert_close(d.boxes[nearest], r.boxes, atol=box_atol, rtol=0)
        torch.testing.assert_close(d.scores[nearest], r.scores, atol=score_atol, rtol=0)


def spread_scores(model: torch.nn.Module, images: torch.Tensor) -> torch.nn.Module:
    """Scale each level's classification logits to unit spread on ``images``: a random MLFPN's
    features are large enough to saturate the softmax (every score 1.0, all ties)."""
    with torch.no_grad():
        feats = model.neck(model.backbone(images))
        for conv, f in zip(model.bbox_head.cls_convs, feats):
            conv[-1].weight /= conv(f).std()
    return model


@pytest.mark.slow
@pytest.mark.parametrize("flavour", ["custom", "portable"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_exports_and_matches_torch(name, flavour, tiny_synth, tmp_path):
    cfg = load_config(CONFIGS / f"{name}.yaml", tiny_sets(tiny_synth, f"data.test_scale={MODELS[name]}"))
    checkpoint = tmp_path / f"{name}.pth"
    images, metas = val_batch(cfg, 3)
    torch.save({"model": spread_scores(random_detector(cfg), images).state_dict(), "meta": {}}, checkpoint)
    path, meta = export_onnx(cfg, checkpoint, tmp_path / f"{name}.onnx", portable=flavour == "portable",
                             dynamic_batch=True)
    assert meta.model_type == "ssd"
    engine = load_backend("onnxruntime", path, "cpu")
    ref = TorchBackend.from_checkpoint(cfg, checkpoint, "cpu").infer(images, metas)
    assert sum(len(d) for d in ref) > 0
    assert_matched(ref, engine.infer(images, metas))
