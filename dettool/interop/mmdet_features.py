"""MMDetection backbones and necks -> dettool's (config keys and weight renaming rules)."""
from __future__ import annotations

from typing import Callable

from dettool.interop.mmdet_section import Section, Translation, table_entry

# ---------------------------------------------------------------------------------------- backbones

def _norm(t: Translation, s: Section) -> str:
    """A ResNet's or HRNet's ``norm_cfg`` as dettool's ``norm`` (and ``gn_groups``), with the
    weight renaming rules it needs: dettool's frozen BN (torchvision's) keeps no batch counter,
    and MMDetection names GroupNorm layers after their type (``gn1``) where dettool keeps ``bn1``."""
    norm = s.sub("norm_cfg", {"type": "BN", "requires_grad": True})
    kind = norm.expect("type", ("BN", "SyncBN", "GN"))
    trainable = norm.get("requires_grad", True)
    groups = norm.get("num_groups", None)
    norm.done()
    if kind == "GN":
        t.config["model"]["backbone"]["gn_groups"] = groups
        t.rules.append((r"^(backbone\.(?:.*\.)?)gn(\d)\.", r"\1bn\2."))
        return "gn"
    if not trainable:
        t.rules.append((r"^backbone\..*\.num_batches_tracked$", None))
        return "frozen_bn"
    return "syncbn" if kind == "SyncBN" else "bn"


def _context_block(t: Translation, s: Section) -> dict:
    """mmcv's ContextBlock (GCNet)."""
    out = {"type": "context_block", "ratio": float(s.get("ratio")),
           "pooling_type": s.expect("pooling_type", ("att", "avg"), "att"),
           "fusion_types": list(s.get("fusion_types", ("channel_add",)))}
    s.done()
    return out


def _generalized_attention(t: Translation, s: Section) -> dict:
    """mmcv's GeneralizedAttention (mmcv's defaults where the config is silent: 9 heads, '1111')."""
    s.expect("spatial_range", (-1,), -1)
    switches = str(s.get("attention_type", "1111"))
    if len(switches) == 4 and switches[1] == "1" and switches[3] == "0":
        # mmcv adds the row-offset term of the query-content / position pair with the queries
        # transposed (wrong unless H == W); dettool computes the paper's sum
        raise t.fail(f"{s.where}.attention_type", f"{switches!r} (query content and position without the "
                                                   "position bias) differs in mmcv: not converted by dettool")
    dim = s.get("position_embedding_dim", -1)
    out = {"type": "generalized_attention", "attention_type": switches, "num_heads": s.get("num_heads", 9),
           "kv_stride": s.get("kv_stride", 2), "q_stride": s.get("q_stride", 1),
           "position_embedding_dim": dim if dim > 0 else None,
           "position_magnitude": s.get("position_magnitude", 1)}
    s.done()
    return out


# mmcv plugin type -> (its module name in a block, mmcv's ``_abbr_``; the translator)
PLUGINS: dict[str, tuple[str, Callable[[Translation, Section], dict]]] = {
    "ContextBlock": ("context_block", _context_block),
    "GeneralizedAttention": ("gen_attention_block", _generalized_attention)}


def stage_plugins(t: Translation, s: Section) -> list[dict]:
    """A ResNet's ``plugins`` (each ``cfg``, ``stages``, ``position``) as dettool's stage plugins.

    MMDetection names a plugin in a block after its type (``layer2.0.context_block``, plus the
    cfg's ``postfix``); dettool puts it in the position's slot (``layer2.0.after_conv3.0``), in
    the order of the list among the plugins of that position in that stage."""
    out, slots = [], {}  # slots: (stage, position) -> plugins already there
    for i, value in enumerate(s.get("plugins", None) or []):
        entry = Section(t, value, f"{s.where}.plugins[{i}]")
        position = entry.expect("position", ("after_conv1", "after_conv2", "after_conv3"))
        stages = entry.get("stages", None)
        if stages is not None and len(stages) != 4:
            raise t.fail(f"{entry.where}.stages", f"{len(stages)} flags for 4 stages")
        stages = [True] * 4 if stages is None else [bool(x) for x in stages]  # absent: every stage
        cfg = entry.sub("cfg")
        name, translate = PLUGINS.get(cfg.type, (None, None))
        if translate is None:
            raise t.fail(f"{cfg.where}.type", f"plugin {cfg.type!r} is not implemented by dettool convert "
                                              f"(supported: {', '.join(sorted(PLUGINS))})")
        name += str(cfg.get("postfix", ""))
        out.append({**translate(t, cfg), "stages": stages, "position": position})
        entry.done()
        for k in (k for k in range(4) if stages[k]):
            index = slots.get((k, position), 0)
            slots[(k, position)] = index + 1
            t.rules.append((rf"^backbone\.layer{k + 1}\.(\d+)\.{name}\.",
                            rf"backbone.layer{k + 1}.\1.{position}.{index}."))
    return out


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
    stages = [bool(x) for x in s.get("stage_with_dcn", (False,) * 4)]
    b["plugins"] = []
    if s.get("dcn", None) is not None:
        dcn = s.sub("dcn")
        kind = dcn.expect("type", ("DCN", "DCNv2"))
        dcn.expect("fallback_on_stride", (False,), False)
        b["plugins"] = [{"type": "dcn", "stages": stages, "modulated": kind == "DCNv2",
                         "deform_groups": dcn.get("deform_groups", 1)}]
        dcn.done()
    elif any(stages):
        raise t.fail(f"{s.where}.stage_with_dcn", "set without a dcn section")
    b["plugins"] += stage_plugins(t, s)
    if s.type == "ResNeXt":
        b["groups"] = s.get("groups")
        b["width_per_group"] = s.get("base_width")
    b["norm"] = _norm(t, s)
    b["conv"] = conv_kind(s)
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


