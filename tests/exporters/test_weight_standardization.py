"""The deploy graph folds weight-standardized convs into plain ones: it computes what the trained
model computes, and its ONNX graph convolves with constant weights (no weight statistics)."""
from __future__ import annotations

import onnx
import pytest
import torch
from detector_helpers import CONFIGS, random_detector, tiny_sets
from torch import nn

from dettool.config import load_config
from dettool.exporters.deploy.detector import build_deploy_model
from dettool.exporters.deploy.weight_standardization import fold_weight_standardization
from dettool.exporters.torch2onnx import export_onnx
from dettool.runtime import load_backend
from dettool.runtime.torch_backend import TorchBackend
from dettool.structures.detections import image_shapes_tensor
from dettool.trainer import builder
from dettool.trainer.models.backbones.conv_ws import ConvWS2d

CONFIG = CONFIGS / "faster_rcnn_r18_fpn_gn_ws_synth.yaml"


def leaves(x) -> list[torch.Tensor]:
    """The tensors of a nested tuple / list / dict of outputs, in order."""
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, dict):
        x = list(x.values())
    return [t for item in (x if isinstance(x, (tuple, list)) else []) for t in leaves(item)]


def val_batch(cfg, size: int):
    dataset = builder.build_dataset(cfg, "val")
    images, _, metas = next(iter(builder.build_dataloader(cfg, dataset, train=False, batch_size=size)))
    return images, metas


def test_fold_replaces_every_standardized_conv_by_the_conv_it_equals():
    torch.manual_seed(0)
    model = nn.Sequential(ConvWS2d(3, 8, 3, padding=1), nn.GroupNorm(4, 8), nn.Sequential(ConvWS2d(8, 4, 1)))
    x = torch.randn(2, 3, 10, 12)
    with torch.no_grad():
        ref = model(x)
        folded = fold_weight_standardization(model)
        assert folded is model and type(model[0]) is nn.Conv2d and type(model[2][0]) is nn.Conv2d
        torch.testing.assert_close(model(x), ref, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="not the conv itself"):
        fold_weight_standardization(ConvWS2d(3, 8, 1))


def test_deploy_model_is_folded_and_equals_the_trained_model(tiny_synth):
    cfg = load_config(CONFIG, tiny_sets(tiny_synth))
    model = random_detector(cfg)
    num_ws = sum(isinstance(m, ConvWS2d) for m in model.modules())
    assert num_ws == 20 + 8 + 4  # ResNet-18's (stem, blocks, 3 shortcuts), the FPN's (lateral, output), the box head's
    deploy = build_deploy_model(model)
    assert not any(isinstance(m, ConvWS2d) for m in deploy.modules())
    assert sum(isinstance(m, ConvWS2d) for m in model.modules()) == num_ws  # the trained model is untouched
    images, metas = val_batch(cfg, 2)
    shapes = image_shapes_tensor(metas)
    with torch.no_grad():
        raw_ref, raw = model(images), deploy.model(images)
        for r, d in zip(leaves(raw_ref), leaves(raw), strict=True):
            torch.testing.assert_close(d, r, atol=1e-5, rtol=0)
        dets_ref, dets = model.decode(raw_ref, shapes), deploy(images, shapes)
        for r, d in zip(leaves(dets_ref)[:4], dets, strict=True):
            torch.testing.assert_close(d, r, atol=1e-5, rtol=0)
    assert int(dets[0].sum()) > 0


@pytest.mark.slow
def test_onnx_graph_convolves_with_constant_weights_and_equals_torch(tiny_synth, tmp_path):
    """Exported (portable, minutes on 2 cores): every Conv reads an initializer, no weight statistic
    (ReduceMean, Sqrt, ...) reads one, and ONNX Runtime gives the PyTorch model's detections."""
    cfg = load_config(CONFIG, tiny_sets(tiny_synth))
    checkpoint = tmp_path / "gn_ws.pth"
    torch.save({"model": random_detector(cfg).state_dict(), "meta": {}}, checkpoint)
    path, meta = export_onnx(cfg, checkpoint, tmp_path / "gn_ws.onnx", portable=True)
    graph = onnx.load(str(path)).graph
    weights = {i.name for i in graph.initializer if len(i.dims) == 4}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert len(convs) >= 20 + 8 + 4 and all(n.input[1] in weights for n in convs)
    statistics = ("ReduceMean", "ReduceSum", "ReduceSumSquare", "Sqrt", "Pow", "Sub", "Div")
    assert not [n.name for n in graph.node if n.op_type in statistics and set(n.input) & weights]
    images, metas = val_batch(cfg, 2)
    ref = TorchBackend.from_checkpoint(cfg, checkpoint, "cpu").infer(images, metas)
    got = load_backend("onnxruntime", path, "cpu").infer(images, metas)
    assert sum(len(d) for d in ref) > 0
    for r, d in zip(ref, got, strict=True):
        assert torch.equal(r.labels, d.labels)
        torch.testing.assert_close(d.boxes, r.boxes, atol=1e-3, rtol=0)
        torch.testing.assert_close(d.scores, r.scores, atol=1e-4, rtol=0)
