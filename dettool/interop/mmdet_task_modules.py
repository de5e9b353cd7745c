"""MMDetection task modules (anchor generators, box coders, losses, assigners, samplers, NMS and
proposal settings) -> dettool's, shared by the dense-head and RoI-head translators."""
from __future__ import annotations

import re

from dettool.interop.mmdet_section import Section, Translation


def anchor_generator(t: Translation, s: Section) -> dict:
    """MMDetection's ``AnchorGenerator`` as dettool's ``anchor`` settings (octave form)."""
    s.expect("type", ("AnchorGenerator",))
    out = {"strides": list(s.get("strides")), "ratios": list(s.get("ratios")),
           "center_offset": s.get("center_offset", 0.0)}
    scales = s.get("scales", None)
    if scales is None:
        out.update(octave_base_scale=s.get("octave_base_scale"), scales_per_octave=s.get("scales_per_octave"))
    elif len(scales) == 1:  # scales=[8]: one scale, the octave form with one step
        out.update(octave_base_scale=scales[0], scales_per_octave=1)
    else:
        raise t.fail(f"{s.where}.scales", f"{list(scales)} (several explicit scales) is not implemented by dettool; "
                                          "use octave_base_scale / scales_per_octave")
    s.expect("base_sizes", (None,), None)
    s.expect("scale_major", (True,), True)
    s.done()
    return out


def delta_coder(t: Translation, s: Section) -> dict:
    """``DeltaXYWHBBoxCoder`` as dettool's ``bbox_coder`` settings."""
    s.expect("type", ("DeltaXYWHBBoxCoder",))
    out = {"target_means": list(s.get("target_means", (0.0, 0.0, 0.0, 0.0))),
           "target_stds": list(s.get("target_stds", (1.0, 1.0, 1.0, 1.0)))}
    s.expect("clip_border", (True,), True)
    s.expect("add_ctr_clamp", (False,), False)
    s.done()
    return out


def loss_settings(t: Translation, s: Section, prefix: str) -> dict:
    """A loss as dettool names it; a loss dettool lacks is a training setting left out. GHM's
    running bin counts (under ``prefix``, MMDetection's module name) are carried; its bin edges
    are rebuilt from ``bins``."""
    kinds = {"FocalLoss": "focal", "L1Loss": "l1", "SmoothL1Loss": "smooth_l1", "GIoULoss": "giou",
             "IoULoss": "iou", "CrossEntropyLoss": "ce", "GHMC": "ghmc", "GHMR": "ghmr",
             "BalancedL1Loss": "balanced_l1", "BoundedIoULoss": "bounded_iou"}
    kind = kinds.get(s.type)
    if kind == "ce" and s.get("use_sigmoid", False):
        kind = "bce"
    s.expect("use_mask", (False,), False)
    out = {"type": kind, "weight": s.get("loss_weight", 1.0)}
    if kind == "focal":
        out.update(gamma=s.get("gamma", 2.0), alpha=s.get("alpha", 0.25))
        s.expect("use_sigmoid", (True,), True)
    elif kind == "smooth_l1":
        out["beta"] = s.get("beta", 1.0)
    elif kind == "balanced_l1":
        out.update(alpha=s.get("alpha", 0.5), gamma=s.get("gamma", 1.5), beta=s.get("beta", 1.0))
    elif kind in ("ghmc", "ghmr"):
        out.update(bins=s.get("bins", 10), momentum=s.get("momentum", 0.0))
        p = re.escape(prefix)
        t.rules += [(rf"^{p}\.acc_sum$", f"{prefix}.density.acc_sum"), (rf"^{p}\.edges$", None)]
        if kind == "ghmr":
            out["mu"] = s.get("mu", 0.02)
        else:
            s.expect("use_sigmoid", (True,), True)
    elif kind == "iou":
        out["mode"] = s.get("mode", "log")
    elif kind == "bounded_iou":
        out.update(beta=s.get("beta", 0.2), eps=s.get("eps", 1e-3))
    if kind is None:
        t.dropped.append(f"{s.where} ({s.type})")
        return {}
    s.done(ignore=("reduction", "eps", "use_sigmoid", "activated"))
    return out


