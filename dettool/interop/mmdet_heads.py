"""MMDetection dense heads (RetinaNet, FCOS, FSAF, SSD, GA-RetinaNet, RPN, GA-RPN) and RoI heads
(standard, Double-Head, Cascade, Mask Scoring, Grid, Hybrid Task Cascade) -> dettool's, with their test settings."""
from __future__ import annotations

import re
from typing import Any, Callable

from dettool.interop.mmdet_features import conv_kind, conv_norm
from dettool.interop.mmdet_section import Section, Translation, table_entry
from dettool.interop.mmdet_task_modules import (
    anchor_generator,
    anchor_head,
    assigner,
    delta_coder,
    head_losses,
    nms,
    proposals,
    sampler,
    tblr_coder,
    train_settings,
)

# -------------------------------------------------------------------------------------- dense heads

def _retina_towers(t: Translation, s: Section, kind: str) -> dict:
    """``model.bbox_head`` of type ``kind`` for a head with RetinaHead's plain conv towers (no
    norm): class count, tower width and depth."""
    h = t.config["model"]["bbox_head"] = {"type": kind}
    t.config["model"]["num_classes"] = s.get("num_classes")
    s.get("in_channels")
    h["feat_channels"] = s.get("feat_channels", 256)
    h["stacked_convs"] = s.get("stacked_convs", 4)
    s.expect("conv_cfg", (None,), None)
    s.expect("norm_cfg", (None,), None)
    return h


def _retina_head(t: Translation, s: Section, train: Section | None) -> None:
    h = _retina_towers(t, s, "retina")
    anchor_head(t, s, h)
    s.done()
    t.rules += _tower_rules("bbox_head", with_norm=False)
    train_settings(t, train, h, anchors=True)


def _fcos_head(t: Translation, s: Section, train: Section | None) -> None:
    h = t.config["model"]["bbox_head"] = {"type": "fcos"}
    t.config["model"]["num_classes"] = s.get("num_classes")
    s.get("in_channels")
    h["feat_channels"] = s.get("feat_channels", 256)
    h["stacked_convs"] = s.get("stacked_convs", 4)
    h["strides"] = list(s.get("strides", (4, 8, 16, 32, 64)))
    ranges = s.get("regress_ranges", ((-1, 64), (64, 128), (128, 256), (256, 512), (512, 1e8)))
    h["regress_ranges"] = [[float(lo), float(hi)] for lo, hi in ranges]
    for key, default in (("center_sampling", False), ("center_sample_radius", 1.5), ("norm_on_bbox", False),
                         ("centerness_on_reg", False)):
        h[key] = s.get(key, default)
    s.expect("dcn_on_last_conv", (False,), False)
    s.expect("conv_cfg", (None,), None)
    bias = s.expect("conv_bias", ("auto", True, False), "auto")
    h["conv_bias"] = None if bias == "auto" else bias
    h["norm"] = conv_norm(s, {"type": "GN", "num_groups": 32}, ("GN", "BN"))
    head_losses(t, s, h, ("loss_cls", "loss_bbox", "loss_centerness"))
    s.done()
    t.rules += _tower_rules("bbox_head", h["norm"] != "none")
    if train is not None:
        train.expect("assigner", (None,), None)
        train.done(ignore=("allowed_border", "pos_weight", "debug"))


def _tower_rules(prefix: str, with_norm: bool) -> list:
    """MMDetection's ConvModule towers (``cls_convs.i.conv`` / ``.gn``) as dettool's flat
    Sequential (conv, [norm,] ReLU per layer)."""
    step = 3 if with_norm else 2
    p = re.escape(prefix)
    return [(rf"^{p}\.(cls|reg)_convs\.(\d+)\.conv\.", lambda m: f"{prefix}.{m[1]}_convs.{step * int(m[2])}."),
            (rf"^{p}\.(cls|reg)_convs\.(\d+)\.(gn|bn)\.",
             lambda m: f"{prefix}.{m[1]}_convs.{step * int(m[2]) + 1}.")]


