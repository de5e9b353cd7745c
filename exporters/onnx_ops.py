"""ONNX translations of the ``torch.ops.dettool`` operators for ``torch.onnx.export(dynamo=True)``.

``translation_table(portable)`` is the ``custom_translation_table`` of the export:

- custom flavour (default): one ``dettool``-domain node per op, ``DettoolBatchedNMS``,
  ``DettoolMultiLevelRoIAlign``, ``DettoolModulatedDeformConv``, ``DettoolPSRoIAlign``
  (docs/custom_ops.md), carrying ``plugin_namespace="dettool"`` and ``plugin_version="1"`` for
  TensorRT's ONNX parser. ONNX Runtime runs them through ``dettool.runtime.ort_custom_ops``.
- portable flavour (``--portable``): standard ONNX only, opset 19, same semantics
  (``exporters/onnx_portable_ops.py``).

The functions are onnxscript trace-only functions: plain Python run once at export time on
symbolic values, so Python ``if``s on dtypes and ranks decide which nodes are written.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from onnxscript import ir
from onnxscript import opset19 as op
from onnxscript.onnx_types import TensorType
from onnxscript.values import Opset

from dettool.exporters import onnx_portable_ops
from dettool.exporters.onnx_schemas import register_dettool_schemas
from dettool.ops import ONNX_DOMAIN, ONNX_OP_NAMES, OP_VERSION
from dettool.ops.multi_level_roi_align import rescales

PLUGIN_NAMESPACE = "dettool"
PLUGIN_VERSION = str(OP_VERSION)

register_dettool_schemas()  # onnxscript looks the dettool ops up in onnx.defs when it builds nodes
dettool_opset = Opset(ONNX_DOMAIN, OP_VERSION)


def _plugin_attributes() -> dict[str, str]:
    return {"plugin_namespace": PLUGIN_NAMESPACE, "plugin_version": PLUGIN_VERSION}


def custom_batched_nms(boxes, scores, score_threshold: float, iou_threshold: float, max_output_boxes: int):
    """``DettoolBatchedNMS``; float16 inputs are cast to float32 first (the node is float32 only).

    Args:
        boxes: ``[B, N, 4]`` or ``[B, N, C, 4]``.
        scores: ``[B, N, C]``.

    Returns: ``num_dets [B]`` int32, ``det_boxes [B, K, 4]``, ``det_scores [B, K]``, ``det_classes [B, K]`` int32.
    """
    if boxes.dtype != ir.DataType.FLOAT:
        boxes = op.Cast(boxes, to=ir.DataType.FLOAT)
    if scores.dtype != ir.DataType.FLOAT:
        scores = op.Cast(scores, to=ir.DataType.FLOAT)
    node = getattr(dettool_opset, ONNX_OP_NAMES["batched_nms"])
    return node(boxes, scores, score_threshold=float(score_threshold), iou_threshold=float(iou_threshold),
                max_output_boxes=int(max_output_boxes), **_plugin_attributes(), _num_outputs=4)


def custom_multi_level_roi_align(rois, feats: Sequence[TensorType], output_height: int, output_width: int,
                                 featmap_strides: Sequence[int], sampling_ratio: int, finest_scale: int,
                                 aligned: bool, roi_scale_factor: float = 1.0):
    """``DettoolMultiLevelRoIAlign(rois, feat_0, ..., feat_{L-1})`` -> ``[R, C, oh, ow]``; the RoIs are
    cast to float32 (the node's type) when they are not. ``roi_scale_factor`` is written only when
    it rescales (not 1, its default), so nodes without rescaling are those of before the attribute."""
    if rois.dtype != ir.DataType.FLOAT:
        rois = op.Cast(rois, to=ir.DataType.FLOAT)
    node = getattr(dettool_opset, ONNX_OP_NAMES["multi_level_roi_align"])
    rescaling = {"roi_scale_factor": float(roi_scale_factor)} if rescales(roi_scale_factor) else {}
    # Inputs by keyword: torch's exporter binds positional arguments before a variadic input twice
    # (torch 2.14 ``_construct_named_inputs_and_attrs``).
    return node(rois=rois, feats=list(feats), output_height=int(output_height), output_width=int(output_width),
                featmap_strides=[int(s) for s in featmap_strides], sampling_ratio=int(sampling_ratio),
                finest_scale=int(finest_scale), aligned=int(bool(aligned)), **rescaling, **_plugin_attributes())


def custom_modulated_deform_conv(input, offset, mask, weight, bias, stride: Sequence[int], padding: Sequence[int],
                                 dilation: Sequence[int], groups: int, deform_groups: int):
    """``DettoolModulatedDeformConv(input, offset, mask, weight, bias)`` -> ``[B, Co, Ho, Wo]``."""
    node = getattr(dettool_opset, ONNX_OP_NAMES["modulated_deform_conv"])
    return node(input, offset, mask, weight, bias, stride=[int(s) for s in stride],
                padding=[int(p) for p in padding], dilation=[int(d) for d in dilation], groups=int(groups),
                deform_groups=int(deform_groups), **_plugin_attributes())


def custom_ps_roi_align(features, rois, output_size: int, spatial_scale: float, sampling_ratio: int):
    """``DettoolPSRoIAlign(features, rois)`` -> ``[R, C, k, k]``; the RoIs are cast to float32 (the
    node's type) when they are not."""
    if rois.dtype != ir.DataType.FLOAT:
        rois = op.Cast(rois, to=ir.DataType.FLOAT)
    node = getattr(dettool_opset, ONNX_OP_NAMES["ps_roi_align"])
    return node(features, rois, output_size=int(output_size), spatial_scale=float(spatial_scale),
                sampling_ratio=int(sampling_ratio), **_plugin_attributes())


def translation_table(portable: bool = False) -> dict[torch._ops.OpOverload, Callable]:
    """``custom_translation_table`` for ``torch.onnx.export(..., dynamo=True)``.

    Args:
        portable: standard ONNX operators only (opset 19) instead of the ``dettool``-domain nodes.

    Returns: ``{torch.ops.dettool.<op>.default: onnxscript trace-only function}`` for the four ops.
    """
    ops = torch.ops.dettool  # registered by importing dettool.ops
    if portable:
        return {ops.batched_nms.default: onnx_portable_ops.portable_batched_nms,
                ops.multi_level_roi_align.default: onnx_portable_ops.portable_multi_level_roi_align,
                ops.modulated_deform_conv.default: onnx_portable_ops.portable_modulated_deform_conv,
                ops.ps_roi_align.default: onnx_portable_ops.portable_ps_roi_align}
    return {ops.batched_nms.default: custom_batched_nms,
            ops.multi_level_roi_align.default: custom_multi_level_roi_align,
            ops.modulated_deform_conv.default: custom_modulated_deform_conv,
            ops.ps_roi_align.default: custom_ps_roi_align}