def tblr_coder(t: Translation, s: Section) -> dict:
    """``TBLRBBoxCoder`` (FSAF) as dettool's ``bbox_coder`` settings."""
    s.expect("type", ("TBLRBBoxCoder",))
    normalizer = s.get("normalizer", 4.0)
    if not isinstance(normalizer, (int, float)):
        raise t.fail(f"{s.where}.normalizer", f"{normalizer!r} (one factor per side) is not implemented by dettool")
    s.expect("clip_border", (True,), True)
    s.done()
    return {"type": "tblr", "normalizer": float(normalizer)}


def center_region_assigner(t: Translation, s: Section) -> dict:
    """``CenterRegionAssigner`` (FSAF) as dettool's ``assigner`` settings."""
    out = {"type": "center_region", "pos_scale": s.get("pos_scale"), "neg_scale": s.get("neg_scale"),
           "min_pos_iof": s.get("min_pos_iof", 1e-2), "ignore_gt_scale": s.get("ignore_gt_scale", 0.5),
           "foreground_dominate": s.get("foreground_dominate", False)}
    iou = s.sub("iou_calculator", {"type": "BboxOverlaps2D"})
    iou.expect("type", ("BboxOverlaps2D",))
    iou.done()
    s.done()
    return out


def assigner(t: Translation, s: Section) -> dict:
    """A train_cfg ``assigner`` (max-IoU, approx max-IoU or centre-region) as dettool's settings."""
    if s.type == "CenterRegionAssigner":
        return center_region_assigner(t, s)
    kind = s.expect("type", ("MaxIoUAssigner", "ApproxMaxIoUAssigner"))
    out = {"pos_iou_thr": s.get("pos_iou_thr"), "neg_iou_thr": s.get("neg_iou_thr"),
           "min_pos_iou": s.get("min_pos_iou", 0.0), "ignore_iof_thr": s.get("ignore_iof_thr", -1.0),
           "gt_max_assign_all": s.get("gt_max_assign_all", True),
           "match_low_quality": s.get("match_low_quality", True)}
    s.expect("ignore_wrt_candidates", (True,), True)
    iou = s.sub("iou_calculator", {"type": "BboxOverlaps2D"})
    iou.expect("type", ("BboxOverlaps2D",))
    iou.done()
    s.done(ignore=("gpu_assign_thr",))  # where the assignment runs, not what it computes
    if kind == "ApproxMaxIoUAssigner":  # Guided Anchoring's shape targets (its ga_assigner)
        out["type"] = "approx_max_iou"
    return out


def _combined_sampler(s: Section) -> dict:
    """Libra R-CNN's ``CombinedSampler`` (``InstanceBalancedPosSampler`` or ``RandomSampler``
    positives, ``IoUBalancedNegSampler`` negatives) as dettool's ``iou_balanced`` sampler."""
    pos, neg = s.sub("pos_sampler"), s.sub("neg_sampler")
    pos_kind = pos.expect("type", ("InstanceBalancedPosSampler", "RandomSampler"))
    neg.expect("type", ("IoUBalancedNegSampler",))
    out = {"type": "iou_balanced", "num": s.get("num"), "pos_fraction": s.get("pos_fraction"),
           "neg_pos_ub": s.get("neg_pos_ub", -1), "add_gt_as_proposals": s.get("add_gt_as_proposals", True),
           "floor_thr": neg.get("floor_thr", -1), "floor_fraction": neg.get("floor_fraction", 0),
           "num_bins": neg.get("num_bins", 3), "instance_balanced_pos": pos_kind == "InstanceBalancedPosSampler"}
    pos.done()
    neg.done()
    s.done(ignore=("context",))
    return out


