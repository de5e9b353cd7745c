"""MMDetection config + checkpoint -> dettool config + checkpoint.

The MMDetection config (a plain dict from :func:`read_mmdet_config`) is translated section by
section through tables keyed by MMDetection's ``type`` names (``DETECTORS``, ``BACKBONES``,
``NECKS``, ``DENSE_HEADS``); every key of a model or test section must be understood, so an
option dettool does not implement is refused naming it (never silently dropped). Training-only
settings that have no dettool equivalent are listed in the written config's header instead.
The weights are renamed by the rules each translated part contributes, and must then match the
dettool model's parameters exactly (names and shapes), else the checkpoint is refused.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from dettool.errors import CheckpointError, ConfigError

_MISSING = object()


@dataclass
class Translation:
    """The dettool config being built, the weight renaming rules and the training settings left out."""

    source: str
    config: dict = field(default_factory=dict)
    rules: list[tuple[str, str]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def fail(self, where: str, what: str) -> ConfigError:
        return ConfigError(f"{self.source}: {where}: {what}")


class Section:
    """One MMDetection config dict whose keys are read at most once; ``done`` refuses the rest."""

    def __init__(self, t: Translation, value: Any, where: str):
        if not isinstance(value, dict):
            raise t.fail(where, f"expected a dict, got {type(value).__name__}")
        self.t, self.d, self.where, self.used = t, value, where, {"type", "init_cfg", "_scope_"}

    @property
    def type(self) -> str:
        return str(self.d.get("type", ""))

    def get(self, key: str, default: Any = _MISSING) -> Any:
        self.used.add(key)
        if key in self.d:
            return self.d[key]
        if default is _MISSING:
            raise self.t.fail(f"{self.where}.{key}", "missing")
        return default

    def expect(self, key: str, allowed: tuple, default: Any = _MISSING) -> Any:
        """The value of ``key``, which must be one of ``allowed`` (what dettool implements)."""
        value = self.get(key, default)
        if value not in allowed:
            raise self.t.fail(f"{self.where}.{key}", f"{value!r} is not implemented by dettool "
                                                     f"(supported: {', '.join(map(repr, allowed))})")
        return value

    def sub(self, key: str, default: Any = _MISSING) -> Section:
        return Section(self.t, self.get(key, default), f"{self.where}.{key}")

    def done(self, ignore: tuple[str, ...] = ()) -> None:
        for key in self.d:
            if key not in self.used and key not in ignore:
                raise self.t.fail(f"{self.where}.{key}", f"option {key}={self.d[key]!r} is not implemented by dettool")


def _table(t: Translation, table: dict[str, Callable], s: Section, what: str) -> Callable:
    if s.type not in table:
        raise t.fail(f"{s.where}.type", f"{what} {s.type!r} is not implemented by dettool convert "
                                        f"(supported: {', '.join(sorted(table))})")
    return table[s.type]


# ---------------------------------------------------------------------------------------- backbones

def _norm(t: Translation, s: Section) -> str:
    norm = s.sub("norm_cfg", {"type": "BN", "requires_grad": True})
    kind = norm.expect("type", ("BN", "SyncBN", "GN"))
    trainable = norm.get("requires_grad", True)
    groups = norm.get("num_groups", None)
    norm.done()
    if kind == "GN":
        t.config["model"]["backbone"]["gn_groups"] = groups
        return "gn"
    if not trainable:
        return "frozen_bn"
    return "syncbn" if kind == "SyncBN" else "bn"


def _resnet(t: Translation, s: Section) -> tuple[int, ...]:
    """ResNet / ResNeXt (pytorch style): dettool's torchvision blocks have the same names."""
    b = t.config["model"].setdefault("backbone", {})
    b["depth"] = s.expect("depth", (18, 34, 50, 101))
    s.expect("num_stages", (4,), 4)
    b["style"] = s.expect("style", ("pytorch", "caffe"), "pytorch")
    s.expect("strides", ((1, 2, 2, 2), [1, 2, 2, 2]), (1, 2, 2, 2))
    s.expect("dilations", ((1, 1, 1, 1), [1, 1, 1, 1]), (1, 1, 1, 1))
    s.expect("deep_stem", (False,), False)
    s.expect("avg_down", (False,), False)
    s.expect("with_cp", (False,), False)
    s.expect("zero_init_residual", (True, False), True)  # initialisation only
    s.expect("plugins", (None,), None)
    stages = [bool(x) for x in s.get("stage_with_dcn", (False,) * 4)]
    if s.get("dcn", None) is not None:
        dcn = s.sub("dcn")
        kind = dcn.expect("type", ("DCN", "DCNv2"))
        dcn.expect("fallback_on_stride", (False,), False)
        b["plugins"] = [{"type": "dcn", "stages": stages, "modulated": kind == "DCNv2",
                         "deform_groups": dcn.get("deform_groups", 1)}]
        dcn.done()
    elif any(stages):
        raise t.fail(f"{s.where}.stage_with_dcn", "set without a dcn section")
    if s.type == "ResNeXt":
        b["groups"] = s.get("groups")
        b["width_per_group"] = s.get("base_width")
    b["norm"] = _norm(t, s)
    if b["norm"] == "frozen_bn":  # dettool's frozen BN (torchvision's) keeps no batch counter
        t.rules.append((r"^backbone\..*\.num_batches_tracked$", None))
    if b["norm"] == "gn":  # MMDetection names a ResNet's norms after their type (gn1); torchvision bn1
        t.rules.append((r"^(backbone\.(?:.*\.)?)gn(\d)\.", r"\1bn\2."))
    b["norm_eval"] = bool(s.get("norm_eval", True))
    b["frozen_stages"] = s.get("frozen_stages", -1)
    b["weights"] = None
    out = tuple(s.get("out_indices", (0, 1, 2, 3)))
    s.done()
    return out