def _fsaf_head(t: Translation, s: Section, train: Section | None) -> None:
    """FSAFHead: RetinaHead's layers (same weight names), TBLR coder, centre-region assigner."""
    h = _retina_towers(t, s, "fsaf")
    s.expect("reg_decoded_bbox", (True,), False)
    h["anchor"] = anchor_generator(t, s.sub("anchor_generator"))
    h["bbox_coder"] = tblr_coder(t, s.sub("bbox_coder"))
    head_losses(t, s, h, ("loss_cls", "loss_bbox"))
    if s.get("score_threshold", None) is not None:  # only the logged pos_recall's threshold
        t.dropped.append(f"{s.where}.score_threshold")
    s.done()
    t.rules += _tower_rules("bbox_head", with_norm=False)
    if train is not None:
        h["assigner"] = assigner(t, train.sub("assigner"))
        if sampler(t, train.sub("sampler", {"type": "PseudoSampler"}))["type"] != "pseudo":
            raise t.fail("model.train_cfg.sampler", "FSAF trains every location: only PseudoSampler is implemented")
        h["allowed_border"] = train.get("allowed_border", -1)
        train.expect("pos_weight", (-1,), -1)
        train.done(ignore=("debug",))


def _ssd_anchor(t: Translation, s: Section) -> dict:
    s.expect("type", ("SSDAnchorGenerator",))
    s.expect("scale_major", (False,))  # every shipped SSD config; dettool implements this order
    out = {"type": "ssd", "strides": list(s.get("strides")), "ratios": [list(r) for r in s.get("ratios")],
           "input_size": s.get("input_size", 300), "basesize_ratio_range": list(s.get("basesize_ratio_range"))}
    if s.get("min_sizes", None) is not None:
        out.update(min_sizes=list(s.get("min_sizes")), max_sizes=list(s.get("max_sizes")))
    s.expect("use_box_type", (False,), False)
    s.done()
    return out


def _ssd_head(t: Translation, s: Section, train: Section | None) -> None:
    """SSDHead: per-level convs (same weight names), softmax classes, hard negative mining."""
    h = t.config["model"]["bbox_head"] = {"type": "ssd"}
    t.config["model"]["num_classes"] = s.get("num_classes")
    s.get("in_channels")  # the neck's out_channels: dettool takes the neck's
    s.expect("stacked_convs", (0,), 0)
    s.get("feat_channels", 256)  # used by stacked convs only
    s.expect("use_depthwise", (False,), False)
    for key in ("conv_cfg", "norm_cfg", "act_cfg"):
        s.expect(key, (None,), None)
    s.expect("reg_decoded_bbox", (False,), False)
    h["anchor"] = _ssd_anchor(t, s.sub("anchor_generator"))
    h["bbox_coder"] = delta_coder(t, s.sub("bbox_coder", {"type": "DeltaXYWHBBoxCoder"}))
    s.done()
    if train is not None:
        h["assigner"] = assigner(t, train.sub("assigner"))
        if sampler(t, train.sub("sampler", {"type": "PseudoSampler"}))["type"] != "pseudo":
            raise t.fail("model.train_cfg.sampler", "SSD mines its negatives: only PseudoSampler is implemented")
        h["allowed_border"] = train.get("allowed_border", -1)
        h["neg_pos_ratio"] = train.get("neg_pos_ratio")
        h["loss_bbox"] = {"type": "smooth_l1", "beta": train.get("smoothl1_beta")}
        train.expect("pos_weight", (-1,), -1)
        train.done(ignore=("debug",))


def _guided_anchors(t: Translation, s: Section, train: Section | None, h: dict) -> None:
    """What GARetinaHead and GARPNHead share: offset groups, approximating and square anchors, the
    anchor and box coders, ``loc_filter_thr``, the four losses and the ga train settings."""
    h["deform_groups"] = s.get("deform_groups", 4)
    s.expect("reg_decoded_bbox", (False,), False)
    h["approx_anchor"] = anchor_generator(t, s.sub("approx_anchor_generator"))
    h["square_anchor"] = anchor_generator(t, s.sub("square_anchor_generator"))
    for key in ("anchor_coder", "bbox_coder"):
        h[key] = delta_coder(t, s.sub(key, {"type": "DeltaXYWHBBoxCoder"}))
    h["loc_filter_thr"] = s.get("loc_filter_thr", 0.01)
    head_losses(t, s, h, ("loss_loc", "loss_shape", "loss_cls", "loss_bbox"))
    s.done()
    if train is not None:
        h["ga_assigner"] = assigner(t, train.sub("ga_assigner"))
        h["ga_sampler"] = sampler(t, train.sub("ga_sampler", {"type": "PseudoSampler"}))
        h["center_ratio"] = train.get("center_ratio", 0.2)
        h["ignore_ratio"] = train.get("ignore_ratio", 0.5)


