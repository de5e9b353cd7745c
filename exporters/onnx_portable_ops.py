"""Standard-ONNX (opset 19) translations of the dettool operators: the ``--portable`` flavour.

Each function writes the same semantics as the reference in ``dettool.ops`` (docs/custom_ops.md)
with default-domain operators only, so any ONNX runtime runs the graph:

- batched NMS: ``NonMaxSuppression`` (per class, smaller box index first on equal scores, as
  torchvision), then the kept candidates are scattered into a dense ``[B, N * C]`` score map
  (``-inf`` elsewhere) whose ``TopK`` (``k = min(K, N * C)``; equal values in increasing index,
  i.e. flat index ``n * C + c``) orders them; the result is padded to ``K`` rows.
- multi-level RoIAlign: per level, the RoIs of that level (``NonZero``, ``Gather``) through one
  ``RoiAlign``, scattered into their rows (``ScatterND``) of a zero ``[R, C, h, w]``; each RoI is
  pooled once, at its own level (rescaled about its centre first when ``roi_scale_factor != 1``).
  RoiAlign runs in float32.
- modulated deformable convolution: ``DeformConv`` (float32).
- position-sensitive RoIAlign: one ``RoiAlign`` (half-pixel) of every RoI over all ``C * k * k``
  channels, ``[R, C * k * k, k, k]``, of which each bin keeps its own channel group and cell (one
  constant-index ``Gather``); RoIs outside the batch, and with adaptive sampling those with a side
  of zero or negative length, zeroed (``Where``). RoiAlign runs in float32.

Trace-only onnxscript functions (see ``onnx_ops.py``).
"""
from __future__ import annotations

import math
from typing import Sequence

from onnxscript import ir
from onnxscript import opset19 as op
from onnxscript.onnx_types import TensorType

from dettool.ops.multi_level_roi_align import rescales

FLOAT = ir.DataType.FLOAT
INT64 = ir.DataType.INT64
INT32 = ir.DataType.INT32


def _ints(*values: int):
    return op.Constant(value_ints=[int(v) for v in values])


def _float(value: float):
    return op.Constant(value_float=float(value))


def _to_float32(x):
    return x if x.dtype == FLOAT else op.Cast(x, to=FLOAT)


def _column(x, index: int):
    """``x[:, index]`` of a 2-d tensor, as a 1-d tensor."""
    return op.Squeeze(op.Slice(x, _ints(index), _ints(index + 1), _ints(1)), _ints(1))


