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
RPN_LAYERS = {"rpn_head.rpn_cls": 2.0, "rpn_head.rpn_reg": 0.3}
RCNN_LAYERS = {**RPN_LAYERS, "roi_head.bbox_head.fc_cls": 2.0, "roi_head.bbox_head.fc_reg": 0.3}
FAMILIES = {
    "retinanet": ("retinanet/retinanet_r50_fpn_1x_coco.py", {"bbox_head.retina_cls": 2.0, "bbox_head.retina_reg": 0.3}),
    "faster_rcnn": ("faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py", RCNN_LAYERS),
    "mask_rcnn": ("mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py", {**RCNN_LAYERS, "roi_head.mask_head.conv_logits": 2.0}),
    "ghm": ("ghm/retinanet_r50_fpn_ghm-1x_coco.py", {"bbox_head.retina_cls": 2.0, "bbox_head.retina_reg": 0.3}),
    "double_heads": ("double_heads/dh-faster-rcnn_r50_fpn_1x_coco.py", RCNN_LAYERS),
    "dcn": ("dcn/faster-rcnn_r50-dconv-c3-c5_fpn_1x_coco.py", RCNN_LAYERS),
    "dcnv2": ("dcnv2/faster-rcnn_r50-mdconv-group4-c3-c5_fpn_1x_coco.py", RCNN_LAYERS),
    "cascade_rcnn": ("cascade_rcnn/cascade-rcnn_r50_fpn_1x_coco.py",
                     {**RPN_LAYERS, **{f"roi_head.bbox_head.{i}.fc_{k}": v for i in range(3)
                                       for k, v in (("cls", 2.0), ("reg", 0.3))}}),
    "cascade_mask_rcnn": ("cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py",
                          {**RPN_LAYERS, **{f"roi_head.bbox_head.{i}.fc_{k}": v for i in range(3)
                                            for k, v in (("cls", 2.0), ("reg", 0.3))},
                           **{f"roi_head.mask_head.{i}.conv_logits": 2.0 for i in range(3)}}),
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
    calibration = torch.randn(1, 3, H, W, generator=torch.Generator().manual_seed(seed))
    for name in final_layers:  # in order: each one calibrated on the outputs of those before it
        stds: list[float] = []

        def record(module, inputs, output, stds=stds) -> None:  # returns None: the output is kept
            stds.append(float(output.std()))

        hook = layers[name].register_forward_hook(record)
        with torch.no_grad():
            model._forward(calibration, data_samples(1))
            hook.remove()
            layers[name].weight.mul_(final_layers[name] / stds[0])
            layers[name].bias.mul_(final_layers[name] / stds[0])
    return model


def data_samples(n: int, h: int = H, w: int = W) -> list:
    """MMDetection's per-image metadata for an unresized, unpadded ``h x w`` input."""
    from mmdet.structures import DetDataSample

    meta = {"img_shape": (h, w), "ori_shape": (h, w), "scale_factor": (1.0, 1.0), "pad_shape": (h, w),
            "batch_input_shape": (h, w)}
    return [DetDataSample(metainfo=meta) for _ in range(n)]


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
    reference, model, cfg = convert(family, tmp_path)
    h, w = H, W
    images = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        pairs = raw_output_pairs(reference, model, images)
    assert pairs
    for name, r, d in pairs:
        torch.testing.assert_close(d, r, atol=1e-4, rtol=0, msg=lambda m, name=name: f"{family} {name}: {m}")
    metas = [{"img_shape": (h, w), "ori_shape": (h, w), "scale_factor": (1.0, 1.0)} for _ in range(2)]
    with torch.no_grad():
        ref_dets = [s.pred_instances for s in reference.predict(images, data_samples(2), rescale=True)]
    dets = model.predict(images, metas)
    assert sum(len(r) for r in ref_dets) > 10
    for r, d in zip(ref_dets, dets):
        matched = assert_same_detections(r.bboxes, r.scores, r.labels, d)
        if "masks" in r:
            flips = [float((r.masks[j] != d.masks[i]).float().mean()) for i, j in matched]
            assert max(flips) <= 1e-3, f"mask pixels differ: {max(flips):.4f}"


def raw_output_pairs(reference, model, images) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, MMDetection's, dettool's) raw outputs: every head level, and for two-stage models
    the RoI head's on the same RoIs (MMDetection's first 300 proposals of each image)."""
    if not hasattr(reference, "rpn_head"):
        ref, out = reference._forward(images), model(images)
        return [(f"{k}[{lvl}]", r, d) for k, (rs, ds) in zip(("cls", "reg"), zip(ref, out))
                for lvl, (r, d) in enumerate(zip(rs, ds))]
    feats_ref = reference.extract_feat(images)
    feats, rpn = model(images)
    pairs = [(f"fpn[{i}]", r, d) for i, (r, d) in enumerate(zip(feats_ref, feats))]
    pairs += [(f"rpn_{k}[{lvl}]", r, d) for k, (rs, ds) in zip(("cls", "reg"), zip(reference.rpn_head(feats_ref), rpn))
              for lvl, (r, d) in enumerate(zip(rs, ds))]
    from mmdet.structures import DetDataSample
    from mmdet.structures.bbox import bbox2roi

    h, w = images.shape[-2:]
    samples = [DetDataSample(metainfo={"img_shape": (h, w), "batch_input_shape": (h, w)}) for _ in images]
    proposals = reference.rpn_head.predict(feats_ref, samples, rescale=False)
    rois = bbox2roi([p.bboxes[:300] for p in proposals])
    if hasattr(model.roi_head, "bbox_heads"):  # cascade: the first stage's head
        ref_roi = reference.roi_head._bbox_forward(0, feats_ref, rois)
        cls, reg = model.roi_head.bbox_heads[0](model.roi_head.roi_extractor(feats, rois))
    else:
        ref_roi = reference.roi_head._bbox_forward(feats_ref, rois)
        cls, reg = model.roi_head.bbox_forward(feats, rois)
    return pairs + [("roi_cls", ref_roi["cls_score"], cls), ("roi_reg", ref_roi["bbox_pred"], reg)]


def assert_same_detections(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                           dets) -> list[tuple[int, int]]:
    """One-to-one: each detection has a reference one of its label with the box within 1e-2 px and
    the score within 1e-5 (detections of tied scores may come in either order)."""
    assert len(dets) == len(boxes)
    torch.testing.assert_close(dets.scores, scores, atol=1e-5, rtol=0)  # both sorted by score
    unused, matched = set(range(len(boxes))), []
    for i, (box, score, label) in enumerate(zip(dets.boxes, dets.scores, dets.labels)):
        match = [j for j in unused if labels[j] == label and abs(float(scores[j] - score)) <= 1e-5
                 and float((boxes[j] - box).abs().max()) <= 1e-2]
        assert match, f"no MMDetection detection matches {box.tolist()} {float(score):.5f} label {int(label)}"
        unused.remove(match[0])
        matched.append((i, match[0]))
    return matched