def _ga_retina_head(t: Translation, s: Section, train: Section | None) -> None:
    """GARetinaHead: RetinaHead's towers, location / shape branches, feature adaption (its
    deformable conv's weight is dettool's ``feature_adaption_*.weight``), the ga train settings."""
    h = _retina_towers(t, s, "ga_retina")
    _guided_anchors(t, s, train, h)
    t.rules += [*_tower_rules("bbox_head", with_norm=False),
                (r"^bbox_head\.feature_adaption_(cls|reg)\.conv_adaption\.weight$",
                 r"bbox_head.feature_adaption_\1.weight")]
    train_settings(t, train, h, anchors=True)


DENSE_HEADS: dict[str, Callable[[Translation, Section, Section | None], None]] = {
    "SSDHead": _ssd_head, "GARetinaHead": _ga_retina_head,
    "RetinaHead": _retina_head, "FCOSHead": _fcos_head, "FSAFHead": _fsaf_head}


def _ga_rpn_head(t: Translation, s: Section, train: Section | None) -> dict:
    """GARPNHead: ``rpn_conv``, location / shape branches, feature adaption (its deformable conv's
    weight is dettool's ``feature_adaption.weight``), 1x1 objectness and box convs; the ga train settings."""
    h = {"type": "ga_rpn"}
    s.expect("num_classes", (1,), 1)
    s.get("in_channels")
    h["feat_channels"] = s.get("feat_channels", 256)
    _guided_anchors(t, s, train, h)
    # an RPN alone is MMDetection's (and dettool's) ``bbox_head``
    t.rules += [(r"^(rpn_head|bbox_head)\.feature_adaption\.conv_adaption\.weight$", r"\1.feature_adaption.weight")]
    return h


def rpn_head(t: Translation, s: Section, train: Section | None, train_proposals: Section | None,
             test_proposals: Section) -> None:
    """``RPNHead`` or ``GARPNHead`` with its train settings and train / test proposal settings
    into ``model.rpn_head``."""
    kind = s.expect("type", ("RPNHead", "GARPNHead"))
    if kind == "GARPNHead":
        h = t.config["model"]["rpn_head"] = _ga_rpn_head(t, s, train)
    else:
        h = t.config["model"]["rpn_head"] = {}
        s.expect("num_convs", (1,), 1)
        s.expect("num_classes", (1,), 1)
        anchor_head(t, s, h)
        s.done()
    train_settings(t, train, h, anchors=True)
    if train_proposals is not None:
        h["train_proposals"] = proposals(t, train_proposals)
    h["test_proposals"] = proposals(t, test_proposals)


def _roi_extractor(t: Translation, s: Section) -> dict:
    s.expect("type", ("SingleRoIExtractor",))
    layer = s.sub("roi_layer")
    layer.expect("type", ("RoIAlign",))
    out = {"output_size": layer.get("output_size"), "sampling_ratio": layer.get("sampling_ratio", 0),
           "strides": list(s.get("featmap_strides")), "finest_scale": s.get("finest_scale", 56),
           "aligned": layer.expect("aligned", (True, False), True)}
    layer.expect("pool_mode", ("avg",), "avg")
    layer.expect("use_torchvision", (False,), False)
    layer.done()
    s.get("out_channels")
    s.expect("gc_context", (False,), False)
    s.done()
    return out


# MMDetection's named ConvFC box heads: (shared convs, shared fcs)
_CONV_FC = {"Shared2FCBBoxHead": (0, 2), "Shared4Conv1FCBBoxHead": (4, 1), "ConvFCBBoxHead": None}


# MMDetection's BBoxHead defaults (Grid R-CNN's config states neither)
_BBOX_HEAD_LOSSES = {"loss_cls": {"type": "CrossEntropyLoss", "use_sigmoid": False, "loss_weight": 1.0},
                     "loss_bbox": {"type": "SmoothL1Loss", "beta": 1.0, "loss_weight": 1.0}}


