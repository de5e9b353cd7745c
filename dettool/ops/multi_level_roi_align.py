"""``dettool::multi_level_roi_align``: FPN level mapping + RoIAlign (``DettoolMultiLevelRoIAlign``).

MMDetection's ``SingleRoIExtractor.forward(feats, rois, roi_scale_factor)``: each RoI is pooled
from the one level :func:`map_roi_levels` assigns its original box, after :func:`rescale_rois`
(when ``roi_scale_factor != 1``), with ``torchvision.ops.roi_align``; see docs/custom_ops.md. A
RoI of negative area (no level: its scale is NaN) or whose batch index is not in ``(-1, B)``
gives zeros. The training model (``MultiLevelRoIAlign``) and the deploy graphs both call this op.

Differentiable with respect to the features (not the RoIs): the gradient is
``roi_align_grad.roi_align_backward`` per level, exact and fast on the CPU. The backward runs
eagerly (which RoIs pool on a level is data-dependent), not under AOT tracing.
"""
from __future__ import annotations

import math

import torch
import torchvision
from torch import Tensor

from dettool.ops.errors import OpInputError
from dettool.ops.roi_align_grad import roi_align_backward


def map_roi_levels(rois: Tensor, num_levels: int, finest_scale: int = 56) -> Tensor:
    """FPN level of each RoI by its scale ``sqrt(w * h)`` (MMDetection's rule).

    ``level = floor(log2(scale / finest_scale + 1e-6))`` clamped to ``[0, num_levels - 1]``;
    with ``finest_scale = 56``: scale < 112 -> 0, < 224 -> 1, < 448 -> 2, else 3.

    Args:
        rois: ``Tensor[R, 5]`` rows ``(batch_idx, x1, y1, x2, y2)`` in input pixels.
        num_levels: number of feature levels.
        finest_scale: scale mapped to the boundary of level 0 and 1, halved.

    Returns: ``Tensor[R]`` int64 level indices (undefined for a RoI of negative area, whose scale
    is NaN).
    """
    scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
    levels = torch.floor(torch.log2(scale / finest_scale + 1e-6))
    return levels.clamp(min=0, max=num_levels - 1).long()


def rescale_rois(rois: Tensor, scale_factor: float) -> Tensor:
    """RoIs scaled ``scale_factor`` times about their centres (MMDetection's ``roi_rescale``).

    ``cx = (x1 + x2) * 0.5``, ``w = x2 - x1``, ``x1' = cx - w * f * 0.5``, ``x2' = cx + w * f * 0.5``,
    likewise along y, in the RoIs' type; the batch index is kept.

    Args:
        rois: ``Tensor[R, 5]`` rows ``(batch_idx, x1, y1, x2, y2)``.
        scale_factor: ``f``.

    Returns: ``Tensor[R, 5]``.
    """
    cx = (rois[:, 1] + rois[:, 3]) * 0.5
    cy = (rois[:, 2] + rois[:, 4]) * 0.5
    new_w = (rois[:, 3] - rois[:, 1]) * scale_factor
    new_h = (rois[:, 4] - rois[:, 2]) * scale_factor
    return torch.stack([rois[:, 0], cx - new_w * 0.5, cy - new_h * 0.5, cx + new_w * 0.5, cy + new_h * 0.5], dim=1)


def rescales(roi_scale_factor: float) -> bool:
    """Whether ``roi_scale_factor`` rescales the RoIs: it is not 1 once rounded to float32, the type
    of the ONNX attribute and of the plugin's field (every implementation decides alike)."""
    return _float32(roi_scale_factor) != 1.0


def _float32(value: float) -> float:
    return float(torch.tensor(value, dtype=torch.float32))


def _compute_dtype(feat_dtype: torch.dtype) -> torch.dtype:
    """Pooling type: float32 for float16 and float32 features (the spec), float64 for float64."""
    return torch.promote_types(feat_dtype, torch.float32)