def _ssd_vgg(t: Translation, s: Section) -> tuple[int, ...]:
    """SSD's VGG: dettool's ``SSDVGG`` numbers its layers as MMDetection does (same weight names)."""
    b = t.config["model"]["backbone"] = {"type": "ssd_vgg"}
    b["depth"] = s.expect("depth", (11, 13, 16, 19))
    b["with_last_pool"] = bool(s.get("with_last_pool", False))
    b["ceil_mode"] = bool(s.get("ceil_mode", True))
    b["out_feature_indices"] = list(s.get("out_feature_indices", (22, 34)))
    s.get("out_indices", (3, 4))  # MMDetection's SSDVGG ignores it: out_feature_indices choose the outputs
    s.expect("pretrained", (None,), None)
    s.expect("input_size", (None,), None)  # deprecated there: the L2 norm is the neck's
    s.expect("l2_norm_scale", (None,), None)
    b["weights"] = None
    s.done()
    return tuple(range(len(b["out_feature_indices"])))


BACKBONES: dict[str, Callable[[Translation, Section], tuple[int, ...]]] = {
    "ResNet": _resnet, "ResNeXt": _resnet, "SSDVGG": _ssd_vgg}


# -------------------------------------------------------------------------------------------- necks

def _conv_norm(s: Section, default: dict | None, allowed: tuple[str, ...]) -> str:
    """A neck's or head's ``norm_cfg`` (``default`` when absent) as dettool names it: 'none', or
    'gn' (32 groups, dettool's) / 'bn' of the ``allowed`` MMDetection types."""
    if s.get("norm_cfg", default) is None:
        return "none"
    norm = s.sub("norm_cfg", default)
    kind = {"GN": "gn", "BN": "bn"}[norm.expect("type", allowed)]
    if kind == "gn":
        norm.expect("num_groups", (32,), 32)
    norm.done(ignore=("requires_grad",))
    return kind


def _fpn(t: Translation, s: Section, backbone_out: tuple[int, ...]) -> int:
    """MMDetection's FPN; returns the number of pyramid levels it outputs."""
    n = t.config["model"].setdefault("neck", {})
    in_channels = list(s.get("in_channels"))
    start = s.get("start_level", 0)
    s.expect("end_level", (-1,), -1)
    if len(in_channels) != len(backbone_out):
        raise t.fail(f"{s.where}.in_channels", f"{len(in_channels)} inputs for {len(backbone_out)} backbone outputs")
    t.config["model"]["backbone"]["out_indices"] = list(backbone_out[start:])
    n["out_channels"] = s.get("out_channels")
    n["num_outs"] = s.get("num_outs")
    extra = s.expect("add_extra_convs", (False, True, "on_input", "on_output"), False)
    n["add_extra_convs"] = {False: "none", True: "on_input"}.get(extra, extra)
    n["relu_before_extra_convs"] = bool(s.get("relu_before_extra_convs", False))
    s.expect("no_norm_on_lateral", (False,), False)
    n["norm"] = _conv_norm(s, None, ("GN", "BN"))
    if n["norm"] != "none" and n["num_outs"] > len(in_channels) - start and n["add_extra_convs"] != "none":
        raise t.fail(f"{s.where}.norm_cfg", "a norm in the extra-level convs is not implemented by dettool")
    s.expect("act_cfg", (None,), None)
    s.expect("upsample_cfg", ({"mode": "nearest"},), {"mode": "nearest"})
    s.done()
    levels = len(in_channels) - start
    t.rules += [(r"^neck\.lateral_convs\.(\d+)\.conv\.", r"neck.fpn.inner_blocks.\1.0."),
                (r"^neck\.lateral_convs\.(\d+)\.(gn|bn)\.", r"neck.fpn.inner_blocks.\1.1."),
                (r"^neck\.fpn_convs\.(\d+)\.(gn|bn)\.", r"neck.fpn.layer_blocks.\1.1."),
                *[(rf"^neck\.fpn_convs\.{i}\.conv\.", f"neck.fpn.layer_blocks.{i}.0.") for i in range(levels)],
                *[(rf"^neck\.fpn_convs\.{levels + j}\.conv\.", f"neck.fpn.extra_blocks.convs.{j}.")
                  for j in range(n["num_outs"] - levels)]]
    return n["num_outs"]


def _bfp(t: Translation, s: Section, inputs: tuple[int, ...]) -> int:
    """MMDetection's BFP (Libra R-CNN), after an FPN of ``len(inputs)`` levels; returns that count."""
    n = t.config["model"]["neck"] = {"type": "bfp"}
    s.get("in_channels")  # the FPN's out_channels: dettool takes the previous neck's
    s.expect("num_levels", (len(inputs),))
    n["refine_level"] = s.get("refine_level", 2)
    refine = s.expect("refine_type", (None, "conv", "non_local"), None)
    n["refine_type"] = "none" if refine is None else refine
    s.expect("conv_cfg", (None,), None)
    s.expect("norm_cfg", (None,), None)
    s.done()
    t.rules += [(r"^neck\.refine\.(g|theta|phi|conv_out)\.conv\.", r"neck.refine.\1."),  # NonLocal2d's ConvModules
                (r"^neck\.refine\.conv\.", "neck.refine.0.")]  # the 'conv' refinement: a ConvModule
    return len(inputs)


