"""Converted torchvision detection models equal torchvision's own code on the same weights.

For each model name: torchvision's model with seeded random weights (norm statistics measured on
the input, final layers scaled so that scores spread out), its state dict converted by
``dettool convert torchvision``; on the same pre-processed input (288 x 352: odd multiples of 32,
so that P6 / P7 strides are torchvision's floor-divided ones, 57 / 96 and 58 / 117) the raw
outputs agree within 1e-4 (float64) and the final detections are the same (float32: same labels,
boxes within 1e-2 px, scores within 5e-4). torchvision's transform is set to neither resize nor
normalise, so both models see the same tensor.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torchvision.models.detection.image_list import ImageList

from dettool.config import load_config
from dettool.interop.convert import convert_torchvision
from dettool.interop.torchvision_convert import MODELS
from dettool.trainer import builder
from dettool.trainer.checkpoint import load_checkpoint, load_model_weights
from dettool.trainer.models.postprocess.batched import levels_to_rows

H, W = 288, 352
SCORE_TOL = 5e-4
RCNN = {"rpn.head.cls_logits": 2.0, "rpn.head.bbox_pred": 0.3, "roi_heads.box_predictor.cls_score": 2.0,
        "roi_heads.box_predictor.bbox_pred": 0.3}
FINAL_LAYERS = {  # layer: std of its outputs, or (std, bias)
    "retinanet": {"head.classification_head.cls_logits": (1.0, -4.0), "head.regression_head.bbox_reg": 0.3},
    # relu(x) strides: a bias of 2 gives boxes of about 4 strides; logits around -4 spread the scores
    "fcos": {"head.classification_head.cls_logits": (1.0, -3.0), "head.regression_head.bbox_reg": (0.3, 2.0),
             "head.regression_head.bbox_ctrness": 1.0},
    "faster": RCNN,
    "mask": {**RCNN, "roi_heads.mask_predictor.mask_fcn_logits": 2.0},
    "ssd": {f"head.{head}.module_list.{lvl}": std for lvl in range(6)
            for head, std in (("classification_head", 2.0), ("regression_head", 0.3))},
}
INPUT_SIZES = {"ssd": (300, 300)}  # SSD300's fixed input


def input_size(name: str) -> tuple[int, int]:
    return INPUT_SIZES.get(MODELS[name].kind, (H, W))


def torchvision_model(name: str, images: torch.Tensor, seed: int = 0) -> torch.nn.Module:
    """torchvision's ``name`` with random weights: each norm layer's statistics measured on
    ``images`` as it runs (a trained network's activation scale), random affine parameters, and
    the final layers rescaled (in order) to the output std of ``FINAL_LAYERS``."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models.detection, name)(weights=None, weights_backbone=None).eval()
    h, w = images.shape[-2:]
    model.transform.min_size, model.transform.max_size = (min(h, w),), max(h, w)  # no resize
    model.transform.fixed_size = None
    model.transform.image_mean, model.transform.image_std = [0.0] * 3, [1.0] * 3  # input is pre-processed
    norms = (torchvision.ops.FrozenBatchNorm2d, torch.nn.BatchNorm2d)

    measured: set[torch.nn.Module] = set()

    def measure(module, inputs) -> None:
        x = inputs[0].double()
        if x.shape[0] * x.shape[2] * x.shape[3] > 1:  # a head that saw no RoI yet is measured later
            module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
            module.running_var.copy_(x.var(dim=(0, 2, 3)))
            measured.add(module)

    def calibrate_norms() -> None:
        handles = [m.register_forward_pre_hook(measure) for m in model.modules()
                   if isinstance(m, norms) and m not in measured]
        with torch.no_grad():
            model(list(images))
        for h in handles:
            h.remove()

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, norms):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    calibrate_norms()
    layers = dict(model.named_modules())
    kind = MODELS[name].kind
    for layer, target in FINAL_LAYERS[kind].items():
        if layer.startswith("roi_heads.mask"):  # the mask head's norms see RoIs once boxes are detected
            calibrate_norms()
        std, bias = target if isinstance(target, tuple) else (target, 0.0)
        seen = []
        hook = layers[layer].register_forward_hook(lambda mod, inp, out, seen=seen: seen.append(out.std()))
        with torch.no_grad():
            model(list(images))
            hook.remove()
            layers[layer].weight.mul_(std / seen[0])
            layers[layer].bias.fill_(bias)
    return model