def portable_batched_nms(boxes, scores, score_threshold: float, iou_threshold: float, max_output_boxes: int):
    """``dettool::batched_nms`` as NonMaxSuppression + TopK + padding.

    Per-class boxes ``[B, N, C, 4]`` run NMS as ``B * C`` batches of one class each (exact; no
    coordinate offsets). Per class at most ``K`` boxes are kept, which loses nothing since at most
    ``K`` detections of all classes are output.

    Args:
        boxes: ``[B, N, 4]`` or ``[B, N, C, 4]``.
        scores: ``[B, N, C]``.

    Returns: ``num_dets [B]`` int32, ``det_boxes [B, K, 4]``, ``det_scores [B, K]``, ``det_classes [B, K]`` int32.
    """
    k = int(max_output_boxes)
    per_class = len(boxes.shape) == 4  # before the Cast: Cast outputs carry no shape while tracing
    boxes, scores = _to_float32(boxes), _to_float32(scores)
    batch = op.Shape(scores, start=0, end=1)
    num_boxes = op.Shape(scores, start=1, end=2)
    num_classes = op.Shape(scores, start=2, end=3)
    num_flat = op.Mul(num_boxes, num_classes)
    # Reshapes spell every dimension out (a -1 cannot be inferred when N == 0) with allowzero=1
    # (a 0 means an empty dimension, not 'copy the input's').
    if per_class:  # one NMS batch per (image, class): [B * C, N, 4] and scores [B * C, 1, N]
        batch_classes = op.Mul(batch, num_classes)
        nms_boxes = op.Reshape(op.Transpose(boxes, perm=[0, 2, 1, 3]),
                               op.Concat(batch_classes, num_boxes, _ints(4), axis=0), allowzero=1)
        nms_scores = op.Reshape(op.Transpose(scores, perm=[0, 2, 1]),
                                op.Concat(batch_classes, _ints(1), num_boxes, axis=0), allowzero=1)
    else:
        nms_boxes, nms_scores = boxes, op.Transpose(scores, perm=[0, 2, 1])
    selected = op.NonMaxSuppression(nms_boxes, nms_scores, op.Constant(value_int=k), _float(iou_threshold),
                                    _float(score_threshold))  # [S, 3] (batch, class, box)
    if per_class:
        image = op.Div(_column(selected, 0), num_classes)
        cls = op.Mod(_column(selected, 0), num_classes)
    else:
        image, cls = _column(selected, 0), _column(selected, 1)
    flat_index = op.Add(op.Mul(_column(selected, 2), num_classes), cls)  # n * C + c
    image_and_flat = op.Concat(op.Unsqueeze(image, _ints(1)), op.Unsqueeze(flat_index, _ints(1)), axis=1)  # [S, 2]

    flat_scores = op.Reshape(scores, op.Concat(batch, num_flat, axis=0), allowzero=1)  # [B, N * C]
    neg_inf = _float(-math.inf)
    dense = op.ScatterND(op.Expand(neg_inf, op.Shape(flat_scores)), image_and_flat,
                         op.GatherND(flat_scores, image_and_flat))
    top_k = op.Min(num_flat, _ints(k))  # TopK's k must not exceed N * C
    values, order = op.TopK(dense, top_k, axis=1, largest=1, sorted=1)  # [B, k']
    pads = op.Concat(_ints(0, 0, 0), op.Sub(_ints(k), top_k), axis=0)
    values = op.Pad(values, pads, neg_inf)  # [B, K]
    order = op.Pad(order, pads, op.Constant(value_int=0))
    valid = op.Greater(values, neg_inf)

    num_dets = op.Cast(op.ReduceSum(op.Cast(valid, to=INT64), _ints(1), keepdims=0), to=INT32)
    det_scores = op.Where(valid, values, _float(0.0))
    det_classes = op.Cast(op.Where(valid, op.Mod(order, num_classes), op.Constant(value_int=-1)), to=INT32)
    # One zero row after the last box keeps the padding rows' index 0 in range when N * C == 0.
    box_rows = op.Reshape(boxes, op.Concat(batch, num_flat if per_class else num_boxes, _ints(4), axis=0),
                          allowzero=1)  # [B, N or N * C, 4]
    box_rows = op.Pad(box_rows, _ints(0, 0, 0, 0, 1, 0), _float(0.0))
    row_index = order if per_class else op.Div(order, num_classes)
    det_boxes = op.GatherND(box_rows, op.Unsqueeze(row_index, _ints(2)), batch_dims=1)  # [B, K, 4]
    det_boxes = op.Where(op.Unsqueeze(valid, _ints(2)), det_boxes, _float(0.0))
    return num_dets, det_boxes, det_scores, det_classes


def _roi_levels(boxes, num_levels: int, finest_scale: int):
    """Level of each RoI as float ``[R]``: ``clamp(floor(log2(sqrt(w * h) / finest_scale + 1e-6)), 0, L - 1)``.

    ``floor(log2(v)) >= l`` is written ``v >= 2 ** l`` (exact, no Log rounding; the TensorRT plugin
    does the same); a RoI whose scale is NaN (negative area) gets level -1.
    """
    width = op.Sub(_column(boxes, 2), _column(boxes, 0))
    height = op.Sub(_column(boxes, 3), _column(boxes, 1))
    v = op.Add(op.Div(op.Sqrt(op.Mul(width, height)), _float(finest_scale)), _float(1e-6))
    level = op.ConstantOfShape(op.Shape(v))  # float32 zeros [R]
    for lvl in range(1, num_levels):
        level = op.Add(level, op.Cast(op.GreaterOrEqual(v, _float(2.0 ** lvl)), to=FLOAT))
    return op.Where(op.IsNaN(v), _float(-1.0), level)