def _ssd_neck(t: Translation, s: Section, inputs: tuple[int, ...]) -> int:
    """MMDetection's SSDNeck (same weight names: ``l2_norm.weight``, ``extra_layers.i.j.conv.*``)."""
    n = t.config["model"]["neck"] = {"type": "ssd_neck"}
    if len(s.get("in_channels")) != len(inputs):
        raise t.fail(f"{s.where}.in_channels", f"{len(s.get('in_channels'))} inputs for {len(inputs)} backbone outputs")
    n["out_channels"] = list(s.get("out_channels"))
    n["level_strides"] = list(s.get("level_strides"))
    n["level_paddings"] = list(s.get("level_paddings"))
    n["l2_norm_scale"] = s.get("l2_norm_scale", 20.0)
    n["last_kernel_size"] = s.get("last_kernel_size", 3)
    s.expect("use_depthwise", (False,), False)
    s.expect("norm_cfg", (None,), None)
    s.expect("act_cfg", ({"type": "ReLU"},), {"type": "ReLU"})
    s.done()
    return len(n["out_channels"])


NECKS: dict[str, Callable[[Translation, Section, tuple[int, ...]], int]] = {"FPN": _fpn, "BFP": _bfp,
                                                                           "SSDNeck": _ssd_neck}


def _necks(t: Translation, m: Section, backbone_out: tuple[int, ...]) -> None:
    """``model.neck``: one neck, or a list applied in order (Libra R-CNN's FPN then BFP), which
    dettool holds as a neck sequence: MMDetection's ``neck.<i>.`` weights are ``neck.necks.<i>.``."""
    if not isinstance(m.get("neck"), list):
        _table(t, NECKS, m.sub("neck"), "neck")(t, m.sub("neck"), backbone_out)
        return
    necks, inputs = [], backbone_out
    for i, value in enumerate(m.get("neck")):
        s = Section(t, value, f"{m.where}.neck[{i}]")
        first_rule = len(t.rules)
        levels = _table(t, NECKS, s, "neck")(t, s, inputs)
        necks.append(t.config["model"].pop("neck"))
        inputs = tuple(range(levels))
        for j, (pattern, repl) in enumerate(t.rules[first_rule:], start=first_rule):
            if not pattern.startswith(r"^neck\.") or not isinstance(repl, (str, type(None))):
                raise t.fail(f"{m.where}.neck[{i}]", f"{s.type} cannot be placed in a list of necks by dettool convert")
            t.rules[j] = (rf"^neck\.{i}\." + pattern[len(r"^neck\."):],
                          repl if repl is None else f"neck.necks.{i}." + repl.removeprefix("neck."))
    t.config["model"]["neck"] = necks


# -------------------------------------------------------------------------------------- task modules

def _anchor(t: Translation, s: Section) -> dict:
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


def _delta_coder(t: Translation, s: Section) -> dict:
    s.expect("type", ("DeltaXYWHBBoxCoder",))
    out = {"target_means": list(s.get("target_means", (0.0, 0.0, 0.0, 0.0))),
           "target_stds": list(s.get("target_stds", (1.0, 1.0, 1.0, 1.0)))}
    s.expect("clip_border", (True,), True)
    s.expect("add_ctr_clamp", (False,), False)
    s.done()
    return out


def _loss(t: Translation, s: Section, prefix: str) -> dict:
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


def _tblr_coder(t: Translation, s: Section) -> dict:
    s.expect("type", ("TBLRBBoxCoder",))
    normalizer = s.get("normalizer", 4.0)
    if not isinstance(normalizer, (int, float)):
        raise t.fail(f"{s.where}.normalizer", f"{normalizer!r} (one factor per side) is not implemented by dettool")
    s.expect("clip_border", (True,), True)
    s.done()
    return {"type": "tblr", "normalizer": float(normalizer)}


def _center_region_assigner(t: Translation, s: Section) -> dict:
    out = {"type": "center_region", "pos_scale": s.get("pos_scale"), "neg_scale": s.get("neg_scale"),
           "min_pos_iof": s.get("min_pos_iof", 1e-2), "ignore_gt_scale": s.get("ignore_gt_scale", 0.5),
           "foreground_dominate": s.get("foreground_dominate", False)}
    iou = s.sub("iou_calculator", {"type": "BboxOverlaps2D"})
    iou.expect("type", ("BboxOverlaps2D",))
    iou.done()
    s.done()
    return out


def _assigner(t: Translation, s: Section) -> dict:
    if s.type == "CenterRegionAssigner":
        return _center_region_assigner(t, s)
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


def _sampler(t: Translation, s: Section) -> dict:
    kind = s.expect("type", ("PseudoSampler", "RandomSampler", "OHEMSampler"))
    if kind == "PseudoSampler":
        s.done()
        return {"type": "pseudo"}
    out = {"type": "random" if kind == "RandomSampler" else "ohem", "num": s.get("num"),
           "pos_fraction": s.get("pos_fraction"), "neg_pos_ub": s.get("neg_pos_ub", -1),
           "add_gt_as_proposals": s.get("add_gt_as_proposals", True)}
    s.done(ignore=("context", "loss_key"))
    return out


def _train_settings(t: Translation, train: Section | None, h: dict, anchors: bool) -> None:
    """A head's train_cfg: assigner, sampler (and, for anchor heads, ``allowed_border``)."""
    if train is None:
        return
    h["assigner"] = _assigner(t, train.sub("assigner"))
    h["sampler"] = _sampler(t, train.sub("sampler"))
    if anchors:
        h["allowed_border"] = train.get("allowed_border", -1)
    train.expect("pos_weight", (-1,), -1)
    train.get("mask_size", 28)  # the mask target size: dettool's is the mask head's output size
    train.done(ignore=("debug",))


def _losses(t: Translation, s: Section, h: dict, keys: tuple[str, ...]) -> None:
    """The head's losses dettool has, under ``keys``; ``s.where`` names the module for GHM's buffers."""
    for key in keys:
        if loss := _loss(t, s.sub(key), f"{s.where.removeprefix('model.')}.{key}"):
            h[key] = loss


