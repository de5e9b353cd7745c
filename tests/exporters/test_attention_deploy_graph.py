"""Faster R-CNN R-18 with generalized attention (all four terms, relative positions included) in its
backbone: the deploy graph gives ``predict``'s detections at two input sizes, run eagerly and
(``slow``) exported once to ONNX and run on ONNX Runtime at both: the position embeddings follow
the runtime size, nothing of the traced size is baked in."""
from __future__ import annotations

import pytest
import torch
from detector_helpers import random_detector
from test_deploy_graph import assert_same, deploy_detections, tiny_cfg

from dettool.exporters.deploy.detector import build_deploy_model
from dettool.trainer import builder
from dettool.trainer.models.backbones.generalized_attention import GeneralizedAttention

ALL_TERMS = "model.backbone.plugins=[{type: generalized_attention, attention_type: '1111'}]"
SIZES = ("128x96", "192x128")  # the tiny default, and a larger one


def attention_detector(root, test_scale: str):
    cfg = tiny_cfg("faster_rcnn_r18_fpn_attention", root, ALL_TERMS, f"data.test_scale={test_scale}")
    model = random_detector(cfg)
    modules = [m for m in model.modules() if isinstance(m, GeneralizedAttention)]
    assert len(modules) == 4 and all(m.attention_type == "1111" for m in modules)  # 2 blocks in res4, 2 in res5
    with torch.no_grad():  # a new module is the identity (gamma 0): give the attention its weight
        for m in modules:
            m.gamma.fill_(1.0)
    return cfg, model


def val_batch(cfg, size: int = 3):
    dataset = builder.build_dataset(cfg, "val")
    images, _, metas = next(iter(builder.build_dataloader(cfg, dataset, train=False, batch_size=size)))
    return images, metas


@pytest.mark.parametrize("test_scale", SIZES)
def test_deploy_graph_with_attention_equals_predict(test_scale, tiny_synth):
    cfg, model = attention_detector(tiny_synth, test_scale)
    deploy = build_deploy_model(model)
    images, metas = val_batch(cfg)
    ref = model.predict(images, metas)
    assert sum(len(r) for r in ref) > 0
    assert_same(ref, deploy_detections(deploy, images, metas))


def tie_order(d) -> list[int]:
    """Detection indices by score (to 1e-5), then box: random weights give scores equal to the
    last bit, which either side may rank first."""
    return sorted(range(len(d)), key=lambda i: (-round(float(d.scores[i]), 5),
                                                *[round(float(c), 1) for c in d.boxes[i]]))


@pytest.mark.slow
def test_onnx_graph_with_attention_equals_predict_at_two_sizes(tiny_synth, tmp_path):
    """One export (traced at the first size, symbolic H and W), run at both sizes on ONNX Runtime
    (``slow``: the export traces for a minute or two)."""
    from dettool.exporters.torch2onnx import export_onnx
    from dettool.runtime import load_backend

    cfg, model = attention_detector(tiny_synth, SIZES[0])
    checkpoint = tmp_path / "attention.pth"
    torch.save({"model": model.state_dict(), "meta": {}}, checkpoint)
    path, _ = export_onnx(cfg, checkpoint, tmp_path / "attention.onnx", portable=True, dynamic_batch=True)
    engine = load_backend("onnxruntime", path, "cpu")
    for test_scale in SIZES:
        images, metas = val_batch(attention_detector(tiny_synth, test_scale)[0])
        with torch.no_grad():
            ref = model.predict(images, metas)
        got = engine.infer(images, metas)
        assert sum(len(r) for r in ref) > 0 and len(got) == len(ref)
        for r, d in zip(ref, got):
            assert len(r) == len(d)
            i, j = tie_order(r), tie_order(d)
            assert torch.equal(d.labels[j], r.labels[i])
            torch.testing.assert_close(d.boxes[j], r.boxes[i], atol=1e-3, rtol=0)
            torch.testing.assert_close(d.scores[j], r.scores[i], atol=1e-4, rtol=0)