def _rescaled_boxes(boxes, scale_factor: float):
    """Boxes ``[R, 4]`` scaled about their centres, in ``dettool.ops.rescale_rois``'s float32 order:
    ``c = (p1 + p2) * 0.5``, ``half = (p2 - p1) * f * 0.5``, ``(c - half, c + half)``."""
    top_left = op.Slice(boxes, _ints(0), _ints(2), _ints(1))
    bottom_right = op.Slice(boxes, _ints(2), _ints(4), _ints(1))
    centre = op.Mul(op.Add(top_left, bottom_right), _float(0.5))
    half = op.Mul(op.Mul(op.Sub(bottom_right, top_left), _float(scale_factor)), _float(0.5))
    return op.Concat(op.Sub(centre, half), op.Add(centre, half), axis=1)


def portable_multi_level_roi_align(rois, feats: Sequence[TensorType], output_height: int, output_width: int,
                                   featmap_strides: Sequence[int], sampling_ratio: int, finest_scale: int,
                                   aligned: bool, roi_scale_factor: float = 1.0):
    """``dettool::multi_level_roi_align`` as one ``RoiAlign`` (opset 16+) per level on that level's RoIs.

    The levels come from the RoIs as given; with ``roi_scale_factor != 1`` RoiAlign pools the
    rescaled RoIs.

    Args:
        rois: ``[R, 5]`` ``(batch_index, x1, y1, x2, y2)``.
        feats: L tensors ``[B, C, H_l, W_l]``.

    Returns: ``[R, C, output_height, output_width]`` of the features' type.
    """
    rois = _to_float32(rois)
    boxes = op.Slice(rois, _ints(1), _ints(5), _ints(1))  # [R, 4]
    pooled_boxes = _rescaled_boxes(boxes, roi_scale_factor) if rescales(roi_scale_factor) else boxes
    # A RoI of negative area or with a batch index outside (-1, B) pools to zeros (level -1); its
    # index becomes 0 for RoiAlign, which rejects indices outside the batch.
    index = _column(rois, 0)
    batch = op.Cast(op.Shape(feats[0], start=0, end=1), to=FLOAT)
    in_batch = op.And(op.Greater(index, _float(-1.0)), op.Less(index, batch))
    batch_index = op.Where(in_batch, op.Cast(index, to=INT64), op.Constant(value_int=0))  # truncated toward 0
    level = op.Where(in_batch, _roi_levels(boxes, len(feats), finest_scale), _float(-1.0))
    mode = "half_pixel" if aligned else "output_half_pixel"
    channels = op.Shape(feats[0], start=1, end=2)
    out_shape = op.Concat(op.Shape(rois, start=0, end=1), channels, _ints(output_height, output_width), axis=0)
    out = op.ConstantOfShape(out_shape)  # float32 zeros [R, C, oh, ow]: level -1 pools to zeros
    for lvl, (feat, stride) in enumerate(zip(feats, featmap_strides)):
        level_rows = op.Transpose(op.NonZero(op.Equal(level, _float(lvl))), perm=[1, 0])  # [k, 1] rows of this level
        rows = op.Squeeze(level_rows, _ints(1))  # [k]
        pooled = op.RoiAlign(_to_float32(feat), op.Gather(pooled_boxes, rows, axis=0),
                             op.Gather(batch_index, rows, axis=0),
                             coordinate_transformation_mode=mode, mode="avg", output_height=int(output_height),
                             output_width=int(output_width), sampling_ratio=int(sampling_ratio),
                             spatial_scale=1.0 / float(stride))
        out = op.ScatterND(out, level_rows, pooled)
    feat_type = feats[0].dtype
    return out if feat_type == FLOAT else op.Cast(out, to=feat_type)


def portable_modulated_deform_conv(input, offset, mask, weight, bias, stride: Sequence[int], padding: Sequence[int],
                                   dilation: Sequence[int], groups: int, deform_groups: int):
    """``dettool::modulated_deform_conv`` as opset-19 ``DeformConv`` (run in float32).

    Returns: ``[B, Co, Ho, Wo]`` of the input's type.
    """
    out = op.DeformConv(_to_float32(input), _to_float32(weight), _to_float32(offset), _to_float32(bias),
                        _to_float32(mask), dilations=[int(d) for d in dilation], group=int(groups),
                        offset_group=int(deform_groups), pads=[int(padding[0]), int(padding[1])] * 2,
                        strides=[int(s) for s in stride])
    return out if input.dtype == FLOAT else op.Cast(out, to=input.dtype)