def _bbox_head(t: Translation, s: Section, prefix: str, prefix_to: str) -> dict:
    """A ConvFC box head; its weights under ``prefix`` (MMDetection) go to ``prefix_to`` (dettool)."""
    shape = table_entry(t, {k: (lambda v=v: v) for k, v in _CONV_FC.items()}, s, "RoI box head")()
    convs, fcs = shape if shape else (s.get("num_shared_convs", 0), s.get("num_shared_fcs", 0))
    for key in ("num_cls_convs", "num_cls_fcs", "num_reg_convs", "num_reg_fcs"):
        s.expect(key, (0,), 0)
    h = {"num_shared_convs": convs, "num_shared_fcs": fcs, "conv_out_channels": s.get("conv_out_channels", 256),
         "fc_out_channels": s.get("fc_out_channels", 1024), "norm": conv_norm(s, None, ("GN",)),
         "reg_class_agnostic": s.get("reg_class_agnostic", False), "with_reg": s.get("with_reg", True)}
    conv = conv_kind(s)  # reaches the shared convs only: a head without them has plain fcs whatever it says
    h["conv"] = conv if convs else "conv"
    s.expect("with_cls", (True,), True)
    t.config["model"]["num_classes"] = s.get("num_classes")
    s.get("in_channels")
    s.get("roi_feat_size", 7)
    s.expect("with_avg_pool", (False,), False)
    decoded = s.get("reg_decoded_bbox", False)
    s.expect("predict_box_type", ("hbox",), "hbox")
    coder = delta_coder(t, s.sub("bbox_coder", {"type": "DeltaXYWHBBoxCoder"}))
    if any(m != 0.0 for m in coder["target_means"]):
        raise t.fail(f"{s.where}.bbox_coder.target_means", "non-zero means are not implemented by dettool")
    h["target_stds"] = coder["target_stds"]
    head_losses(t, s, h, ("loss_cls", "loss_bbox"), _BBOX_HEAD_LOSSES)
    # dettool's box heads regress decoded boxes exactly when the loss compares boxes (IoU losses)
    loss_bbox = h.get("loss_bbox", {}).get("type", "smooth_l1")
    if bool(decoded) != (loss_bbox in ("giou", "iou")):
        raise t.fail(f"{s.where}.reg_decoded_bbox", f"{decoded!r} with {s.sub('loss_bbox').type} is not implemented "
                                                    "by dettool (decoded boxes go with its IoU and GIoU losses)")
    s.done()
    step = 3 if h["norm"] == "gn" else 2
    p = re.escape(prefix)
    t.rules += [(rf"^{p}\.shared_fcs\.(\d+)\.", lambda m: f"{prefix_to}.shared_fcs.{2 * int(m[1])}."),
                (rf"^{p}\.shared_convs\.(\d+)\.conv\.", lambda m: f"{prefix_to}.shared_convs.{step * int(m[1])}."),
                (rf"^{p}\.shared_convs\.(\d+)\.gn\.", lambda m: f"{prefix_to}.shared_convs.{step * int(m[1]) + 1}."),
                (rf"^{p}\.(fc_cls|fc_reg)\.", rf"{prefix_to}.\1.")]
    return h


def _mask_head(t: Translation, s: Section, extractor: Section, prefix: str, prefix_to: str,
               htc: bool = False) -> dict:
    """An FCN mask head (``htc``: an HTCMaskHead, whose ``with_conv_res`` is returned under that
    key); its weights under ``prefix`` (MMDetection) go to ``prefix_to`` (dettool)."""
    s.expect("type", ("HTCMaskHead",) if htc else ("FCNMaskHead",))
    extra = {"with_conv_res": s.get("with_conv_res", True)} if htc else {}
    h = {"num_convs": s.get("num_convs", 4), "conv_out_channels": s.get("conv_out_channels", 256),
         "class_agnostic": s.get("class_agnostic", False), "roi_extractor": _roi_extractor(t, extractor)}
    s.get("in_channels")
    s.get("num_classes")
    s.expect("roi_feat_size", (14,), 14)
    s.expect("conv_kernel_size", (3,), 3)
    s.expect("upsample_cfg", ({"type": "deconv", "scale_factor": 2},), {"type": "deconv", "scale_factor": 2})
    s.expect("conv_cfg", (None,), None)
    h["norm"] = conv_norm(s, None, ("GN",))
    s.expect("predictor_cfg", ({"type": "Conv"},), {"type": "Conv"})
    loss = s.sub("loss_mask", {"type": "CrossEntropyLoss", "use_mask": True, "loss_weight": 1.0})
    loss.expect("type", ("CrossEntropyLoss",))
    loss.expect("use_mask", (True,), True)
    h["loss_weight"] = loss.get("loss_weight", 1.0)
    loss.done()
    s.done()
    p, step = re.escape(prefix), 3 if h["norm"] == "gn" else 2
    t.rules += [(rf"^{p}\.convs\.(\d+)\.conv\.", lambda m: f"{prefix_to}.convs.{step * int(m[1])}."),
                (rf"^{p}\.convs\.(\d+)\.gn\.", lambda m: f"{prefix_to}.convs.{step * int(m[1]) + 1}."),
                (rf"^{p}\.(upsample|conv_logits|conv_res)\.", rf"{prefix_to}.\1.")]
    return {**h, **extra}


