"""Converted MMDetection models equal MMDetection's own code on the same weights.

For each family: MMDetection's model from its shipped config with seeded random weights, saved as
an MMDetection 3.x checkpoint, converted by ``dettool convert mmdet``; on the same pre-processed
input the raw head outputs agree within 1e-4 (both models in float64) and the final detections
(float32) are the same: same labels, boxes within 1e-2 px, scores within 5e-4 (float32 rounding,
amplified by random weights through ResNet-50, moves scores by up to 1e-4).
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

# family: (shipped config, {final layer: the std its outputs are scaled to, or (std, bias)})
RPN_LAYERS = {"rpn_head.rpn_cls": 2.0, "rpn_head.rpn_reg": 0.3}
RCNN_LAYERS = {**RPN_LAYERS, "roi_head.bbox_head.fc_cls": 2.0, "roi_head.bbox_head.fc_reg": 0.3}


def fcos_layers(reg_bias: float) -> dict:
    return {"bbox_head.conv_cls": (1.0, -5.5), "bbox_head.conv_reg": (0.3, reg_bias), "bbox_head.conv_centerness": 1.0}


FAMILIES = {
    "retinanet": ("retinanet/retinanet_r50_fpn_1x_coco.py", {"bbox_head.retina_cls": 2.0, "bbox_head.retina_reg": 0.3}),
    "faster_rcnn": ("faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py", RCNN_LAYERS),
    "faster_rcnn_caffe": ("faster_rcnn/faster-rcnn_r50-caffe_fpn_1x_coco.py", RCNN_LAYERS),
    "faster_rcnn_x101": ("faster_rcnn/faster-rcnn_x101-32x4d_fpn_1x_coco.py", RCNN_LAYERS),
    "faster_rcnn_giou": ("faster_rcnn/faster-rcnn_r50_fpn_giou_1x_coco.py", RCNN_LAYERS),
    "retinanet_r101": ("retinanet/retinanet_r101_fpn_1x_coco.py",
                       {"bbox_head.retina_cls": 2.0, "bbox_head.retina_reg": 0.3}),
    "mask_rcnn": ("mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py", {**RCNN_LAYERS, "roi_head.mask_head.conv_logits": 2.0}),
    "ms_rcnn": ("ms_rcnn/ms-rcnn_r50_fpn_1x_coco.py", {**RCNN_LAYERS, "roi_head.mask_head.conv_logits": 2.0,
                                                       "roi_head.mask_iou_head.fc_mask_iou": (0.3, 0.8)}),
    # heatmap logits of std 2: distinct maxima (at MMDetection's init all pixels sit near p = 0.01)
    "grid_rcnn": ("grid_rcnn/grid-rcnn_r50_fpn_gn-head_2x_coco.py",
                  {**RPN_LAYERS, "roi_head.bbox_head.fc_cls": 2.0, "roi_head.grid_head.deconv2": 2.0}),
    "mask_rcnn_gn": ("gn/mask-rcnn_r50_fpn_gn-all_2x_coco.py", {**RCNN_LAYERS, "roi_head.mask_head.conv_logits": 2.0}),
    "gn_ws": ("gn+ws/faster-rcnn_r50_fpn_gn-ws-all_1x_coco.py", RCNN_LAYERS),  # weight-standardized convs
    "faster_rcnn_scratch": ("scratch/faster-rcnn_r50-scratch_fpn_gn-all_6x_coco.py", RCNN_LAYERS),  # GN-all
    "mask_rcnn_syncbn": ("gcnet/mask-rcnn_r50-syncbn_fpn_1x_coco.py", {**RCNN_LAYERS,
                                                                       "roi_head.mask_head.conv_logits": 2.0}),
    "ghm": ("ghm/retinanet_r50_fpn_ghm-1x_coco.py", {"bbox_head.retina_cls": 2.0, "bbox_head.retina_reg": 0.3}),
    # FSAF's distances pass a ReLU: a positive bias keeps most of them (and the boxes' sides) above 0
    "fsaf": ("fsaf/fsaf_r50_fpn_1x_coco.py", {"bbox_head.retina_cls": 2.0, "bbox_head.retina_reg": (0.1, 0.25)}),
    "libra_retinanet": ("libra_rcnn/libra-retinanet_r50_fpn_1x_coco.py",
                        {"bbox_head.retina_cls": 2.0, "bbox_head.retina_reg": 0.3}),
    # location logits around -3 leave about a fifth of the locations below loc_filter_thr (0.01)
    "ga_retinanet": ("guided_anchoring/ga-retinanet_r50_fpn_1x_coco.py",
                     {"bbox_head.conv_loc": (2.0, -3.0), "bbox_head.conv_shape": 0.3, "bbox_head.retina_cls": 2.0,
                      "bbox_head.retina_reg": 0.3}),
    "double_heads": ("double_heads/dh-faster-rcnn_r50_fpn_1x_coco.py", RCNN_LAYERS),
    "libra_faster_rcnn": ("libra_rcnn/libra-faster-rcnn_r50_fpn_1x_coco.py", RCNN_LAYERS),
    "ga_rpn": ("guided_anchoring/ga-rpn_r50_fpn_1x_coco.py",
               {"bbox_head.conv_loc": (2.0, -3.0), "bbox_head.conv_shape": 0.3, "bbox_head.conv_cls": 2.0,
                "bbox_head.conv_reg": 0.3}),
    "ga_faster_rcnn": ("guided_anchoring/ga-faster-rcnn_r50_fpn_1x_coco.py",
                       {"rpn_head.conv_loc": (2.0, -3.0), "rpn_head.conv_shape": 0.3, "rpn_head.conv_cls": 2.0,
                        "rpn_head.conv_reg": 0.3, "roi_head.bbox_head.fc_cls": 2.0, "roi_head.bbox_head.fc_reg": 0.3}),
    "dcn": ("dcn/faster-rcnn_r50-dconv-c3-c5_fpn_1x_coco.py", RCNN_LAYERS),
    "dcnv2": ("dcnv2/faster-rcnn_r50-mdconv-group4-c3-c5_fpn_1x_coco.py", RCNN_LAYERS),
    # stage plugins: global context blocks after conv3 of res3-res5, generalized attention after conv2 of res4-res5
    "gcnet": ("gcnet/mask-rcnn_r50-gcb-r16-c3-c5_fpn_1x_coco.py", {**RCNN_LAYERS,
                                                                   "roi_head.mask_head.conv_logits": 2.0}),
    "attention_1111": ("empirical_attention/faster-rcnn_r50-attn1111_fpn_1x_coco.py", RCNN_LAYERS),
    # FCOS regresses exp(x) pixels, or relu(x) strides with norm_on_bbox: biases give boxes of 20 px / 2 strides;
    # class logits around -5.5 leave fewer pairs above score_thr than nms_pre (no tie at a top-k cut)
    "fcos": ("fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py", fcos_layers(3.0)),
    "fcos_improved": ("fcos/fcos_r50-caffe_fpn_gn-head-center-normbbox-centeronreg-giou_1x_coco.py", fcos_layers(2.0)),
    "rpn": ("rpn/rpn_r50_fpn_1x_coco.py", {"bbox_head.rpn_cls": 2.0, "bbox_head.rpn_reg": 0.3}),
    "fast_rcnn": ("fast_rcnn/fast-rcnn_r50_fpn_1x_coco.py", {"roi_head.bbox_head.fc_cls": 2.0,
                                                             "roi_head.bbox_head.fc_reg": 0.3}),
    "cascade_rcnn": ("cascade_rcnn/cascade-rcnn_r50_fpn_1x_coco.py",
                     {**RPN_LAYERS, **{f"roi_head.bbox_head.{i}.fc_{k}": v for i in range(3)
                                       for k, v in (("cls", 2.0), ("reg", 0.3))}}),
    # Hybrid Task Cascade with and without its semantic branch (183 COCO-stuff classes)
    "htc": ("htc/htc_r50_fpn_1x_coco.py", {**RPN_LAYERS, **{f"roi_head.bbox_head.{i}.fc_{k}": v for i in range(3)
                                                            for k, v in (("cls", 2.0), ("reg", 0.3))},
                                           **{f"roi_head.mask_head.{i}.conv_logits": 2.0 for i in range(3)}}),
    "htc_without_semantic": ("htc/htc-without-semantic_r50_fpn_1x_coco.py",
                             {**RPN_LAYERS, **{f"roi_head.bbox_head.{i}.fc_{k}": v for i in range(3)
                                               for k, v in (("cls", 2.0), ("reg", 0.3))},
                              **{f"roi_head.mask_head.{i}.conv_logits": 2.0 for i in range(3)}}),
    "cascade_mask_rcnn": ("cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py",
                          {**RPN_LAYERS, **{f"roi_head.bbox_head.{i}.fc_{k}": v for i in range(3)
                                            for k, v in (("cls", 2.0), ("reg", 0.3))},
                           **{f"roi_head.mask_head.{i}.conv_logits": 2.0 for i in range(3)}}),
    "hrnet_w18": ("hrnet/faster-rcnn_hrnetv2p-w18-1x_coco.py", RCNN_LAYERS),  # HRNetV2p-W18 + HRFPN
}

def ssd_layers(num_levels: int) -> dict:
    return {f"bbox_head.{k}_convs.{lvl}.0": v for lvl in range(num_levels) for k, v in (("cls", 2.0), ("reg", 0.3))}


FAMILIES.update({"ssd300": ("ssd/ssd300_coco.py", ssd_layers(6)), "ssd512": ("ssd/ssd512_coco.py", ssd_layers(7))})
H, W = 256, 320
INPUT_SIZES = {"ssd300": (300, 300), "ssd512": (512, 512)}  # SSD's extra levels need its own input size
SCORE_TOL = 5e-4


def mmdet_configs() -> Path:
    return Path(importlib.util.find_spec("mmdet").origin).parent / ".mim" / "configs"


def mmdet_model(config: Path, final_layers: dict[str, float], seed: int = 0,
                calibration: torch.Tensor | None = None) -> torch.nn.Module:
    """MMDetection's model with random weights, BN statistics measured on a calibration image
    (activations of a trained network's scale) and each final layer rescaled so that its outputs
    have the given std (spread-out scores, boxes of sensible size)."""
    from mmdet_reference import import_mmdet, without_ssd_predict_bug

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
    randomize_plugin_constants(model)
    without_ssd_predict_bug(model).eval()
    fast_rcnn = is_fast_rcnn(model)
    if calibration is None:  # a pre-processed image [1, 3, h, w]; by default random values
        calibration = torch.randn(1, 3, H, W, generator=torch.Generator().manual_seed(seed))
    h, w = calibration.shape[-2:]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]  # SyncBN too
    with torch.no_grad():
        for bn in norms:  # random affine; statistics of the calibration image, as a trained net's
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0.0, 0.1)
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        model._forward(calibration, data_samples(1, h, w, with_proposals=fast_rcnn))
    model.eval()
    layers = dict(model.named_modules())
    for name in final_layers:  # in order: each one calibrated on the outputs of those before it
        stds: list[float] = []

        def record(module, inputs, output, stds=stds) -> None:  # returns None: the output is kept
            stds.append(float(output.std()))

        hook = layers[name].register_forward_hook(record)
        with torch.no_grad():
            model._forward(calibration, data_samples(1, h, w, with_proposals=fast_rcnn))
            hook.remove()
            std, bias = final_layers[name] if isinstance(final_layers[name], tuple) else (final_layers[name], 0.0)
            layers[name].weight.mul_(std / stds[0])
            layers[name].bias.fill_(bias)
    return model


def randomize_plugin_constants(model: torch.nn.Module) -> None:
    """Random values for the backbone plugins' parameters MMDetection's init leaves constant:
    generalized attention's ``gamma`` (0, which would leave the block out) and the context
    block's LayerNorm affine (1 and 0)."""
    from mmcv.cnn.bricks.generalized_attention import GeneralizedAttention

    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, GeneralizedAttention):
                m.gamma.uniform_(0.5, 1.5, generator=g)
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0.0, 0.1, generator=g)


