"""torchvision's COCO detection models as dettool configs and state dicts.

One table entry per model name: the dettool config that computes what torchvision's model
computes (architecture, anchors, test-time settings, pre-processing) and the rules that rename
its parameters. Where torchvision differs from MMDetection's conventions dettool has an option
for it (``AnchorConfig.sizes / round_base / stride_from_input``, ``FCOSHeadConfig.point_offset /
test_score``, ``RoIExtractorConfig.aligned``, ``RPNHeadConfig.num_convs``, BN in the RoI heads,
``data.category_ids``); the converted config sets them.

Class layout: torchvision's COCO models score 91 classes, index 0 "__background__" and 11 "N/A"
slots among COCO's ids 1-90. The sigmoid heads (RetinaNet, FCOS) keep all 91 as classes (the
background index is a class they can, rarely, detect: category id 0, which COCO ignores); the
softmax heads (Faster / Mask R-CNN, SSD) keep ids 1-90 as 90 classes, torchvision's background
column moving to dettool's last one (in SSD's convs, within each anchor's group) and its
background box and mask rows dropped.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from dettool.errors import CheckpointError, ConfigError

RETINA_SIZES = tuple((x, int(x * 2 ** (1.0 / 3)), int(x * 2 ** (2.0 / 3))) for x in (32, 64, 128, 256, 512))
RPN_SIZES = ((32,), (64,), (128,), (256,), (512,))


def _below(value: float) -> float:
    """The float32 just below ``value``'s float32: dettool's ``x > m`` then equals torchvision's
    ``x >= value`` on float32 boxes (``remove_small_boxes``)."""
    return float(np.nextafter(np.float32(value), np.float32(0)))


@dataclass(frozen=True)
class TorchvisionModel:
    """A torchvision detection model as dettool sees it.

    ``kind``: ``retinanet`` | ``fcos`` | ``ssd`` | ``faster`` | ``mask``; ``v2``: the ``_v2`` variant
    (BN in backbone, FPN and RoI heads, GN in the RetinaNet head, P6 from C5, two RPN convs).
    """

    kind: str
    v2: bool

    @property
    def softmax(self) -> bool:
        return self.kind in ("faster", "mask", "ssd")

    @property
    def num_classes(self) -> int:
        return 90 if self.softmax else 91

    @property
    def category_ids(self) -> list[int]:
        return list(range(1, 91)) if self.softmax else list(range(91))


MODELS: dict[str, TorchvisionModel] = {
    "retinanet_resnet50_fpn": TorchvisionModel("retinanet", False),
    "retinanet_resnet50_fpn_v2": TorchvisionModel("retinanet", True),
    "fcos_resnet50_fpn": TorchvisionModel("fcos", False),
    "ssd300_vgg16": TorchvisionModel("ssd", False),
    "fasterrcnn_resnet50_fpn": TorchvisionModel("faster", False),
    "fasterrcnn_resnet50_fpn_v2": TorchvisionModel("faster", True),
    "maskrcnn_resnet50_fpn": TorchvisionModel("mask", False),
    "maskrcnn_resnet50_fpn_v2": TorchvisionModel("mask", True),
}


def model_spec(name: str) -> TorchvisionModel:
    if name not in MODELS:
        raise ConfigError(f"{name}: not a torchvision model dettool converts (one of: {', '.join(MODELS)})")
    return MODELS[name]


def coco_category_names() -> list[str]:
    """torchvision's 91 COCO names (index = category id; "__background__" and "N/A" slots)."""
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

    return list(FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"])


# ----------------------------------------------------------------------------------- configs


def _backbone(m: TorchvisionModel) -> dict:
    # torchvision's v1 weights use FrozenBatchNorm2d, v2 BatchNorm2d (eval: the same computation)
    return {"type": "resnet", "depth": 50, "style": "pytorch", "norm": "bn" if m.v2 else "frozen_bn",
            "norm_eval": True, "frozen_stages": 1,
            "out_indices": [0, 1, 2, 3] if m.softmax else [1, 2, 3]}


def _neck(m: TorchvisionModel) -> dict:
    if m.softmax:  # P2-P5 and P6 by max pooling (LastLevelMaxPool)
        return {"type": "fpn", "out_channels": 256, "num_outs": 5, "add_extra_convs": "none",
                "norm": "bn" if m.v2 else "none"}
    # LastLevelP6P7: P6 from P5 (v1, 256 in) or C5 (v2, 2048 in), ReLU before P7
    return {"type": "fpn", "out_channels": 256, "num_outs": 5, "relu_before_extra_convs": True,
            "add_extra_convs": "on_input" if m.v2 else "on_output", "norm": "none"}


def _anchor(sizes: tuple, strides: list[int]) -> dict:
    return {"strides": strides, "ratios": [0.5, 1.0, 2.0], "sizes": [list(s) for s in sizes],
            "round_base": True, "stride_from_input": True}


SSD300_SIZES = ([21, 45, 99, 153, 207, 261], [45, 99, 153, 207, 261, 315])  # scales 0.07 ... 1.05 of 300


def _ssd300() -> dict:
    """torchvision's SSD300: MMDetection's SSDVGG numbering (torchvision ceil-rounds only pool3, which
    at SSD's 300x300 input gives the same sizes), its L2 norm and extra levels in SSDNeck, and
    DefaultBoxGenerator's boxes (the sizes above, sides capped at the input: clip=True)."""
    return {"type": "single_stage", "num_classes": 90,
            "backbone": {"type": "ssd_vgg", "depth": 16, "with_last_pool": False, "ceil_mode": True,
                         "out_feature_indices": [22, 34]},
            "neck": {"type": "ssd_neck", "out_channels": [512, 1024, 512, 256, 256, 256],
                     "level_strides": [2, 2, 1, 1], "level_paddings": [1, 1, 0, 0], "l2_norm_scale": 20.0},
            "bbox_head": {"type": "ssd", "anchor": {
                "type": "ssd", "input_size": 300, "strides": [8, 16, 32, 64, 100, 300],
                "ratios": [[2], [2, 3], [2, 3], [2, 3], [2], [2]], "min_sizes": SSD300_SIZES[0],
                "max_sizes": SSD300_SIZES[1], "clip_to_input": True},
                "bbox_coder": {"target_means": [0.0] * 4, "target_stds": [0.1, 0.1, 0.2, 0.2]}}}


def _model(m: TorchvisionModel) -> dict:
    if m.kind == "ssd":
        return _ssd300()
    model: dict = {"num_classes": m.num_classes, "backbone": _backbone(m), "neck": _neck(m)}
    if m.kind == "retinanet":
        model["type"] = "single_stage"
        model["bbox_head"] = {"type": "retina", "feat_channels": 256, "stacked_convs": 4,
                              "norm": "gn" if m.v2 else "none",
                              "anchor": _anchor(RETINA_SIZES, [8, 16, 32, 64, 128])}
        return model
    if m.kind == "fcos":
        model["type"] = "single_stage"
        model["bbox_head"] = {"type": "fcos", "feat_channels": 256, "stacked_convs": 4, "norm": "gn",
                              "conv_bias": True, "strides": [8, 16, 32, 64, 128], "norm_on_bbox": True,
                              "centerness_on_reg": True, "center_sampling": True, "point_offset": 0.0,
                              "stride_from_input": True, "test_score": "sqrt_cls_centerness"}
        return model
    model["type"] = "two_stage"
    model["rpn_head"] = {"type": "rpn", "feat_channels": 256, "num_convs": 2 if m.v2 else 1,
                         "anchor": _anchor(RPN_SIZES, [4, 8, 16, 32, 64]),
                         "train_proposals": {"nms_pre": 2000, "nms_iou_thr": 0.7, "max_per_img": 2000,
                                             "min_bbox_size": _below(1e-3)},
                         "test_proposals": {"nms_pre": 1000, "nms_iou_thr": 0.7, "max_per_img": 1000,
                                            "min_bbox_size": _below(1e-3)}}
    extractor = {"output_size": 7, "strides": [4, 8, 16, 32], "sampling_ratio": 2, "finest_scale": 56,
                 "aligned": False}
    bbox_head = ({"num_shared_convs": 4, "conv_out_channels": 256, "norm": "bn", "num_shared_fcs": 1,
                  "fc_out_channels": 1024} if m.v2 else {"num_shared_fcs": 2, "fc_out_channels": 1024})
    model["roi_head"] = {"type": "standard", "roi_extractor": extractor, "bbox_head": bbox_head,
                         "sampler": {"type": "random", "num": 512, "pos_fraction": 0.25, "add_gt_as_proposals": True}}
    if m.kind == "mask":
        model["roi_head"]["mask_head"] = {"num_convs": 4, "conv_out_channels": 256, "norm": "bn" if m.v2 else "none",
                                          "roi_extractor": dict(extractor, output_size=14)}
    return model


_TEST = {  # torchvision's defaults of each model's constructor
    "retinanet": {"score_thr": 0.05, "nms_pre": 1000, "nms_iou_thr": 0.5, "max_per_img": 300},
    "fcos": {"score_thr": 0.2, "nms_pre": 1000, "nms_iou_thr": 0.6, "max_per_img": 100},
    "ssd": {"score_thr": 0.01, "nms_pre": 400, "nms_pre_per_class": True, "nms_iou_thr": 0.45, "max_per_img": 200},
    "faster": {"score_thr": 0.05, "nms_iou_thr": 0.5, "max_per_img": 100, "min_bbox_size": _below(1e-2)},
    "mask": {"score_thr": 0.05, "nms_iou_thr": 0.5, "max_per_img": 100, "min_bbox_size": _below(1e-2),
             "mask_thr": 0.5, "mask_paste": "torchvision"},
}


def build_config(name: str, ann_file: str, img_dir: str) -> dict:
    """The dettool config (a plain dict, as YAML holds it) of torchvision's ``name``, evaluated on
    ``ann_file`` / ``img_dir`` (COCO val2017 by default)."""
    m = model_spec(name)
    split = {"ann_file": ann_file, "img_dir": img_dir}
    if m.kind == "ssd":
        # GeneralizedRCNNTransform(fixed_size=(300, 300)): RGB in [0, 1] minus (0.48235, 0.45882, 0.40784),
        # divided by 1 / 255 (in 0-255 units: minus the mean x 255, std 1); training as torchvision's
        # SSD recipe (photometric distortion, zoom out 1-4 with the mean, IoU crop, flip)
        pipeline = [{"type": "PhotoMetricDistortion"}, {"type": "Expand", "ratio_range": [1, 4]},
                    {"type": "MinIoURandomCrop"}, {"type": "Resize"}, {"type": "RandomFlip"},
                    {"type": "Normalize"}, {"type": "Pad"}]
        return {"model": _model(m),
                "data": {"train": split, "val": split, "train_scale": "300x300", "test_scale": "300x300",
                         "keep_ratio": False, "train_pipeline": pipeline, "channel_order": "rgb",
                         "mean": [0.48235 * 255, 0.45882 * 255, 0.40784 * 255], "std": [1.0, 1.0, 1.0],
                         "size_divisor": 1, "category_ids": m.category_ids},
                "test": dict(_TEST[m.kind])}
    return {
        "model": _model(m),
        # GeneralizedRCNNTransform: ImageNet mean / std on RGB in [0, 1] (the same in 0-255 units),
        # shorter side 800 capped at 1333, padding to a multiple of 32
        "data": {"train": split, "val": split, "train_scale": "1333x800", "test_scale": "1333x800",
                 "channel_order": "rgb", "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375],
                 "size_divisor": 32, "category_ids": m.category_ids},
        "test": dict(_TEST[m.kind]),
    }


# ----------------------------------------------------------------------------------- weights

Rule = tuple[str, str]


def _fpn_rules(m: TorchvisionModel) -> list[Rule]:
    # the lateral and output blocks are laid out as dettool's: (conv, [BN]) per level
    return [(r"backbone\.fpn\.(inner|layer)_blocks\.(.+)$", r"neck.fpn.\1_blocks.\2"),
            (r"backbone\.fpn\.extra_blocks\.p6\.(.+)$", r"neck.fpn.extra_blocks.convs.0.\1"),
            (r"backbone\.fpn\.extra_blocks\.p7\.(.+)$", r"neck.fpn.extra_blocks.convs.1.\1")]


def _dense_rules(m: TorchvisionModel) -> list[Rule]:
    cls, reg = r"head\.classification_head", r"head\.regression_head"
    if m.kind == "retinanet":  # conv.{i}: (conv, [GN,] ReLU) -> the flat tower's {conv} / {norm}
        tower = [(cls + r"\.conv\.(\d+)\.0\.(.+)$", "bbox_head.cls_convs.{conv}.{rest}"),
                 (cls + r"\.conv\.(\d+)\.1\.(.+)$", "bbox_head.cls_convs.{norm}.{rest}"),
                 (reg + r"\.conv\.(\d+)\.0\.(.+)$", "bbox_head.reg_convs.{conv}.{rest}"),
                 (reg + r"\.conv\.(\d+)\.1\.(.+)$", "bbox_head.reg_convs.{norm}.{rest}")]
        return tower + [(cls + r"\.cls_logits\.(.+)$", r"bbox_head.retina_cls.\1"),
                        (reg + r"\.bbox_reg\.(.+)$", r"bbox_head.retina_reg.\1")]
    if m.kind == "fcos":  # towers laid out as dettool's: conv, GN, ReLU
        return [(cls + r"\.conv\.(.+)$", r"bbox_head.cls_convs.\1"),
                (reg + r"\.conv\.(.+)$", r"bbox_head.reg_convs.\1"),
                (cls + r"\.cls_logits\.(.+)$", r"bbox_head.conv_cls.\1"),
                (reg + r"\.bbox_reg\.(.+)$", r"bbox_head.conv_reg.\1"),
                (reg + r"\.bbox_ctrness\.(.+)$", r"bbox_head.conv_centerness.\1")]
    rpn = [(r"rpn\.head\.conv\.0\.0\.(.+)$", r"rpn_head.rpn_conv.\1")] if not m.v2 else \
        [(r"rpn\.head\.conv\.0\.0\.(.+)$", r"rpn_head.rpn_conv.0.\1"),
         (r"rpn\.head\.conv\.1\.0\.(.+)$", r"rpn_head.rpn_conv.2.\1")]
    rpn += [(r"rpn\.head\.cls_logits\.(.+)$", r"rpn_head.rpn_cls.\1"),
            (r"rpn\.head\.bbox_pred\.(.+)$", r"rpn_head.rpn_reg.\1")]
    return rpn


def _roi_rules(m: TorchvisionModel) -> list[Rule]:
    box = "roi_head.bbox_head"
    if m.v2:  # box_head.{0-3}: conv + BN (+ ReLU), 4: flatten, 5: fc (+ ReLU)
        rules = [(r"roi_heads\.box_head\.(\d)\.0\.weight$", "%s.shared_convs.{conv}.weight" % box),
                 (r"roi_heads\.box_head\.(\d)\.1\.(.+)$", "%s.shared_convs.{norm}.{rest}" % box),
                 (r"roi_heads\.box_head\.5\.(.+)$", rf"{box}.shared_fcs.0.\1")]
    else:
        rules = [(r"roi_heads\.box_head\.fc6\.(.+)$", rf"{box}.shared_fcs.0.\1"),
                 (r"roi_heads\.box_head\.fc7\.(.+)$", rf"{box}.shared_fcs.2.\1")]
    rules += [(r"roi_heads\.box_predictor\.cls_score\.(.+)$", rf"{box}.fc_cls.\1"),
              (r"roi_heads\.box_predictor\.bbox_pred\.(.+)$", rf"{box}.fc_reg.\1")]
    if m.kind == "mask":
        mask = "roi_head.mask_branch.mask_head"
        rules += ([(r"roi_heads\.mask_head\.(\d)\.0\.weight$", "%s.convs.{conv}.weight" % mask),
                   (r"roi_heads\.mask_head\.(\d)\.1\.(.+)$", "%s.convs.{norm}.{rest}" % mask)] if m.v2 else
                  [(r"roi_heads\.mask_head\.(\d)\.0\.(.+)$", "%s.convs.{conv}.{rest}" % mask)])
        rules += [(r"roi_heads\.mask_predictor\.conv5_mask\.(.+)$", rf"{mask}.upsample.\1"),
                  (r"roi_heads\.mask_predictor\.mask_fcn_logits\.(.+)$", rf"{mask}.conv_logits.\1")]
    return rules


def _ssd_rules() -> list[Rule]:
    """SSDFeatureExtractorVGG -> SSDVGG's one ``features`` sequence (conv4_3 ends at 22; ``extra.0``
    holds pool4 to conv5_3, then pool5, conv6, conv7 in its last entry) and SSDNeck."""
    rules = [(r"backbone\.features\.(\d+)\.(.+)$", r"backbone.features.\1.\2"),
             (r"backbone\.scale_weight$", "neck.l2_norm.weight")]
    rules += [(rf"backbone\.extra\.0\.7\.{k}\.(.+)$", rf"backbone.features.{30 + k}.\1") for k in range(5)]
    rules += [(rf"backbone\.extra\.0\.{j}\.(.+)$", rf"backbone.features.{23 + j}.\1") for j in range(7)]
    rules += [(rf"backbone\.extra\.{i}\.{2 * j}\.(.+)$", rf"neck.extra_layers.{i - 1}.{j}.conv.\1")
              for i in range(1, 5) for j in range(2)]
    return rules + [(r"head\.classification_head\.module_list\.(\d+)\.(.+)$", r"bbox_head.cls_convs.\1.0.\2"),
                    (r"head\.regression_head\.module_list\.(\d+)\.(.+)$", r"bbox_head.reg_convs.\1.0.\2")]


def rename_rules(m: TorchvisionModel) -> list[Rule]:
    if m.kind == "ssd":
        return _ssd_rules()
    rules: list[Rule] = [(r"backbone\.body\.(.+)$", r"backbone.\1")] + _fpn_rules(m) + _dense_rules(m)
    return rules + (_roi_rules(m) if m.softmax else [])


def _rename(rules: list[Rule], key: str, m: TorchvisionModel) -> str | None:
    for pattern, target in rules:
        match = re.match(pattern, key)
        if match is None:
            continue
        if "{" not in target:
            return match.expand(target)
        # block i of a Sequential of (conv, norm, ReLU) blocks, (conv, ReLU) without a norm
        i, per_block = int(match.group(1)), 3 if m.v2 else 2
        return target.format(conv=i * per_block, norm=i * per_block + 1, rest=match.group(match.lastindex))
    return None


def _move_background(key: str, value: torch.Tensor, m: TorchvisionModel) -> torch.Tensor:
    """torchvision's class 0 (background) -> dettool's layout: last column of the classifier,
    dropped from class-specific boxes and masks."""
    if key.endswith(("fc_cls.weight", "fc_cls.bias")):
        return torch.cat([value[1:], value[:1]])
    if m.kind == "ssd" and re.fullmatch(r"bbox_head\.cls_convs\.\d+\.0\.(weight|bias)", key):
        per_anchor = value.reshape(-1, m.num_classes + 1, *value.shape[1:])  # [A, 91, ...], class 0 first
        return torch.cat([per_anchor[:, 1:], per_anchor[:, :1]], 1).reshape(value.shape)
    if key.endswith(("fc_reg.weight", "fc_reg.bias")):
        return value[4:]
    if key.endswith(("conv_logits.weight", "conv_logits.bias")):
        return value[1:]
    return value


def convert_torchvision_state_dict(state: dict[str, torch.Tensor], name: str, expected: dict[str, torch.Tensor],
                                   source: str) -> dict[str, torch.Tensor]:
    """torchvision ``name``'s state dict renamed and re-laid for dettool's model (``expected``:
    its state dict). A key that no rule maps, a missing or extra tensor, or a shape mismatch is a
    ``CheckpointError`` naming it: the file holds another architecture."""
    m = model_spec(name)
    rules = rename_rules(m)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = _rename(rules, key, m)
        if key.endswith("num_batches_tracked") and new not in expected:  # BN's counter; dettool's FrozenBN has none
            continue
        if new is None or new not in expected:
            raise CheckpointError(f"{source}: {key} is not a parameter of torchvision's {name} "
                                  "(a checkpoint of another architecture?)")
        value = _move_background(new, value, m)
        if tuple(value.shape) != tuple(expected[new].shape):
            raise CheckpointError(f"{source}: {key} has shape {tuple(value.shape)}, torchvision's {name} "
                                  f"needs {tuple(expected[new].shape)} (another architecture or class count?)")
        out[new] = value
    for key, value in expected.items():  # FCOS's per-level scales: torchvision has none (1.0)
        if key not in out and re.fullmatch(r"bbox_head\.scales\.\d+\.scale", key) and m.kind == "fcos":
            out[key] = torch.ones_like(value)
    missing = [k for k in expected if k not in out and not k.endswith("num_batches_tracked")]
    if missing:
        raise CheckpointError(f"{source}: no tensor for {missing[0]} ({len(missing)} missing): not torchvision's "
                              f"{name}")
    return out