def _standard_roi_head(t: Translation, s: Section, train: Section | None) -> None:
    """StandardRoIHead (Fast / Faster / Mask R-CNN); ``train``: the model's train_cfg."""
    _standard_parts(t, s, train, "standard")


def _standard_parts(t: Translation, s: Section, train: Section | None, kind: str) -> dict:
    r = t.config["model"]["roi_head"] = {"type": kind}
    r["roi_extractor"] = _roi_extractor(t, s.sub("bbox_roi_extractor"))
    r["bbox_head"] = _bbox_head(t, s.sub("bbox_head"), "roi_head.bbox_head", "roi_head.bbox_head")
    if s.get("mask_head", None) is not None:
        r["mask_head"] = _mask_head(t, s.sub("mask_head"), s.sub("mask_roi_extractor"), "roi_head.mask_head",
                                    "roi_head.mask_branch.mask_head")
    s.expect("shared_head", (None,), None)
    rcnn = train and train.sub("rcnn")
    if kind == "mask_scoring":
        r["mask_iou_head"] = _mask_iou_head(t, s.sub("mask_iou_head"), rcnn)
    if kind == "grid":
        _grid_parts(t, s, rcnn, r)
    s.done()
    train_settings(t, rcnn, r, anchors=False)
    return r


def _mask_iou_head(t: Translation, s: Section, rcnn: Section | None) -> dict:
    """MaskIoUHead (its weights keep their names) and the rcnn train_cfg's ``mask_thr_binary``."""
    s.expect("type", ("MaskIoUHead",))
    h = {"num_convs": s.get("num_convs", 4), "num_fcs": s.get("num_fcs", 2),
         "conv_out_channels": s.get("conv_out_channels", 256), "fc_out_channels": s.get("fc_out_channels", 1024)}
    s.expect("roi_feat_size", (14,), 14)
    s.get("in_channels", 256)
    s.get("num_classes", 80)
    loss = s.sub("loss_iou", {"type": "MSELoss", "loss_weight": 0.5})
    loss.expect("type", ("MSELoss",))
    loss.expect("reduction", ("mean",), "mean")
    h["loss_weight"] = loss.get("loss_weight", 1.0)
    loss.done()
    s.done()
    if rcnn is not None:
        h["mask_thr_binary"] = rcnn.get("mask_thr_binary", 0.5)
    return h


def _grid_parts(t: Translation, s: Section, rcnn: Section | None, r: dict) -> None:
    """GridRoIHead's grid RoI extractor and GridHead (its weights keep their names), and the rcnn
    train_cfg's ``pos_radius`` / ``max_num_grid``."""
    if s.get("grid_roi_extractor", None) is None:
        raise t.fail(f"{s.where}.grid_roi_extractor", "None (sharing the box head's extractor) is not implemented "
                                                      "by dettool")
    r["grid_roi_extractor"] = _roi_extractor(t, s.sub("grid_roi_extractor"))
    g = s.sub("grid_head")
    g.expect("type", ("GridHead",))
    r["grid_head"] = {"grid_points": g.get("grid_points", 9), "num_convs": g.get("num_convs", 8),
                      "point_feat_channels": g.get("point_feat_channels", 64)}
    g.expect("roi_feat_size", (r["grid_roi_extractor"]["output_size"],), 14)
    g.get("in_channels", 256)
    g.expect("conv_kernel_size", (3,), 3)
    g.expect("deconv_kernel_size", (4,), 4)
    g.expect("class_agnostic", (False,), False)
    g.expect("conv_cfg", (None,), None)
    norm = g.sub("norm_cfg", {"type": "GN", "num_groups": 36})
    norm.expect("type", ("GN",))
    r["grid_head"]["num_groups"] = norm.get("num_groups")
    norm.done(ignore=("requires_grad",))
    loss = g.sub("loss_grid", {"type": "CrossEntropyLoss", "use_sigmoid": True, "loss_weight": 15})
    loss.expect("type", ("CrossEntropyLoss",))
    loss.expect("use_sigmoid", (True,))
    r["grid_head"]["loss_weight"] = loss.get("loss_weight", 1.0)
    loss.done()
    g.done()
    if rcnn is not None:
        r["pos_radius"] = rcnn.get("pos_radius")
        r["max_num_grid"] = rcnn.get("max_num_grid", 192)