def is_fast_rcnn(mmdet_model) -> bool:
    """A two-stage MMDetection model without an RPN (it reads proposals from its data samples)."""
    return getattr(mmdet_model, "with_rpn", True) is False


def proposals(n: int, k: int = 100, h: int = H, w: int = W) -> list[torch.Tensor]:
    """Fixed random proposals (Fast R-CNN's input), ``k`` per image."""
    g = torch.Generator().manual_seed(5)
    out = []
    for _ in range(n):
        xy = torch.rand(k, 2, generator=g) * torch.tensor([w * 0.8, h * 0.8])
        wh = 8 + torch.rand(k, 2, generator=g) * torch.tensor([w * 0.5, h * 0.5])
        out.append(torch.cat([xy, (xy + wh).minimum(torch.tensor([w - 1.0, h - 1.0]))], dim=1))
    return out


def data_samples(n: int, h: int = H, w: int = W, with_proposals: bool = False) -> list:
    """MMDetection's per-image metadata for an unresized, unpadded input (with Fast R-CNN's
    proposals: MMDetection's two-stage detectors use given proposals instead of their RPN's)."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    meta = {"img_shape": (h, w), "ori_shape": (h, w), "scale_factor": (1.0, 1.0), "pad_shape": (h, w),
            "batch_input_shape": (h, w)}
    samples = [DetDataSample(metainfo=meta) for _ in range(n)]
    for sample, boxes in zip(samples, proposals(n, h=h, w=w) if with_proposals else []):
        sample.proposals = InstanceData(bboxes=boxes)
    return samples


def shipped_or_capped(family: str, tmp_path: Path) -> Path:
    """The family's shipped config, or for models with an RPN a child of it (read through its
    ``_base_``) that keeps 100 proposals per image instead of 1000, to keep the test fast."""
    config = mmdet_configs() / FAMILIES[family][0]
    if not any(k.startswith(("rpn_head", "bbox_head.rpn")) for k in FAMILIES[family][1]):
        return config
    child = tmp_path / f"{config.stem}_100_proposals.py"
    child.write_text(f"_base_ = {str(config)!r}\n"
                     "model = dict(test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=100)))\n")
    return child


def convert(family: str, tmp_path: Path):
    config = shipped_or_capped(family, tmp_path)
    h, w = INPUT_SIZES.get(family, (H, W))
    reference = mmdet_model(config, FAMILIES[family][1],
                            calibration=torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0)))
    ckpt = tmp_path / "mmdet.pth"
    torch.save({"meta": {"dataset_meta": {"classes": tuple(f"c{i}" for i in range(80))}},
                "state_dict": reference.state_dict()}, ckpt)
    yaml_path, ckpt_path = convert_mmdet(config, ckpt, tmp_path / "out", log=lambda _: None)
    cfg = load_config(yaml_path)
    model = builder.build_model(cfg).eval()
    load_model_weights(model, load_checkpoint(ckpt_path), ckpt_path)
    return reference, model, cfg


def run_family(family: str, tmp_path: Path) -> dict:
    """Convert the family's MMDetection model and run both on the same input: the raw output
    pairs (float64) and each image's detections, MMDetection's and dettool's (float32)."""
    reference, model, cfg = convert(family, tmp_path)
    h, w = INPUT_SIZES.get(family, (H, W))
    images = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(1))
    # In float64: a difference is the implementations', not float32 rounding amplified by random weights.
    with torch.no_grad():
        pairs = raw_output_pairs(reference.double(), model.double(), images.double())
    reference.float(), model.float()  # MMDetection's mask pasting runs in float32 only
    metas = [{"img_shape": (h, w), "ori_shape": (h, w), "scale_factor": (1.0, 1.0), "proposals": p}
             for p in proposals(2, h=h, w=w)]
    with torch.no_grad():
        samples = data_samples(2, h, w, with_proposals=is_fast_rcnn(reference))
        heads = (getattr(reference, "bbox_head", None), getattr(reference, "rpn_head", None))
        if any(is_guided_anchoring(h) for h in heads):  # MMDetection's MaskedConv2d takes one image at a time
            ref_dets = [s.pred_instances for i in range(len(images))
                        for s in reference.predict(images[i:i + 1], samples[i:i + 1], rescale=True)]
        else:
            ref_dets = [s.pred_instances for s in reference.predict(images, samples, rescale=True)]
        if hasattr(getattr(reference, "roi_head", None), "grid_head"):
            # MMDetection's GridHead clamps a copy of its boxes (a no-op); dettool clips them
            for d in ref_dets:
                d.bboxes = torch.stack([d.bboxes[:, 0].clamp(0, w), d.bboxes[:, 1].clamp(0, h),
                                        d.bboxes[:, 2].clamp(0, w), d.bboxes[:, 3].clamp(0, h)], dim=1)
    return {"pairs": pairs, "ref_dets": ref_dets, "dets": model.predict(images, metas)}