def _anchor_head(t: Translation, s: Section, h: dict) -> None:
    """What RetinaHead and RPNHead share: anchors, box coder, losses."""
    s.get("in_channels")
    h["feat_channels"] = s.get("feat_channels", 256)
    s.expect("reg_decoded_bbox", (False,), False)
    h["anchor"] = _anchor(t, s.sub("anchor_generator"))
    h["bbox_coder"] = _delta_coder(t, s.sub("bbox_coder", {"type": "DeltaXYWHBBoxCoder"}))
    _losses(t, s, h, ("loss_cls", "loss_bbox"))


def _proposals(t: Translation, s: Section) -> dict:
    nms = s.sub("nms")
    nms.expect("type", ("nms",))
    out = {"nms_pre": s.get("nms_pre", -1), "nms_iou_thr": nms.get("iou_threshold"),
           "max_per_img": s.get("max_per_img"), "min_bbox_size": s.get("min_bbox_size", 0)}
    nms.done()
    s.done()
    return out


# -------------------------------------------------------------------------------------- dense heads

def _retina_head(t: Translation, s: Section, train: Section | None) -> None:
    h = t.config["model"]["bbox_head"] = {"type": "retina"}
    t.config["model"]["num_classes"] = s.get("num_classes")
    h["stacked_convs"] = s.get("stacked_convs", 4)
    s.expect("conv_cfg", (None,), None)
    s.expect("norm_cfg", (None,), None)
    _anchor_head(t, s, h)
    s.done()
    t.rules += _tower_rules("bbox_head", with_norm=False)
    _train_settings(t, train, h, anchors=True)


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
    h["norm"] = _conv_norm(s, {"type": "GN", "num_groups": 32}, ("GN", "BN"))
    _losses(t, s, h, ("loss_cls", "loss_bbox", "loss_centerness"))
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
    h = t.config["model"]["bbox_head"] = {"type": "fsaf"}
    t.config["model"]["num_classes"] = s.get("num_classes")
    s.get("in_channels")
    h["feat_channels"] = s.get("feat_channels", 256)
    h["stacked_convs"] = s.get("stacked_convs", 4)
    s.expect("conv_cfg", (None,), None)
    s.expect("norm_cfg", (None,), None)
    s.expect("reg_decoded_bbox", (True,), False)
    h["anchor"] = _anchor(t, s.sub("anchor_generator"))
    h["bbox_coder"] = _tblr_coder(t, s.sub("bbox_coder"))
    _losses(t, s, h, ("loss_cls", "loss_bbox"))
    if s.get("score_threshold", None) is not None:  # only the logged pos_recall's threshold
        t.dropped.append(f"{s.where}.score_threshold")
    s.done()
    t.rules += _tower_rules("bbox_head", with_norm=False)
    if train is not None:
        h["assigner"] = _assigner(t, train.sub("assigner"))
        if _sampler(t, train.sub("sampler", {"type": "PseudoSampler"}))["type"] != "pseudo":
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
    h["bbox_coder"] = _delta_coder(t, s.sub("bbox_coder", {"type": "DeltaXYWHBBoxCoder"}))
    s.done()
    if train is not None:
        h["assigner"] = _assigner(t, train.sub("assigner"))
        if _sampler(t, train.sub("sampler", {"type": "PseudoSampler"}))["type"] != "pseudo":
            raise t.fail("model.train_cfg.sampler", "SSD mines its negatives: only PseudoSampler is implemented")
        h["allowed_border"] = train.get("allowed_border", -1)
        h["neg_pos_ratio"] = train.get("neg_pos_ratio")
        h["loss_bbox"] = {"type": "smooth_l1", "beta": train.get("smoothl1_beta")}
        train.expect("pos_weight", (-1,), -1)
        train.done(ignore=("debug",))


def _ga_retina_head(t: Translation, s: Section, train: Section | None) -> None:
    """GARetinaHead: RetinaHead's towers, location / shape branches, feature adaption (its
    deformable conv's weight is dettool's ``feature_adaption_*.weight``), the ga train settings."""
    h = t.config["model"]["bbox_head"] = {"type": "ga_retina"}
    t.config["model"]["num_classes"] = s.get("num_classes")
    s.get("in_channels")
    h["feat_channels"] = s.get("feat_channels", 256)
    h["stacked_convs"] = s.get("stacked_convs", 4)
    h["deform_groups"] = s.get("deform_groups", 4)
    s.expect("conv_cfg", (None,), None)
    s.expect("norm_cfg", (None,), None)
    s.expect("reg_decoded_bbox", (False,), False)
    h["approx_anchor"] = _anchor(t, s.sub("approx_anchor_generator"))
    h["square_anchor"] = _anchor(t, s.sub("square_anchor_generator"))
    for key in ("anchor_coder", "bbox_coder"):
        h[key] = _delta_coder(t, s.sub(key, {"type": "DeltaXYWHBBoxCoder"}))
    h["loc_filter_thr"] = s.get("loc_filter_thr", 0.01)
    _losses(t, s, h, ("loss_loc", "loss_shape", "loss_cls", "loss_bbox"))
    s.done()
    t.rules += [*_tower_rules("bbox_head", with_norm=False),
                (r"^bbox_head\.feature_adaption_(cls|reg)\.conv_adaption\.weight$",
                 r"bbox_head.feature_adaption_\1.weight")]
    if train is not None:
        h["ga_assigner"] = _assigner(t, train.sub("ga_assigner"))
        h["ga_sampler"] = _sampler(t, train.sub("ga_sampler", {"type": "PseudoSampler"}))
        h["center_ratio"] = train.get("center_ratio", 0.2)
        h["ignore_ratio"] = train.get("ignore_ratio", 0.5)
        _train_settings(t, train, h, anchors=True)