def _levels_and_boxes(rois: Tensor, num_levels: int, finest_scale: int, batch: int,
                      roi_scale_factor: float) -> tuple[Tensor, Tensor]:
    """Level of each RoI (-1: pools to zeros) and the box it is pooled with.

    Args:
        rois: ``Tensor[R, 5]`` in the pooling type.

    Returns: ``(levels Tensor[R] int64, boxes Tensor[R, 5])``; the levels come from the original
    RoIs, the boxes are rescaled.
    """
    levels = map_roi_levels(rois, num_levels, finest_scale)
    area = (rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2])
    # NaN scale: torch's float -> int64 conversion of it depends on the CPU, so it is masked here.
    pooled = (area >= 0) & (rois[:, 0] > -1) & (rois[:, 0] < batch)
    levels = torch.where(pooled, levels, torch.full_like(levels, -1))
    boxes = rescale_rois(rois, roi_scale_factor) if rescales(roi_scale_factor) else rois
    return levels, boxes


def _check_inputs(rois: Tensor, feats: list[Tensor], featmap_strides: list[int], roi_scale_factor: float) -> None:
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise OpInputError(f"multi_level_roi_align: rois must be [R, 5], got shape {tuple(rois.shape)}")
    if len(feats) == 0 or len(feats) != len(featmap_strides):
        raise OpInputError(f"multi_level_roi_align: {len(feats)} feature levels for "
                           f"{len(featmap_strides)} featmap_strides")
    for level, feat in enumerate(feats):
        if feat.dim() != 4 or feat.shape[:2] != feats[0].shape[:2] or feat.dtype != feats[0].dtype:
            raise OpInputError(f"multi_level_roi_align: feature level {level} is {feat.dtype} "
                               f"{tuple(feat.shape)}, expected {feats[0].dtype} [B, {feats[0].shape[1]}, H, W]")
    factor = _float32(roi_scale_factor)  # as the ONNX attribute holds it
    if not (math.isfinite(factor) and factor > 0):
        raise OpInputError(f"multi_level_roi_align: roi_scale_factor must be finite and > 0 in float32, "
                           f"got {roi_scale_factor}")


@torch.library.custom_op("dettool::multi_level_roi_align", mutates_args=())
def multi_level_roi_align_op(rois: Tensor, feats: list[Tensor], output_height: int, output_width: int,
                             featmap_strides: list[int], sampling_ratio: int, finest_scale: int,
                             aligned: bool, roi_scale_factor: float = 1.0) -> Tensor:
    """Reference kernel of ``torch.ops.dettool.multi_level_roi_align``; see :func:`multi_level_roi_align`."""
    _check_inputs(rois, feats, featmap_strides, roi_scale_factor)
    dtype = _compute_dtype(feats[0].dtype)
    out = feats[0].new_zeros((rois.shape[0], feats[0].shape[1], output_height, output_width))
    if rois.shape[0] == 0:
        return out
    levels, boxes = _levels_and_boxes(rois.to(dtype), len(feats), finest_scale, feats[0].shape[0], roi_scale_factor)
    for level, (feat, stride) in enumerate(zip(feats, featmap_strides)):
        inds = (levels == level).nonzero(as_tuple=True)[0]
        if inds.numel() == 0:
            continue
        pooled = torchvision.ops.roi_align(feat.to(dtype), boxes[inds], (output_height, output_width),
                                           spatial_scale=1.0 / stride, sampling_ratio=sampling_ratio,
                                           aligned=aligned)
        out[inds] = pooled.to(out.dtype)
    return out


@multi_level_roi_align_op.register_fake
def _multi_level_roi_align_fake(rois: Tensor, feats: list[Tensor], output_height: int, output_width: int,
                                featmap_strides: list[int], sampling_ratio: int, finest_scale: int,
                                aligned: bool, roi_scale_factor: float = 1.0) -> Tensor:
    return feats[0].new_empty((rois.shape[0], feats[0].shape[1], output_height, output_width))