def assert_same_outputs(family: str, result: dict) -> None:
    """Raw outputs within 1e-4; the same detections (and masks: at most 0.1 % of pixels differ)."""
    assert result["pairs"]
    for name, r, d in result["pairs"]:
        torch.testing.assert_close(d, r, atol=1e-4, rtol=0, msg=lambda m, name=name: f"{family} {name}: {m}")
    assert sum(len(r) for r in result["ref_dets"]) > 10
    for r, d in zip(result["ref_dets"], result["dets"]):
        matched = assert_same_detections(r.bboxes, r.scores, r.labels, d)
        if "masks" in r:
            flips = [float((r.masks[j] != d.masks[i]).float().mean()) for i, j in matched]
            assert max(flips) <= 1e-3, f"mask pixels differ: {max(flips):.4f}"


SLOW_FAMILIES = {"ssd512", "htc_without_semantic"}  # minutes on 2 cores (-m slow runs them); htc covers its parts
SLOW_FAMILIES.add("hrnet_w18")  # about 2 CPU-minutes; test_hrnet.py / test_hrfpn.py compare its parts by default
# R-50 with GroupNorm / SyncBN from their own configs: what is new there is the translation, which
# tests/interop/test_mmdet_config.py checks by default; the whole models take 1.5-2 minutes each
SLOW_FAMILIES.update({"faster_rcnn_scratch", "mask_rcnn_syncbn"})