DENSE_HEADS: dict[str, Callable[[Translation, Section, Section | None], None]] = {
    "SSDHead": _ssd_head, "GARetinaHead": _ga_retina_head,
    "RetinaHead": _retina_head, "FCOSHead": _fcos_head, "FSAFHead": _fsaf_head}


def _rpn_head(t: Translation, s: Section, train: Section | None, train_proposals: Section | None,
              test_proposals: Section) -> None:
    h = t.config["model"]["rpn_head"] = {}
    s.expect("type", ("RPNHead",))
    s.expect("num_convs", (1,), 1)
    s.expect("num_classes", (1,), 1)
    _anchor_head(t, s, h)
    s.done()
    _train_settings(t, train, h, anchors=True)
    if train_proposals is not None:
        h["train_proposals"] = _proposals(t, train_proposals)
    h["test_proposals"] = _proposals(t, test_proposals)


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


def _bbox_head(t: Translation, s: Section, prefix: str, prefix_to: str) -> dict:
    """A ConvFC box head; its weights under ``prefix`` (MMDetection) go to ``prefix_to`` (dettool)."""
    shape = _table(t, {k: (lambda v=v: v) for k, v in _CONV_FC.items()}, s, "RoI box head")()
    convs, fcs = shape if shape else (s.get("num_shared_convs", 0), s.get("num_shared_fcs", 0))
    for key in ("num_cls_convs", "num_cls_fcs", "num_reg_convs", "num_reg_fcs"):
        s.expect(key, (0,), 0)
    h = {"num_shared_convs": convs, "num_shared_fcs": fcs, "conv_out_channels": s.get("conv_out_channels", 256),
         "fc_out_channels": s.get("fc_out_channels", 1024), "norm": _conv_norm(s, None, ("GN",)),
         "reg_class_agnostic": s.get("reg_class_agnostic", False)}
    t.config["model"]["num_classes"] = s.get("num_classes")
    s.get("in_channels")
    s.get("roi_feat_size", 7)
    s.expect("with_avg_pool", (False,), False)
    decoded = s.get("reg_decoded_bbox", False)
    s.expect("predict_box_type", ("hbox",), "hbox")
    coder = _delta_coder(t, s.sub("bbox_coder", {"type": "DeltaXYWHBBoxCoder"}))
    if any(m != 0.0 for m in coder["target_means"]):
        raise t.fail(f"{s.where}.bbox_coder.target_means", "non-zero means are not implemented by dettool")
    h["target_stds"] = coder["target_stds"]
    _losses(t, s, h, ("loss_cls", "loss_bbox"))
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


def _mask_head(t: Translation, s: Section, extractor: Section, prefix: str, prefix_to: str) -> dict:
    """An FCN mask head; its weights under ``prefix`` (MMDetection) go to ``prefix_to`` (dettool)."""
    s.expect("type", ("FCNMaskHead",))
    h = {"num_convs": s.get("num_convs", 4), "conv_out_channels": s.get("conv_out_channels", 256),
         "class_agnostic": s.get("class_agnostic", False), "roi_extractor": _roi_extractor(t, extractor)}
    s.get("in_channels")
    s.get("num_classes")
    s.expect("roi_feat_size", (14,), 14)
    s.expect("conv_kernel_size", (3,), 3)
    s.expect("upsample_cfg", ({"type": "deconv", "scale_factor": 2},), {"type": "deconv", "scale_factor": 2})
    s.expect("conv_cfg", (None,), None)
    h["norm"] = _conv_norm(s, None, ("GN",))
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
                (rf"^{p}\.(upsample|conv_logits)\.", rf"{prefix_to}.\1.")]
    return h


def _standard_roi_head(t: Translation, s: Section, train: Section | None) -> None:
    """StandardRoIHead (Fast / Faster / Mask R-CNN); ``train``: the model's train_cfg."""
    r = t.config["model"]["roi_head"] = {"type": "standard"}
    r["roi_extractor"] = _roi_extractor(t, s.sub("bbox_roi_extractor"))
    r["bbox_head"] = _bbox_head(t, s.sub("bbox_head"), "roi_head.bbox_head", "roi_head.bbox_head")
    if s.get("mask_head", None) is not None:
        r["mask_head"] = _mask_head(t, s.sub("mask_head"), s.sub("mask_roi_extractor"), "roi_head.mask_head",
                                    "roi_head.mask_branch.mask_head")
    s.expect("shared_head", (None,), None)
    s.done()
    _train_settings(t, train and train.sub("rcnn"), r, anchors=False)


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
    coder = _delta_coder(t, head.sub("bbox_coder", {"type": "DeltaXYWHBBoxCoder"}))
    h["target_stds"] = coder["target_stds"]
    _losses(t, head, h, ("loss_cls", "loss_bbox"))
    head.done()
    r = t.config["model"]["roi_head"] = {"type": "double_head", "reg_roi_scale_factor": s.get("reg_roi_scale_factor"),
                                         "roi_extractor": _roi_extractor(t, s.sub("bbox_roi_extractor")),
                                         "bbox_head": h}
    s.expect("mask_head", (None,), None)
    s.done()
    _train_settings(t, train and train.sub("rcnn"), r, anchors=False)


