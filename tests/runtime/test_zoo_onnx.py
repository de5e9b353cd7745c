"""GHM RetinaNet, Double-Head Faster R-CNN, Libra RetinaNet, FSAF, R-FCN, Libra and GA Faster R-CNN, Grid
R-CNN, Mask Scoring R-CNN and Hybrid Task Cascade exported to ONNX (custom-op and portable) give the
PyTorch model's detections on ONNX Runtime (``slow``: each export traces for a minute or two)."""
from __future__ import annotations

import pytest
import torch
from detector_helpers import CONFIGS, TORCHVISION_OPTIONS
from detector_helpers import tiny_sets as dense_sets
from runtime_helpers import random_detector, tiny_sets
from test_backends import assert_same, val_batch

from dettool.config import load_config
from dettool.exporters.torch2onnx import export_onnx
from dettool.runtime import load_backend
from dettool.runtime.torch_backend import TorchBackend


@pytest.mark.slow
@pytest.mark.parametrize("flavour", ["custom", "portable"])
@pytest.mark.parametrize("name", ["ghm_retinanet_r18_fpn_synth", "dh_faster_rcnn_r18_fpn_synth",
                                  "libra_retinanet_r18_fpn_synth", "fsaf_r18_fpn_synth", "rfcn_r18_synth",
                                  "libra_faster_rcnn_r18_fpn_synth", "ga_faster_rcnn_r18_fpn_synth",
                                  "grid_rcnn_r18_fpn_synth"])
def test_new_members_export_and_match_torch(name, flavour, tiny_synth, tmp_path):
    two_stage = name.startswith(("dh_", "rfcn_", "libra_faster_", "ga_faster_", "grid_"))
    sets = tiny_sets(tiny_synth) if two_stage else dense_sets(tiny_synth, "model.backbone.weights=null")
    cfg = load_config(CONFIGS / f"{name}.yaml", sets)
    ref, got, meta = export_and_run(cfg, random_detector(cfg), tmp_path, name, flavour)
    if two_stage:
        families = {"dh_": "double_head_rcnn", "rfcn_": "rfcn", "libra_faster_": "faster_rcnn",
                    "ga_faster_": "faster_rcnn", "grid_": "grid_rcnn"}
        assert meta.model_type == next(v for k, v in families.items() if name.startswith(k))
    assert_same(ref, got)


@pytest.mark.slow
@pytest.mark.parametrize("flavour", ["custom", "portable"])
@pytest.mark.parametrize("name,family", [("ms_rcnn_r18_fpn_synth", "ms_rcnn"), ("htc_r18_fpn_synth", "htc")])
def test_mask_models_export_their_detections_and_masks(name, family, flavour, tiny_synth, tmp_path):
    """Mask Scoring R-CNN's deploy graph (scores times the MaskIoU head's IoU) and Hybrid Task
    Cascade's (semantic embedding in the RoI features, the mask flow through every stage): the
    detections and masks PyTorch gives."""
    cfg = load_config(CONFIGS / f"{name}.yaml", tiny_sets(tiny_synth))
    checkpoint = tmp_path / f"{name}.pth"
    torch.save({"model": random_detector(cfg).state_dict(), "meta": {}}, checkpoint)
    path, meta = export_onnx(cfg, checkpoint, tmp_path / f"{name}.onnx", portable=flavour == "portable",
                             dynamic_batch=True)
    assert meta.model_type == family and meta.with_masks
    images, metas = val_batch(cfg, 3)
    ref = TorchBackend.from_checkpoint(cfg, checkpoint, "cpu").infer(images, metas)
    assert sum(len(d) for d in ref) > 0
    assert_same(ref, load_backend("onnxruntime", path, "cpu").infer(images, metas))


def export_and_run(cfg, model: torch.nn.Module, tmp_path, name: str, flavour: str):
    """``model`` saved, exported in ``flavour`` (dynamic batch) and both run on a val batch of 3:
    ``(torch detections, ONNX Runtime detections, deploy metadata)``, masks blanked (box models)."""
    checkpoint = tmp_path / f"{name}.pth"
    torch.save({"model": model.state_dict(), "meta": {}}, checkpoint)
    path, meta = export_onnx(cfg, checkpoint, tmp_path / f"{name}.onnx", portable=flavour == "portable",
                             dynamic_batch=True)
    engine = load_backend("onnxruntime", path, "cpu")
    images, metas = val_batch(cfg, 3)
    ref = TorchBackend.from_checkpoint(cfg, checkpoint, "cpu").infer(images, metas)
    assert sum(len(d) for d in ref) > 0
    got = engine.infer(images, metas)
    for d in list(ref) + list(got):
        d.masks = torch.zeros((len(d), 1, 1), dtype=torch.bool)
    return ref, got, meta


@pytest.mark.slow
@pytest.mark.parametrize("flavour", ["custom", "portable"])
@pytest.mark.parametrize("name", ["retinanet", "fcos", "mask_rcnn"])
def test_torchvision_options_export_and_match_torch(name, flavour, tiny_synth, tmp_path):
    """What ``dettool convert torchvision`` sets (anchor sizes and strides from the input size,
    FCOS's corner points and square-root score, unaligned RoIAlign, two RPN convs, BN in the RoI
    heads, the minimum box size, torchvision's mask pasting) survives export: the padded inputs of
    varied sizes give P6 / P7 strides off 64 / 128."""
    base = f"{name}_r18_fpn_synth"
    extra = TORCHVISION_OPTIONS[name]
    sets = tiny_sets(tiny_synth, *extra) if name == "mask_rcnn" else dense_sets(tiny_synth, *extra)
    cfg = load_config(CONFIGS / f"{base}.yaml", sets)
    checkpoint = tmp_path / f"{base}.pth"
    torch.save({"model": random_detector(cfg).state_dict(), "meta": {}}, checkpoint)
    path, meta = export_onnx(cfg, checkpoint, tmp_path / f"{base}.onnx", portable=flavour == "portable",
                             dynamic_batch=True)
    assert meta.postprocess.mask_paste == cfg.test.mask_paste
    engine = load_backend("onnxruntime", path, "cpu")
    images, metas = val_batch(cfg, 3)
    ref = TorchBackend.from_checkpoint(cfg, checkpoint, "cpu").infer(images, metas)
    assert sum(len(d) for d in ref) > 0
    got = engine.infer(images, metas)
    if name != "mask_rcnn":
        for d in list(ref) + list(got):
            d.masks = torch.zeros((len(d), 1, 1), dtype=torch.bool)
    # random weights give scores equal to the last bit at distant anchors, which either side may
    # rank first: compare in the order (score to 1e-5, box)
    assert_same([tie_order(d) for d in ref], [tie_order(d) for d in got])


def tie_order(d):
    def key(i: int) -> tuple:
        return (-round(float(d.scores[i]), 5), *[round(float(c), 1) for c in d.boxes[i]])

    order = sorted(range(len(d)), key=key)
    return type(d)(d.boxes[order], d.scores[order], d.labels[order], masks=d.masks[order])