def sampler(t: Translation, s: Section) -> dict:
    """A train_cfg ``sampler`` (pseudo, random, OHEM, or Libra's combined IoU-balanced) as dettool's settings."""
    kind = s.expect("type", ("PseudoSampler", "RandomSampler", "OHEMSampler", "CombinedSampler"))
    if kind == "PseudoSampler":
        s.done()
        return {"type": "pseudo"}
    if kind == "CombinedSampler":
        return _combined_sampler(s)
    out = {"type": "random" if kind == "RandomSampler" else "ohem", "num": s.get("num"),
           "pos_fraction": s.get("pos_fraction"), "neg_pos_ub": s.get("neg_pos_ub", -1),
           "add_gt_as_proposals": s.get("add_gt_as_proposals", True)}
    s.done(ignore=("context", "loss_key"))
    return out


def train_settings(t: Translation, train: Section | None, h: dict, anchors: bool) -> None:
    """A head's train_cfg: assigner, sampler (and, for anchor heads, ``allowed_border``)."""
    if train is None:
        return
    h["assigner"] = assigner(t, train.sub("assigner"))
    h["sampler"] = sampler(t, train.sub("sampler"))
    if anchors:
        h["allowed_border"] = train.get("allowed_border", -1)
    train.expect("pos_weight", (-1,), -1)
    train.get("mask_size", 28)  # the mask target size: dettool's is the mask head's output size
    train.done(ignore=("debug",))


def head_losses(t: Translation, s: Section, h: dict, keys: tuple[str, ...], defaults: dict | None = None) -> None:
    """The head's losses dettool has, under ``keys`` (``defaults``: MMDetection's class defaults of
    those a config may leave out); ``s.where`` names the module for GHM's buffers."""
    defaults = defaults or {}
    for key in keys:
        section = s.sub(key, defaults[key]) if key in defaults else s.sub(key)
        if loss := loss_settings(t, section, f"{s.where.removeprefix('model.')}.{key}"):
            h[key] = loss


def anchor_head(t: Translation, s: Section, h: dict) -> None:
    """What RetinaHead and RPNHead share: anchors, box coder, losses."""
    s.get("in_channels")
    h["feat_channels"] = s.get("feat_channels", 256)
    s.expect("reg_decoded_bbox", (False,), False)
    h["anchor"] = anchor_generator(t, s.sub("anchor_generator"))
    h["bbox_coder"] = delta_coder(t, s.sub("bbox_coder", {"type": "DeltaXYWHBBoxCoder"}))
    head_losses(t, s, h, ("loss_cls", "loss_bbox"))


def proposals(t: Translation, s: Section) -> dict:
    """An RPN's ``rpn`` / ``rpn_proposal`` settings (pre-NMS top-k, NMS, kept, min size; GA-RPN's
    ``nms_post``, proposals kept per level after NMS, only where it cannot cut: at least ``max_per_img``)."""
    nms = s.sub("nms")
    nms.expect("type", ("nms",))
    out = {"nms_pre": s.get("nms_pre", -1), "nms_iou_thr": nms.get("iou_threshold"),
           "max_per_img": s.get("max_per_img"), "min_bbox_size": s.get("min_bbox_size", 0)}
    nms_post = s.get("nms_post", None)
    if nms_post is not None and nms_post < out["max_per_img"]:
        raise t.fail(f"{s.where}.nms_post", f"{nms_post} below max_per_img {out['max_per_img']} (a per-level cut) "
                                            "is not implemented by dettool")
    nms.done()
    s.done()
    return out


def nms(t: Translation, s: Section) -> dict:
    """MMDetection's ``nms`` setting: NMS, or Soft-NMS (mmcv's ``soft_nms``: linear by default)."""
    kind = s.expect("type", ("nms", "soft_nms"))
    out = {"nms_iou_thr": s.get("iou_threshold")}
    if kind == "soft_nms":
        method = s.expect("method", ("linear", "gaussian"), "linear")
        out.update(nms_type=f"soft_nms_{method}", soft_nms_sigma=s.get("sigma", 0.5),
                   soft_nms_min_score=s.get("min_score", 1e-3))
    s.done()
    return out