def _cascade(t: Translation, s: Section, train: Any) -> None:
    """CascadeRoIHead: one box head (and mask head) per stage, each stage's training settings."""
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
            _train_settings(t, Section(t, trains[i], f"model.train_cfg.rcnn[{i}]"), stage, anchors=False)
        stages.append(stage)
    extractor = _roi_extractor(t, s.sub("bbox_roi_extractor"))
    r = t.config["model"]["roi_head"] = {"type": "cascade", "roi_extractor": extractor, "stages": stages}
    if s.get("mask_head", None) is not None:
        masks = s.get("mask_head")
        masks = masks if isinstance(masks, list) else [masks] * n
        specs = [_mask_head(t, Section(t, m, f"{s.where}.mask_head[{i}]"), s.sub("mask_roi_extractor"),
                            f"roi_head.mask_head.{i}", f"roi_head.mask_branches.{i}.mask_head")
                 for i, m in enumerate(masks)]
        if any(spec != specs[0] for spec in specs):
            raise t.fail(f"{s.where}.mask_head", "differs between stages, which dettool does not implement")
        r["mask_head"] = specs[0]
    s.expect("shared_head", (None,), None)
    s.done()


ROI_HEADS: dict[str, Callable[[Translation, Section, Any], None]] = {
    "StandardRoIHead": _standard_roi_head, "DoubleHeadRoIHead": _double_head, "CascadeRoIHead": _cascade}


def _nms(t: Translation, s: Section) -> dict:
    """MMDetection's ``nms`` setting: NMS, or Soft-NMS (mmcv's ``soft_nms``: linear by default)."""
    kind = s.expect("type", ("nms", "soft_nms"))
    out = {"nms_iou_thr": s.get("iou_threshold")}
    if kind == "soft_nms":
        method = s.expect("method", ("linear", "gaussian"), "linear")
        out.update(nms_type=f"soft_nms_{method}", soft_nms_sigma=s.get("sigma", 0.5),
                   soft_nms_min_score=s.get("min_score", 1e-3))
    s.done()
    return out


def _rcnn_test(t: Translation, s: Section) -> None:
    t.config["test"] = {"score_thr": s.get("score_thr"), **_nms(t, s.sub("nms")), "max_per_img": s.get("max_per_img"),
                        "mask_thr": s.get("mask_thr_binary", 0.5)}
    s.done()


def _dense_test(t: Translation, s: Section) -> None:
    t.config["test"] = {"score_thr": s.get("score_thr"), "nms_pre": s.get("nms_pre", -1), **_nms(t, s.sub("nms")),
                        "max_per_img": s.get("max_per_img"), "min_bbox_size": s.get("min_bbox_size", -1)}
    s.done()


# ---------------------------------------------------------------------------------------- detectors

def _single_stage(t: Translation, m: Section) -> None:
    t.config["model"] = {"type": "single_stage"}
    out = _table(t, BACKBONES, m.sub("backbone"), "backbone")(t, m.sub("backbone"))
    _necks(t, m, out)
    head = m.sub("bbox_head")
    train = m.sub("train_cfg") if m.get("train_cfg", None) is not None else None
    _table(t, DENSE_HEADS, head, "dense head")(t, head, train)
    _dense_test(t, m.sub("test_cfg"))


def _features(t: Translation, m: Section, kind: str) -> tuple[Section | None, Section]:
    """Model type, backbone and neck; returns the train_cfg (or None) and test_cfg sections."""
    t.config["model"] = {"type": kind}
    out = _table(t, BACKBONES, m.sub("backbone"), "backbone")(t, m.sub("backbone"))
    _necks(t, m, out)
    return (m.sub("train_cfg") if m.get("train_cfg", None) is not None else None), m.sub("test_cfg")


def _rpn(t: Translation, m: Section) -> None:
    """An RPN alone (evaluated by proposal recall); its class count is the dataset's (COCO: 80)."""
    train, test = _features(t, m, "rpn")
    _rpn_head(t, m.sub("rpn_head"), train and train.sub("rpn"), None, test.sub("rpn"))
    t.config["model"]["num_classes"] = 80
    for section in (train, test):
        if section is not None:
            section.done()


def _two_stage(t: Translation, m: Section) -> None:
    """Fast (no rpn_head: proposals from files), Faster, Mask and Cascade R-CNN."""
    train, test = _features(t, m, "two_stage")
    if m.type == "FastRCNN":
        t.config["model"]["rpn_head"] = None
    else:
        _rpn_head(t, m.sub("rpn_head"), train and train.sub("rpn"), train and train.sub("rpn_proposal"),
                  test.sub("rpn"))
    roi = m.sub("roi_head")
    _table(t, ROI_HEADS, roi, "RoI head")(t, roi, train)
    _rcnn_test(t, test.sub("rcnn"))
    for section in (train, test):
        if section is not None:
            section.done()


DETECTORS: dict[str, Callable[[Translation, Section], None]] = {
    "RetinaNet": _single_stage, "FCOS": _single_stage, "RPN": _rpn, "FastRCNN": _two_stage, "FasterRCNN": _two_stage,
    "MaskRCNN": _two_stage, "CascadeRCNN": _two_stage, "FSAF": _single_stage, "SingleStageDetector": _single_stage}


# ---------------------------------------------------------------------------------------- data, train

def _preprocessor(t: Translation, s: Section) -> None:
    s.expect("type", ("DetDataPreprocessor",))
    s.expect("pad_mask", (True, False), False)
    s.expect("pad_value", (0,), 0)
    s.expect("boxtype2tensor", (True,), True)
    d = t.config.setdefault("data", {})
    d["channel_order"] = "rgb" if s.get("bgr_to_rgb", False) else "bgr"  # MMDetection decodes BGR
    d["mean"], d["std"] = list(s.get("mean")), list(s.get("std"))
    d["size_divisor"] = s.get("pad_size_divisor", 1)
    if s.get("batch_augments", None):  # training-time batch transforms (LSJ's fixed-size padding)
        t.dropped.append(f"{s.where}.batch_augments ({', '.join(a.get('type', '?') for a in s.d['batch_augments'])})")
    s.done()