def portable_ps_roi_align(features, rois, output_size: int, spatial_scale: float, sampling_ratio: int):
    """``dettool::ps_roi_align`` as ``RoiAlign`` (opset 16+) on every channel, then a ``Gather`` of
    each bin's own channel and cell.

    Bin ``(ph, pw)`` of output channel ``c`` is bin ``(ph, pw)`` of RoiAlign's channel
    ``(c * k + ph) * k + pw``, sampled exactly as torchvision's ps_roi_align samples it
    (``half_pixel`` is its half-pixel offset without the 1-pixel minimum, ``avg`` its mean, the
    same ``sampling_ratio`` and adaptive grid; a RoI with no sampling point averages over a count of
    1 and gives 0). RoiAlign must pool all ``k * k`` bins of every channel: a RoI per bin (one bin,
    its channel group) would compute the sample positions from the bin's corners and its adaptive
    grid from the bin's size, neither rounded as torchvision rounds them. Of the ``[R, C, k*k, k*k]``
    (channel group ``g``, cell ``s``) values the output is the diagonal ``g == s``: flattened to
    ``[R, C, k**4]`` it sits at the ``k * k`` constant positions ``s * (k * k + 1)``. A ``Gather`` of
    those copies ``R * C * k * k`` values exactly; a one-hot mask multiplied in and summed would read
    all ``k**4`` and turn an inf or NaN of a cell it drops into NaN (``0 * inf``).

    Args:
        features: ``[B, C * k * k, H, W]``.
        rois: ``[R, 5]`` ``(batch_index, x1, y1, x2, y2)``.

    Returns: ``[R, C, k, k]`` of the features' type.
    """
    k = int(output_size)
    rois = _to_float32(rois)
    boxes = op.Slice(rois, _ints(1), _ints(5), _ints(1))  # [R, 4]
    # A RoI whose batch index is outside (-1, B) pools to zeros; its index becomes 0 for RoiAlign,
    # which rejects indices outside the batch.
    index = _column(rois, 0)
    batch = op.Cast(op.Shape(features, start=0, end=1), to=FLOAT)
    pooled_rows = op.And(op.Greater(index, _float(-1.0)), op.Less(index, batch))
    batch_index = op.Where(pooled_rows, op.Cast(index, to=INT64), op.Constant(value_int=0))  # truncated toward 0
    if int(sampling_ratio) == 0:
        # Adaptive sampling of a RoI with a side of zero or negative length on the map takes no
        # sample: 0. ONNX Runtime's RoiAlign fails on one whose grid is negative along one side only
        # (its sample count overflows), so such a RoI is handed to it as an empty box.
        scale = _float(spatial_scale)
        start = op.Sub(op.Mul(op.Slice(boxes, _ints(0), _ints(2), _ints(1)), scale), _float(0.5))
        end = op.Sub(op.Mul(op.Slice(boxes, _ints(2), _ints(4), _ints(1)), scale), _float(0.5))
        positive = op.Greater(op.Sub(end, start), _float(0.0))  # [R, 2] (w, h); NaN: not positive
        pooled_rows = op.And(pooled_rows, op.And(_column(positive, 0), _column(positive, 1)))
        boxes = op.Where(op.Unsqueeze(pooled_rows, _ints(1)), boxes, _float(0.0))
    pooled = op.RoiAlign(_to_float32(features), boxes, batch_index, coordinate_transformation_mode="half_pixel",
                         mode="avg", output_height=k, output_width=k, sampling_ratio=int(sampling_ratio),
                         spatial_scale=float(spatial_scale))  # [R, C*k*k, k, k]
    num_rois = op.Shape(rois, start=0, end=1)
    channels = op.Div(op.Shape(features, start=1, end=2), _ints(k * k))
    # Every dimension spelled out with allowzero=1: a -1 cannot be inferred when R == 0.
    flat = op.Reshape(pooled, op.Concat(num_rois, channels, _ints(k ** 4), axis=0), allowzero=1)
    diagonal = op.Gather(flat, _ints(*[s * (k * k + 1) for s in range(k * k)]), axis=2)  # [R, C, k*k]
    out = op.Reshape(diagonal, op.Concat(num_rois, channels, _ints(k, k), axis=0), allowzero=1)
    out = op.Where(op.Unsqueeze(pooled_rows, _ints(1, 2, 3)), out, _float(0.0))
    return out if features.dtype == FLOAT else op.Cast(out, to=features.dtype)