def convert(name: str, tmp_path: Path, images: torch.Tensor):
    reference = torchvision_model(name, images)
    weights = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), weights)
    yaml_path, ckpt_path = convert_torchvision(name, weights, tmp_path / "out", log=lambda _: None)
    overrides = []
    if MODELS[name].kind in ("faster", "mask"):  # 100 proposals per image, not 1000 (from 300 per level): faster
        reference.rpn._pre_nms_top_n["testing"], reference.rpn._post_nms_top_n["testing"] = 300, 100
        overrides = ["model.rpn_head.test_proposals.nms_pre=300", "model.rpn_head.test_proposals.max_per_img=100"]
    cfg = load_config(yaml_path, overrides)
    model = builder.build_model(cfg).eval()
    load_model_weights(model, load_checkpoint(ckpt_path), ckpt_path)
    return reference, model, cfg


def raw_output_pairs(name: str, reference, model, images) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, torchvision's, dettool's): the FPN levels, the dense head's outputs per level (rows
    of (location, anchor)), and for R-CNNs the RPN's and the RoI heads' on torchvision's proposals."""
    features = reference.backbone(images)
    feats_ref = list(features.values())
    kind = MODELS[name].kind
    if kind == "ssd":  # six levels of (location, anchor) rows; torchvision's background class first
        out = model(images)
        pairs = [(f"level[{i}]", r, d) for i, (r, d) in
                 enumerate(zip(feats_ref, model.neck(model.backbone(images))))]
        ref = reference.head(feats_ref)
        ref_cls = torch.cat([ref["cls_logits"][..., 1:], ref["cls_logits"][..., :1]], -1)
        cls = torch.cat([levels_to_rows(x, model.bbox_head.num_classes + 1) for x in out[0]], 1)
        reg = torch.cat([levels_to_rows(x, 4) for x in out[1]], 1)
        return pairs + [("cls", ref_cls, cls), ("reg", ref["bbox_regression"], reg)]
    if kind in ("retinanet", "fcos"):
        out = model(images)
        feats = model.neck(model.backbone(images))
        pairs = [(f"fpn[{i}]", r, d) for i, (r, d) in enumerate(zip(feats_ref, feats))]
        ref = reference.head(feats_ref)
        sizes = [f.shape[-2:].numel() for f in feats_ref]
        c = model.bbox_head.num_classes
        rows = {"cls": [levels_to_rows(x, c) for x in out[0]], "reg": [levels_to_rows(x, 4) for x in out[1]]}
        ref_rows = {"cls": ref["cls_logits"], "reg": ref["bbox_regression"]}
        if kind == "fcos":
            rows["ctr"] = [levels_to_rows(x, 1) for x in out[2]]
            ref_rows["ctr"] = ref["bbox_ctrness"]
        for k in rows:
            split = ref_rows[k].split([s * rows[k][0].shape[1] // sizes[0] for s in sizes], dim=1)
            pairs += [(f"{k}[{lvl}]", r, d) for lvl, (r, d) in enumerate(zip(split, rows[k]))]
        return pairs
    feats, rpn = model(images)
    pairs = [(f"fpn[{i}]", r, d) for i, (r, d) in enumerate(zip(feats_ref, feats))]
    objectness, deltas = reference.rpn.head(feats_ref)
    pairs += [(f"rpn_{k}[{lvl}]", r, d) for k, (rs, ds) in (("cls", (objectness, rpn[0])), ("reg", (deltas, rpn[1])))
              for lvl, (r, d) in enumerate(zip(rs, ds))]
    image_list = ImageList(images, [(H, W)] * len(images))
    boxes, _ = reference.rpn(image_list, features)
    rois = torch.cat([torch.cat([b.new_full((len(b), 1), i), b], 1) for i, b in enumerate(boxes)])
    box_feats = reference.roi_heads.box_head(reference.roi_heads.box_roi_pool(features, boxes, image_list.image_sizes))
    ref_cls, ref_reg = reference.roi_heads.box_predictor(box_feats)
    cls, reg = model.roi_head.bbox_forward(feats, rois)
    # dettool's layout: background last, no background boxes
    pairs += [("roi_cls", torch.cat([ref_cls[:, 1:], ref_cls[:, :1]], 1), cls), ("roi_reg", ref_reg[:, 4:], reg)]
    if kind == "mask":  # on 20 RoIs per image (the mask head is the costliest part in float64)
        roi_heads, boxes = reference.roi_heads, [b[:20] for b in boxes]
        ref_masks = roi_heads.mask_predictor(roi_heads.mask_head(roi_heads.mask_roi_pool(features, boxes,
                                                                                          image_list.image_sizes)))
        branch = model.roi_head.mask_branch
        rois = torch.cat([torch.cat([b.new_full((len(b), 1), i), b], 1) for i, b in enumerate(boxes)])
        masks = branch.mask_head(branch.roi_extractor(feats, rois))
        pairs.append(("mask_logits", ref_masks[:, 1:], masks))
    return pairs


def run_model(name: str, tmp_path: Path) -> dict:
    """Convert torchvision's ``name`` and run both on the same input: the raw output pairs
    (float64) and each image's detections, torchvision's and dettool's (float32)."""
    h, w = input_size(name)
    images = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(1))
    reference, model, cfg = convert(name, tmp_path, images)
    with torch.no_grad():
        pairs = raw_output_pairs(name, reference.double(), model.double(), images.double())
    reference.float(), model.float()
    metas = [{"img_shape": (h, w), "ori_shape": (h, w), "scale_factor": (1.0, 1.0)} for _ in range(2)]
    with torch.no_grad():
        ref_dets = reference(list(images))
        dets = model.predict(images, metas)
    return {"pairs": pairs, "ref_dets": ref_dets, "dets": dets, "softmax": MODELS[name].softmax}


def assert_same_outputs(name: str, result: dict) -> dict:
    """Raw outputs within 1e-4; the same detections (and masks: at most 0.1 % of pixels differ).
    Returns counts and the largest differences."""
    from test_mmdet_equivalence import assert_same_detections

    assert result["pairs"]
    worst = 0.0
    for key, r, d in result["pairs"]:
        d, r = d.double(), r.double()  # FCOS's distances leave its head in float32 (as MMDetection's)
        torch.testing.assert_close(d, r, atol=1e-4, rtol=0, msg=lambda m, key=key: f"{name} {key}: {m}")
        worst = max(worst, float((d - r).abs().max()))
    assert sum(len(r["boxes"]) for r in result["ref_dets"]) > 10
    compared, mask_flips = 0, 0.0
    for r, d in zip(result["ref_dets"], result["dets"]):
        labels = r["labels"] - 1 if result["softmax"] else r["labels"]  # dettool's class index
        matched = assert_same_detections(r["boxes"], r["scores"], labels, d)
        compared += len(d)
        if "masks" in r:  # torchvision's probabilities, binarised as dettool's test.mask_thr
            flips = [float(((r["masks"][j, 0] >= 0.5) != d.masks[i]).float().mean()) for i, j in matched]
            assert max(flips) <= 1e-3, f"mask pixels differ: {max(flips):.4f}"
            mask_flips = max(mask_flips, max(flips))
    return {"max_abs_diff": worst, "detections": compared, "mask_pixels_differing": mask_flips}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_raw_outputs_and_detections_equal_torchvision(name: str, tmp_path: Path) -> None:
    assert_same_outputs(name, run_model(name, tmp_path))