@pytest.mark.parametrize("family", [pytest.param(f, marks=pytest.mark.slow) if f in SLOW_FAMILIES else f
                                    for f in sorted(FAMILIES)])
def test_raw_outputs_and_detections_equal_mmdetection(family: str, tmp_path: Path) -> None:
    assert_same_outputs(family, run_family(family, tmp_path))


def raw_output_pairs(reference, model, images) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, MMDetection's, dettool's) raw outputs: every head level, and for two-stage models
    the FPN levels, the RPN's and the RoI head's on the same RoIs (MMDetection's proposals, or
    Fast R-CNN's given ones)."""
    if not hasattr(reference, "roi_head"):
        ref, out = dense_forward(reference.bbox_head, reference.extract_feat(images)), model(images)
        head = model.bbox_head
        if getattr(head, "norm_on_bbox", False):  # dettool's distances are in strides; MMDetection's (eval) pixels
            out = (out[0], [r * s for r, s in zip(out[1], head.strides)], *out[2:])
        names = ("cls", "reg", "shape", "loc") if is_guided_anchoring(reference.bbox_head) else ("cls", "reg",
                                                                                                 "centerness")
        return [(f"{k}[{lvl}]", r, d) for k, (rs, ds) in zip(names, zip(ref, out))
                for lvl, (r, d) in enumerate(zip(rs, ds))]
    from mmdet.structures.bbox import bbox2roi

    feats_ref = reference.extract_feat(images)
    feats, rpn = model(images)
    pairs = [(f"fpn[{i}]", r, d) for i, (r, d) in enumerate(zip(feats_ref, feats))]
    if reference.with_rpn:
        ref_rpn = dense_forward(reference.rpn_head, feats_ref)
        pairs += [(f"rpn_{k}[{lvl}]", r, d) for k, (rs, ds) in zip(("cls", "reg"), zip(ref_rpn, rpn))
                  for lvl, (r, d) in enumerate(zip(rs, ds))]
        # one image at a time: a guided-anchor RPN's masked convs take one (the others are batch-independent)
        boxes = [p.bboxes for i in range(len(images))
                 for p in reference.rpn_head.predict([f[i:i + 1] for f in feats_ref], data_samples(1), rescale=False)]
    else:
        boxes = proposals(len(images))
    rois = bbox2roi(boxes)
    if hasattr(reference.roi_head, "semantic_head"):  # HTC: semantic branch, box stage 0 and the mask flow
        return pairs + htc_pairs(reference.roi_head, model.roi_head, feats_ref, feats, rois)
    if hasattr(model.roi_head, "bbox_heads"):  # cascade: the first stage's head
        ref_roi = reference.roi_head._bbox_forward(0, feats_ref, rois)
        cls, reg = model.roi_head.bbox_heads[0](model.roi_head.roi_extractor(feats, rois))
    else:
        ref_roi = reference.roi_head._bbox_forward(feats_ref, rois)
        cls, reg = model.roi_head.bbox_forward(feats, rois)
    pairs.append(("roi_cls", ref_roi["cls_score"], cls))
    if reg is not None or ref_roi["bbox_pred"] is not None:
        pairs.append(("roi_reg", ref_roi["bbox_pred"], reg))
    if hasattr(reference.roi_head, "grid_head"):  # Grid R-CNN's heatmaps of 20 RoIs (its convs are wide)
        head = reference.roi_head
        ref_grid = head.grid_head(head.grid_roi_extractor(feats_ref[:head.grid_roi_extractor.num_inputs],
                                                          rois[:20]))["fused"]
        pairs.append(("grid", ref_grid, model.roi_head.grid_forward(feats, rois[:20])))
    return pairs


def htc_pairs(ref, head, feats_ref, feats, rois) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Hybrid Task Cascade's raw outputs: the semantic logits and embedding, the first box stage
    on RoI features with the embedding's, and the last stage's mask logits after the information
    flow through every stage (20 RoIs)."""
    pairs, sem_ref, sem = [], None, None
    if ref.with_semantic:
        seg_ref, sem_ref = ref.semantic_head(feats_ref)
        seg, sem = head.semantic_head(feats)
        pairs += [("semantic_logits", seg_ref, seg), ("semantic_embedding", sem_ref, sem)]
    box_ref = ref._bbox_forward(0, feats_ref, rois, semantic_feat=sem_ref)
    cls, reg = head.bbox_heads[0](head.box_features(feats, rois, sem))
    masks_ref = ref._mask_forward(-1, feats_ref, rois[:20], semantic_feat=sem_ref, training=False)["mask_preds"][0]
    masks = head.mask_logits(head.num_stages - 1, feats, rois[:20], sem)
    return pairs + [("roi_cls", box_ref["cls_score"], cls), ("roi_reg", box_ref["bbox_pred"], reg),
                    ("mask_logits", masks_ref, masks)]


def is_guided_anchoring(head) -> bool:
    """A guided-anchor head (GA-RetinaNet, GA-RPN): its test-time MaskedConv2d convs run only where
    the location score passes ``loc_filter_thr``, one image at a time."""
    return hasattr(head, "loc_filter_thr")


def dense_forward(head, feats):
    """MMDetection's raw head outputs at every location. A guided-anchor head in eval mode leaves
    its cls / reg outputs 0 where the location score is below ``loc_filter_thr`` (dettool's are
    dense; its decode zeroes those locations' scores); in training mode, which changes nothing
    else in that head, it computes them everywhere."""
    if not is_guided_anchoring(head):
        return head(feats)
    head.train()
    try:
        return head(feats)
    finally:
        head.eval()


def assert_same_detections(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                           dets) -> list[tuple[int, int]]:
    """One-to-one: each detection has a reference one of its label with the box within 1e-2 px and
    the score within ``SCORE_TOL`` (detections of tied scores may come in either order)."""
    assert len(dets) == len(boxes)
    torch.testing.assert_close(dets.scores, scores, atol=SCORE_TOL, rtol=0)  # both sorted by score
    close = ((dets.labels[:, None] == labels[None, :]) & ((dets.scores[:, None] - scores[None, :]).abs() <= SCORE_TOL)
             & ((dets.boxes[:, None, :] - boxes[None, :, :]).abs().amax(dim=2) <= 1e-2))
    unused, matched = set(range(len(boxes))), []
    for i, row in enumerate(close.tolist()):
        match = [j for j, ok in enumerate(row) if ok and j in unused]
        assert match, (f"no MMDetection detection matches {dets.boxes[i].tolist()} {float(dets.scores[i]):.5f} "
                       f"label {int(dets.labels[i])}")
        unused.remove(match[0])
        matched.append((i, match[0]))
    return matched