def _scale(t: Translation, s: Section) -> str:
    """A ``Resize``'s scale: keeping the ratio ``LONGxSHORT``; without (SSD) the exact ``WxH``,
    and ``data.keep_ratio`` false (train and test must agree)."""
    scale = s.get("scale")
    keep = s.expect("keep_ratio", (True, False), False)
    if not (isinstance(scale, (list, tuple)) and len(scale) == 2):
        raise t.fail(f"{s.where}.scale", f"{scale!r} is not one (width, height) scale")
    d = t.config.setdefault("data", {})
    if d.get("keep_ratio", True) != keep and ("train_scale" in d or "test_scale" in d):
        raise t.fail(f"{s.where}.keep_ratio", f"{keep} here, {not keep} in the other pipeline: dettool's train "
                                              "and test pipelines share data.keep_ratio")
    if keep:
        return f"{max(scale)}x{min(scale)}"
    d["keep_ratio"] = False
    return f"{scale[0]}x{scale[1]}"


def _ssd_transform(t: Translation, s: Section) -> dict:
    """SSD's augmentations as dettool's pipeline steps (same names and settings)."""
    step: dict = {"type": s.type}
    if s.type == "Expand":
        d = t.config.get("data", {})
        rgb = d.get("channel_order") == "rgb"
        if list(s.get("mean", (0, 0, 0))) != d.get("mean") or s.get("to_rgb", True) != rgb:
            raise t.fail(f"{s.where}.mean", "dettool's Expand fills with data.mean (the data_preprocessor's, in its "
                                            "channel order); this one differs")
        step.update(ratio_range=list(s.get("ratio_range", (1, 4))), prob=s.get("prob", 0.5))
        s.expect("seg_ignore_label", (None,), None)
    elif s.type == "MinIoURandomCrop":
        step.update(min_ious=list(s.get("min_ious", (0.1, 0.3, 0.5, 0.7, 0.9))),
                    min_crop_size=s.get("min_crop_size", 0.3), bbox_clip_border=s.get("bbox_clip_border", True))
    else:
        step.update(brightness_delta=s.get("brightness_delta", 32),
                    contrast_range=list(s.get("contrast_range", (0.5, 1.5))),
                    saturation_range=list(s.get("saturation_range", (0.5, 1.5))), hue_delta=s.get("hue_delta", 18))
    s.done()
    return step


_SSD_TRANSFORMS = ("Expand", "MinIoURandomCrop", "PhotoMetricDistortion")


_LOADING = ("LoadImageFromFile", "LoadAnnotations", "LoadProposals", "PackDetInputs")


def _flat(pipeline: list) -> list:
    """The steps of a pipeline with ``ProposalBroadcaster`` wrappers opened (they apply their
    transforms to the image and its proposals alike, as dettool's transforms do)."""
    out = []
    for step in pipeline:
        if isinstance(step, dict) and step.get("type") == "ProposalBroadcaster":
            out += _flat(step.get("transforms", []))
        else:
            out.append(step)
    return out


def _multi_scale(step: dict) -> str | None:
    """MMDetection's multi-scale resizes in the paper's notation: ``RandomResize`` between two
    scales (range mode), ``RandomChoiceResize`` over evenly spaced ones (value mode); None when
    the scales do not share their long side or are not evenly spaced, or the ratio is not kept."""
    scales = step.get("scale") if step.get("type") == "RandomResize" else step.get("scales")
    if (not step.get("keep_ratio") or not isinstance(scales, (list, tuple)) or len(scales) < 2
            or not all(isinstance(s, (list, tuple)) and len(s) == 2 for s in scales)):
        return None
    longs, shorts = {max(s) for s in scales}, sorted(min(s) for s in scales)
    if len(longs) != 1:
        return None
    if step["type"] == "RandomResize":
        return f"{longs.pop()}x[{shorts[0]}:{shorts[-1]}]" if len(scales) == 2 else None
    steps = {b - a for a, b in zip(shorts, shorts[1:])}
    return f"{longs.pop()}x[{shorts[0]}:{shorts[-1]}:{steps.pop()}]" if len(steps) == 1 else None


def _dataset(ds: dict) -> tuple[dict, int]:
    """The dataset inside MMDetection's ``RepeatDataset`` wrappers and how many times it repeats
    per epoch (dettool counts those passes as epochs)."""
    times = 1
    while isinstance(ds, dict) and ds.get("type") == "RepeatDataset":
        times *= int(ds.get("times", 1))
        ds = ds.get("dataset", {})
    return (ds if isinstance(ds, dict) else {}), times