def _grid(t: Translation, s: Section, train: Section | None) -> None:
    """GridRoIHead: a box head that only classifies, and a grid head."""
    _standard_parts(t, s, train, "grid")


def _mask_scoring(t: Translation, s: Section, train: Section | None) -> None:
    """MaskScoringRoIHead: Mask R-CNN's RoI head and a MaskIoUHead."""
    _standard_parts(t, s, train, "mask_scoring")


def _double_head(t: Translation, s: Section, train: Section | None) -> None:
    """DoubleHeadRoIHead with a DoubleConvFCBBoxHead: the standard head's settings plus the scale."""
    head = s.sub("bbox_head")
    head.expect("type", ("DoubleConvFCBBoxHead",))
    norm = head.sub("norm_cfg", {"type": "BN"})
    kind = norm.expect("type", ("BN", "GN"))
    norm.done(ignore=("requires_grad", "num_groups"))
    h = {"type": "double_conv_fc", "num_convs": head.get("num_convs"), "num_fcs": head.get("num_fcs"),
         "conv_out_channels": head.get("conv_out_channels", 1024), "fc_out_channels": head.get("fc_out_channels", 1024),
         "norm": kind.lower(), "reg_class_agnostic": head.get("reg_class_agnostic", False)}
    t.config["model"]["num_classes"] = head.get("num_classes")
    head.get("in_channels")
    head.get("roi_feat_size", 7)
    head.expect("conv_cfg", (None,), None)
    coder = delta_coder(t, head.sub("bbox_coder", {"type": "DeltaXYWHBBoxCoder"}))
    h["target_stds"] = coder["target_stds"]
    head_losses(t, head, h, ("loss_cls", "loss_bbox"))
    head.done()
    r = t.config["model"]["roi_head"] = {"type": "double_head", "reg_roi_scale_factor": s.get("reg_roi_scale_factor"),
                                         "roi_extractor": _roi_extractor(t, s.sub("bbox_roi_extractor")),
                                         "bbox_head": h}
    s.expect("mask_head", (None,), None)
    s.done()
    train_settings(t, train and train.sub("rcnn"), r, anchors=False)


def _cascade(t: Translation, s: Section, train: Any) -> None:
    """CascadeRoIHead: one box head (and mask head) per stage, each stage's training settings."""
    _cascade_parts(t, s, train, "cascade")
    s.done()


def _htc(t: Translation, s: Section, train: Any) -> None:
    """HybridTaskCascadeRoIHead: the cascade's parts with HTC mask heads, interleaving, the mask
    information flow and the semantic branch (its weights keep their names)."""
    r, conv_res = _cascade_parts(t, s, train, "htc")
    r["interleaved"] = s.get("interleaved", True)
    r["mask_info_flow"] = s.get("mask_info_flow", True)
    if conv_res != [r["mask_info_flow"] and i > 0 for i in range(len(conv_res))]:
        raise t.fail(f"{s.where}.mask_head", f"with_conv_res {conv_res} with mask_info_flow {r['mask_info_flow']} "
                                             "is not implemented by dettool (the flow's heads but the first have it)")
    s.expect("semantic_fusion", (("bbox", "mask"), ["bbox", "mask"]), ("bbox", "mask"))
    if s.get("semantic_head", None) is None:
        r["semantic_head"] = None
    else:
        r["semantic_roi_extractor"] = _roi_extractor(t, s.sub("semantic_roi_extractor"))
        h = s.sub("semantic_head")
        h.expect("type", ("FusedSemanticHead",))
        r["semantic_head"] = {"num_ins": h.get("num_ins"), "fusion_level": h.get("fusion_level"),
                              "num_convs": h.get("num_convs", 4), "conv_out_channels": h.get("conv_out_channels", 256),
                              "num_classes": h.get("num_classes", 183)}
        h.get("in_channels", 256)
        stride = r["semantic_roi_extractor"]["strides"][0]
        if h.get("seg_scale_factor", 1 / 8) * stride != 1:
            raise t.fail(f"{h.where}.seg_scale_factor", f"must be 1 / the semantic RoI extractor's stride ({stride})")
        h.expect("conv_cfg", (None,), None)
        h.expect("norm_cfg", (None,), None)
        h.expect("ignore_label", (None, 255), None)
        weight = h.get("loss_weight", None)
        loss = h.sub("loss_seg", {"type": "CrossEntropyLoss", "ignore_index": 255, "loss_weight": 0.2})
        loss.expect("type", ("CrossEntropyLoss",))
        loss.expect("ignore_index", (255,), 255)
        loss.expect("use_sigmoid", (False,), False)
        r["semantic_head"]["loss_weight"] = weight if weight is not None else loss.get("loss_weight", 1.0)
        loss.done()
        h.done()
    s.done()