def _setup_context(ctx, inputs, output) -> None:
    rois, feats, *attributes = inputs
    ctx.save_for_backward(rois)
    ctx.attributes = attributes
    ctx.feat_shapes = [feat.shape for feat in feats]
    ctx.feat_dtype = feats[0].dtype
    # The gradient of each level is handed back in that level's layout (see roi_align_backward).
    ctx.memory_formats = [torch.channels_last if feat.is_contiguous(memory_format=torch.channels_last)
                          else torch.contiguous_format for feat in feats]


def _backward(ctx, grad_output: Tensor):
    """Gradients of the features (per level, None where no RoI is pooled); None for the RoIs and attributes."""
    (rois,) = ctx.saved_tensors
    output_height, output_width, featmap_strides, sampling_ratio, finest_scale, aligned, roi_scale_factor = \
        ctx.attributes
    needs_feat_grad = ctx.needs_input_grad[1]
    dtype = _compute_dtype(ctx.feat_dtype)
    grad_output = grad_output.to(dtype)
    levels, boxes = _levels_and_boxes(rois.detach().to(dtype), len(ctx.feat_shapes), finest_scale,
                                      ctx.feat_shapes[0][0], roi_scale_factor)
    grads: list[Tensor | None] = []
    for level, (shape, stride, memory_format) in enumerate(zip(ctx.feat_shapes, featmap_strides, ctx.memory_formats)):
        inds = (levels == level).nonzero(as_tuple=True)[0]
        if not needs_feat_grad[level] or inds.numel() == 0:
            grads.append(None)
            continue
        grad = roi_align_backward(grad_output[inds], boxes[inds], shape, 1.0 / stride, sampling_ratio, aligned,
                                  memory_format)
        grads.append(grad.to(ctx.feat_dtype))
    return None, grads, None, None, None, None, None, None, None


multi_level_roi_align_op.register_autograd(_backward, setup_context=_setup_context)


def multi_level_roi_align(rois: Tensor, feats: list[Tensor], output_height: int, output_width: int,
                          featmap_strides: list[int], sampling_ratio: int = 0, finest_scale: int = 56,
                          aligned: bool = True, roi_scale_factor: float = 1.0) -> Tensor:
    """Pool every RoI from the FPN level its scale maps to (``DettoolMultiLevelRoIAlign``).

    RoI ``r`` goes to level ``clamp(floor(log2(sqrt(w * h) / finest_scale + 1e-6)), 0, L - 1)``
    of its original box; the box is then scaled ``roi_scale_factor`` times about its centre
    (:func:`rescale_rois`; a factor that is 1 in float32 leaves it untouched) and pooled on that level by
    ``torchvision.ops.roi_align`` with ``spatial_scale = 1 / stride``. A RoI of negative area or
    with a batch index outside ``(-1, B)`` gives zeros. Level arithmetic, rescaling and sampling
    run in float32 for float32 and float16 features (float64 for float64 features).
    Differentiable with respect to ``feats``.

    Args:
        rois: ``Tensor[R, 5]`` rows ``(batch_index, x1, y1, x2, y2)`` in input pixels.
        feats: L tensors ``Tensor[B, C, H_l, W_l]`` (float32 or float16, one type), finest first.
        output_height: pooled height.
        output_width: pooled width.
        featmap_strides: L ints, the stride of each level.
        sampling_ratio: sampling points per bin side; 0 = adaptive ``ceil(roi_size / output_size)``.
        finest_scale: 56 in MMDetection.
        aligned: pixel-shifted RoIAlign (torchvision's ``aligned=True``).
        roi_scale_factor: ``> 0``; MMDetection's ``roi_scale_factor`` (Double-Head R-CNN's
            regression branch: 1.3).

    Returns: ``Tensor[R, C, output_height, output_width]`` of the features' type.
    """
    return torch.ops.dettool.multi_level_roi_align(rois, list(feats), int(output_height), int(output_width),
                                                   [int(s) for s in featmap_strides], int(sampling_ratio),
                                                   int(finest_scale), bool(aligned), float(roi_scale_factor))