def _pipelines(t: Translation, cfg: dict) -> None:
    d = t.config.setdefault("data", {})
    test = cfg.get("test_dataloader", {}).get("dataset", {}).get("pipeline") or cfg.get("test_pipeline") or []
    for i, step in enumerate(_flat(test)):
        s = Section(t, step, f"test_pipeline[{i}]")
        if s.type == "Resize":
            d["test_scale"] = _scale(t, s)
            s.done()
        elif s.type not in _LOADING:
            raise t.fail(f"{s.where}.type", f"test transform {s.type!r} is not implemented by dettool")
    train_ds, _ = _dataset(cfg.get("train_dataloader", {}).get("dataset", {}))
    steps: list[dict] = []
    for i, step in enumerate(_flat(train_ds.get("pipeline") or [])):
        s = Section(t, step, f"train_pipeline[{i}]")
        if s.type == "Resize":
            d["train_scale"] = _scale(t, s)
            steps.append({"type": "Resize"})
        elif s.type in ("RandomResize", "RandomChoiceResize") and _multi_scale(step):
            d["train_scale"] = _multi_scale(step)
            steps.append({"type": "Resize"})
        elif s.type == "RandomFlip":
            d["flip_prob"] = s.get("prob")
            steps.append({"type": "RandomFlip"})
        elif s.type in _SSD_TRANSFORMS:
            steps.append(_ssd_transform(t, s))
        elif s.type not in _LOADING:
            t.dropped.append(f"{s.where} ({s.type})")
    if any(step["type"] in _SSD_TRANSFORMS for step in steps):  # otherwise dettool's default pipeline
        d["train_pipeline"] = steps + [{"type": "Normalize"}, {"type": "Pad"}]
    for split, key in (("train", "train_dataloader"), ("val", "val_dataloader")):
        ds = train_ds if split == "train" else cfg.get(key, {}).get("dataset", {})
        root = ds.get("data_root", "")
        if "ann_file" in ds:
            d[split] = {"ann_file": root + ds["ann_file"], "img_dir": root + ds.get("data_prefix", {}).get("img", "")}
        if ds.get("proposal_file"):  # MMDetection's pickled proposals: dettool reads its own .pt files
            t.dropped.append(f"{key}.dataset.proposal_file ({ds['proposal_file']}: write dettool proposals "
                             f"files with an RPN and set data.{split}.proposals_file)")


def _training(t: Translation, cfg: dict) -> None:
    tr = t.config.setdefault("train", {})
    loop = cfg.get("train_cfg") or {}
    _, repeat = _dataset(cfg.get("train_dataloader", {}).get("dataset", {}))  # RepeatDataset: x passes per epoch
    if loop.get("type") == "EpochBasedTrainLoop":
        tr["max_epochs"] = loop.get("max_epochs") * repeat
    if bs := cfg.get("train_dataloader", {}).get("batch_size"):
        tr["batch_size"] = bs
    opt = (cfg.get("optim_wrapper") or {}).get("optimizer") or {}
    if opt.get("type") == "SGD":
        tr["optimizer"] = {"type": "sgd", "lr": opt.get("lr"), "momentum": opt.get("momentum", 0.0),
                           "weight_decay": opt.get("weight_decay", 0.0), "decay_norm_and_bias": True}
    elif opt:
        t.dropped.append(f"optim_wrapper.optimizer ({opt.get('type')})")
    wrapper = cfg.get("optim_wrapper") or {}
    for key in sorted(set(wrapper) - {"type", "optimizer", "clip_grad"}):
        t.dropped.append(f"optim_wrapper.{key}")
    if wrapper.get("type", "OptimWrapper") != "OptimWrapper":
        t.dropped.append(f"optim_wrapper.type ({wrapper['type']}: dettool's mixed precision is train.amp)")
    clip = wrapper.get("clip_grad") or {}
    if clip and "optimizer" in tr and clip.get("norm_type", 2) == 2:
        tr["optimizer"]["grad_clip"] = clip.get("max_norm")
    elif clip:
        t.dropped.append("optim_wrapper.clip_grad")
    lr: dict = {}
    for i, sch in enumerate(cfg.get("param_scheduler") or []):
        if sch.get("type") == "LinearLR" and not sch.get("by_epoch", True):
            lr.update(warmup="linear", warmup_iters=sch.get("end"), warmup_ratio=sch.get("start_factor"))
        elif sch.get("type") == "ConstantLR" and not sch.get("by_epoch", True):
            lr.update(warmup="constant", warmup_iters=sch.get("end"), warmup_ratio=sch.get("factor"))
        elif sch.get("type") == "MultiStepLR" and sch.get("by_epoch", True):
            lr.update(policy="step", steps=[m * repeat for m in sch.get("milestones")], gamma=sch.get("gamma", 0.1))
        else:
            t.dropped.append(f"param_scheduler[{i}] ({sch.get('type')})")
    if lr:
        tr["lr"] = lr


def translate_config(cfg: dict, source: str) -> Translation:
    """The dettool config (a raw dict, as YAML holds it) and weight rules for an MMDetection config."""
    t = Translation(source)
    if not isinstance(cfg.get("model"), dict):
        raise t.fail("model", "no model section: not a detector config (a fragment for its _base_ list?)")
    model = Section(t, cfg.get("model"), "model")
    _table(t, DETECTORS, model, "model type")(t, model)
    if model.get("data_preprocessor", None) is not None:
        _preprocessor(t, model.sub("data_preprocessor"))
    model.done()
    _pipelines(t, cfg)
    _training(t, cfg)
    return t


# ------------------------------------------------------------------------------------------- weights

def convert_state_dict(state: dict, t: Translation, expected: dict, source: str) -> dict:
    """``state`` renamed by ``t.rules``; it must hold exactly ``expected``'s names and shapes."""
    renamed = {name: _rename(t.rules + [(r"^data_preprocessor\.", None)], name) for name in state}
    out = {new: state[name] for name, new in renamed.items() if new is not None}
    missing = [k for k in expected if k not in out]
    extra = [k for k in out if k not in expected]
    if missing or extra:
        what = f"lacks {missing[0]!r}" if missing else f"has {extra[0]!r}, which the model does not"
        raise CheckpointError(f"{source}: does not match the config's architecture: it {what} "
                              f"({len(missing)} missing, {len(extra)} unexpected; a checkpoint of another model?)")
    for k, v in out.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise CheckpointError(f"{source}: {k} has shape {tuple(v.shape)}, the config's model "
                                  f"{tuple(expected[k].shape)} (a checkpoint of another model?)")
    return out


def _rename(rules: list, name: str) -> str | None:
    """``name`` after every rule; None when a rule drops it (a constant dettool derives from the config)."""
    for pattern, repl in rules:
        if repl is None:
            if re.search(pattern, name):
                return None
            continue
        name = re.sub(pattern, repl, name)
    return name