def _cascade_parts(t: Translation, s: Section, train: Any, kind: str) -> tuple[dict, list[bool]]:
    """The stages, RoI extractor and mask head of a cascade (``kind``: ``cascade`` or ``htc``);
    also the mask heads' ``with_conv_res`` (HTC)."""
    n = s.get("num_stages")
    weights = list(s.get("stage_loss_weights"))
    heads, trains = s.get("bbox_head"), train.get("rcnn") if train is not None else None
    if not isinstance(heads, list) or len(heads) != n or (trains is not None and len(trains) != n):
        raise t.fail(f"{s.where}.bbox_head", f"needs one box head (and one rcnn train setting) per stage ({n})")
    stages = []
    for i in range(n):
        stage = {"bbox_head": _bbox_head(t, Section(t, heads[i], f"{s.where}.bbox_head[{i}]"),
                                         f"roi_head.bbox_head.{i}", f"roi_head.bbox_heads.{i}"),
                 "loss_weight": weights[i]}
        if trains is not None:
            train_settings(t, Section(t, trains[i], f"model.train_cfg.rcnn[{i}]"), stage, anchors=False)
        stages.append(stage)
    extractor = _roi_extractor(t, s.sub("bbox_roi_extractor"))
    r = t.config["model"]["roi_head"] = {"type": kind, "roi_extractor": extractor, "stages": stages}
    conv_res: list[bool] = []
    if s.get("mask_head", None) is not None:
        masks = s.get("mask_head")
        masks = masks if isinstance(masks, list) else [masks] * n
        specs = [_mask_head(t, Section(t, m, f"{s.where}.mask_head[{i}]"), s.sub("mask_roi_extractor"),
                            f"roi_head.mask_head.{i}", f"roi_head.mask_branches.{i}.mask_head", htc=kind == "htc")
                 for i, m in enumerate(masks)]
        conv_res = [spec.pop("with_conv_res") for spec in specs if "with_conv_res" in spec]
        if any(spec != specs[0] for spec in specs):
            raise t.fail(f"{s.where}.mask_head", "differs between stages, which dettool does not implement")
        r["mask_head"] = specs[0]
    s.expect("shared_head", (None,), None)
    return r, conv_res


ROI_HEADS: dict[str, Callable[[Translation, Section, Any], None]] = {
    "StandardRoIHead": _standard_roi_head, "DoubleHeadRoIHead": _double_head, "CascadeRoIHead": _cascade,
    "MaskScoringRoIHead": _mask_scoring, "GridRoIHead": _grid, "HybridTaskCascadeRoIHead": _htc}


def rcnn_test(t: Translation, s: Section) -> None:
    """A two-stage detector's ``test_cfg.rcnn`` into dettool's ``test`` section."""
    t.config["test"] = {"score_thr": s.get("score_thr"), **nms(t, s.sub("nms")), "max_per_img": s.get("max_per_img"),
                        "mask_thr": s.get("mask_thr_binary", 0.5)}
    s.done()


def dense_test(t: Translation, s: Section) -> None:
    """A single-stage detector's ``test_cfg`` into dettool's ``test`` section."""
    t.config["test"] = {"score_thr": s.get("score_thr"), "nms_pre": s.get("nms_pre", -1), **nms(t, s.sub("nms")),
                        "max_per_img": s.get("max_per_img"), "min_bbox_size": s.get("min_bbox_size", -1)}
    s.done()