def _hrnet(t: Translation, s: Section) -> tuple[int, ...]:
    """HRNet (HRNetV2p): its ``extra`` stages; dettool's module names are MMDetection's."""
    b = t.config["model"]["backbone"] = {"type": "hrnet"}
    extra = s.sub("extra")
    for k in range(1, 5):
        stage = extra.sub(f"stage{k}")
        if k == 1:  # MMDetection builds stage 1 as one run of blocks whatever these say
            stage.expect("num_modules", (1,))
            stage.expect("num_branches", (1,))
        b[f"stage{k}"] = {"num_modules": stage.get("num_modules"), "num_branches": stage.get("num_branches"),
                          "block": stage.expect("block", ("BASIC", "BOTTLENECK")).lower(),
                          "num_blocks": list(stage.get("num_blocks")), "num_channels": list(stage.get("num_channels"))}
        stage.done()
    extra.done()
    s.expect("in_channels", (3,), 3)
    s.expect("conv_cfg", (None,), None)
    s.expect("with_cp", (False,), False)
    s.expect("multiscale_output", (True,), True)
    s.expect("zero_init_residual", (True, False), False)  # initialisation only
    s.expect("pretrained", (None,), None)
    b["norm"] = _norm(t, s)
    b["norm_eval"] = bool(s.get("norm_eval", True))
    b["weights"] = None
    s.done()
    return tuple(range(len(b["stage4"]["num_channels"])))


BACKBONES: dict[str, Callable[[Translation, Section], tuple[int, ...]]] = {
    "ResNet": _resnet, "ResNeXt": _resnet, "SSDVGG": _ssd_vgg, "HRNet": _hrnet}


# -------------------------------------------------------------------------------------------- necks

def conv_norm(s: Section, default: dict | None, allowed: tuple[str, ...]) -> str:
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


def conv_kind(s: Section) -> str:
    """A backbone's, neck's or head's ``conv_cfg`` as dettool's ``conv`` names it: 'conv' (absent,
    or mmcv's plain Conv) or 'ws' (mmcv's ConvWS, weight standardization with its eps 1e-5)."""
    if s.get("conv_cfg", None) is None:
        return "conv"
    conv = s.sub("conv_cfg")
    kind = conv.expect("type", ("Conv", "Conv2d", "ConvWS"))
    if kind == "ConvWS":
        conv.expect("eps", (1e-5,), 1e-5)
    conv.done()
    return "ws" if kind == "ConvWS" else "conv"


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
    n["norm"] = conv_norm(s, None, ("GN", "BN"))
    n["conv"] = conv_kind(s)
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


def _hrfpn(t: Translation, s: Section, inputs: tuple[int, ...]) -> int:
    """MMDetection's HRFPN (same weight names: ``reduction_conv.conv.*``, ``fpn_convs.<i>.conv.*``)."""
    n = t.config["model"]["neck"] = {"type": "hrfpn"}
    if len(s.get("in_channels")) != len(inputs):
        raise t.fail(f"{s.where}.in_channels", f"{len(s.get('in_channels'))} inputs for {len(inputs)} backbone outputs")
    n["out_channels"] = s.get("out_channels")
    n["num_outs"] = s.get("num_outs", 5)
    n["pooling_type"] = s.expect("pooling_type", ("AVG", "MAX"), "AVG").lower()
    n["stride"] = s.get("stride", 1)
    s.get("norm_cfg", None)  # MMDetection's HRFPN passes it to none of its convs
    s.expect("conv_cfg", (None,), None)
    s.expect("with_cp", (False,), False)
    s.done()
    return n["num_outs"]


NECKS: dict[str, Callable[[Translation, Section, tuple[int, ...]], int]] = {"FPN": _fpn, "BFP": _bfp,
                                                                           "SSDNeck": _ssd_neck, "HRFPN": _hrfpn}


def translate_necks(t: Translation, m: Section, backbone_out: tuple[int, ...]) -> None:
    """``model.neck``: one neck, or a list applied in order (Libra R-CNN's FPN then BFP), which
    dettool holds as a neck sequence: MMDetection's ``neck.<i>.`` weights are ``neck.necks.<i>.``."""
    if not isinstance(m.get("neck"), list):
        table_entry(t, NECKS, m.sub("neck"), "neck")(t, m.sub("neck"), backbone_out)
        return
    necks, inputs = [], backbone_out
    for i, value in enumerate(m.get("neck")):
        s = Section(t, value, f"{m.where}.neck[{i}]")
        first_rule = len(t.rules)
        levels = table_entry(t, NECKS, s, "neck")(t, s, inputs)
        necks.append(t.config["model"].pop("neck"))
        inputs = tuple(range(levels))
        for j, (pattern, repl) in enumerate(t.rules[first_rule:], start=first_rule):
            if not pattern.startswith(r"^neck\.") or not isinstance(repl, (str, type(None))):
                raise t.fail(f"{m.where}.neck[{i}]", f"{s.type} cannot be placed in a list of necks by dettool convert")
            t.rules[j] = (rf"^neck\.{i}\." + pattern[len(r"^neck\."):],
                          repl if repl is None else f"neck.necks.{i}." + repl.removeprefix("neck."))
    t.config["model"]["neck"] = necks
