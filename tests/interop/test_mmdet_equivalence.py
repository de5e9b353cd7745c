"""Converted MMDetection models equal MMDetection's own code on the same weights.

For each family: MMDetection's model from its shipped config with seeded random weights, saved as
an MMDetection 3.x checkpoint, converted by ``dettool convert mmdet``; on the same pre-processed
input the raw head outputs agree within 1e-4 and the final detections are the same (boxes within
1e-2 px, same labels, scores within 1e-5).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from dettool.config import load_config
from dettool.interop.convert import convert_mmdet
from dettool.trainer import builder
from dettool.trainer.checkpoint import load_checkpoint, load_model_weights

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mmdet") is None, reason="MMDetection is not installed")

# family: (shipped config, {final layer: the std its outputs are scaled to})
FAMILIES = {
    "retinanet": ("retinanet/retinanet_r50_fpn_1x_coco.py", {"bbox_head.retina_cls": 2.0, "bbox_head.retina_reg": 0.3}),
}
H, W = 256, 320


def mmdet_configs() -> Path:
    return Path(importlib.util.find_spec("mmdet").origin).parent / ".mim" / "configs"


def mmdet_model(config: Path, final_layers: dict[str, float], seed: int = 0) -> torch.nn.Module:
    """MMDetection's model with random weights and non-trivial BN statistics; each final layer
    rescaled so that its outputs have the given std (spread-out scores, boxes of sensible size)."""
    from mmdet_reference import import_mmdet

    import_mmdet()
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    register_all_modules()
    cfg = Config.fromfile(str(config))
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
    model.eval()
    layers = dict(model.named_modules())
    stds: dict[str, float] = {}
    hooks = [layers[name].register_forward_hook(lambda m, i, o, name=name: stds.setdefault(name, float(o.std())))
             for name in final_layers]
    with torch.no_grad():
        model._forward(torch.randn(1, 3, H, W, generator=torch.Generator().manual_seed(seed)))
        for hook in hooks:
            hook.remove()
        for name, target in final_layers.items():
            layers[name].weight.mul_(target / stds[name])
            layers[name].bias.mul_(target / stds[name])
    return model


def convert(family: str, tmp_path: Path):
    config, final_layers = FAMILIES[family]
    config = mmdet_configs() / config
    reference = mmdet_model(config, final_layers)
    ckpt = tmp_path / "mmdet.pth"
    torch.save({"meta": {"dataset_meta": {"classes": tuple(f"c{i}" for i in range(80))}},
                "state_dict": reference.state_dict()}, ckpt)
    yaml_path, ckpt_path = convert_mmdet(config, ckpt, tmp_path / "out", log=lambda _: None)
    cfg = load_config(yaml_path)
    model = builder.build_model(cfg).eval()
    load_model_weights(model, load_checkpoint(ckpt_path), ckpt_path)
    return reference, model, cfg


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_raw_outputs_and_detections_equal_mmdetection(family: str, tmp_path: Path) -> None:
    from mmdet.structures import DetDataSample

    reference, model, cfg = convert(family, tmp_path)
    h, w = H, W
    images = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref_raw = reference._forward(images)
        raw = model(images)
    compared = 0
    for ref_levels, levels in zip(ref_raw, raw):
        assert len(ref_levels) == len(levels)
        for r, d in zip(ref_levels, levels):
            torch.testing.assert_close(d, r, atol=1e-4, rtol=0)
            compared += r.numel()
    assert compared > 0
    metas = [{"img_shape": (h, w), "ori_shape": (h, w), "scale_factor": (1.0, 1.0)} for _ in range(2)]
    samples = [DetDataSample(metainfo={**m, "pad_shape": (h, w), "batch_input_shape": (h, w)}) for m in metas]
    with torch.no_grad():
        ref_dets = [s.pred_instances for s in reference.predict(images, samples, rescale=True)]
    dets = model.predict(images, metas)
    assert sum(len(r) for r in ref_dets) > 10
    for r, d in zip(ref_dets, dets):
        assert_same_detections(r.bboxes, r.scores, r.labels, d)


def assert_same_detections(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, dets) -> None:
    """One-to-one: each detection has a reference one of its label with the box within 1e-2 px and
    the score within 1e-5 (detections of tied scores may come in either order)."""
    assert len(dets) == len(boxes)
    torch.testing.assert_close(dets.scores, scores, atol=1e-5, rtol=0)  # both sorted by score
    unused = set(range(len(boxes)))
    for box, score, label in zip(dets.boxes, dets.scores, dets.labels):
        match = [j for j in unused if labels[j] == label and abs(float(scores[j] - score)) <= 1e-5
                 and float((boxes[j] - box).abs().max()) <= 1e-2]
        assert match, f"no MMDetection detection matches {box.tolist()} {float(score):.5f} label {int(label)}"
        unused.remove(match[0])
