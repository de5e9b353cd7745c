"""``dettool::multi_level_roi_align``: FPN level mapping + RoIAlign (``DettoolMultiLevelRoIAlign``).

Each RoI is pooled from the one level :func:`map_roi_levels` (MMDetection's rule, shared with the
training model) assigns it, with ``torchvision.ops.roi_align``; see docs/custom_ops.md. A RoI of
negative area (no level: its scale is NaN) or whose batch index is not in ``(-1, B)`` gives zeros.
"""
from __future__ import annotations

import torch
import torchvision
from torch import Tensor

from dettool.ops.errors import OpInputError
from dettool.trainer.models.roi_extractors.multi_level_roi_align import map_roi_levels


def _roi_levels(rois: Tensor, num_levels: int, finest_scale: int, batch: int) -> Tensor:
    """``Tensor[R]`` int64 level of each RoI, -1 for a RoI that pools to zeros.

    Args:
        rois: ``Tensor[R, 5]`` float32.
    """
    levels = map_roi_levels(rois, num_levels, finest_scale)
    area = (rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2])
    # NaN scale: torch's float -> int64 conversion of it depends on the CPU, so it is masked here.
    pooled = (area >= 0) & (rois[:, 0] > -1) & (rois[:, 0] < batch)
    return torch.where(pooled, levels, torch.full_like(levels, -1))


def _check_inputs(rois: Tensor, feats: list[Tensor], featmap_strides: list[int]) -> None:
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise OpInputError(f"multi_level_roi_align: rois must be [R, 5], got shape {tuple(rois.shape)}")
    if len(feats) == 0 or len(feats) != len(featmap_strides):
        raise OpInputError(f"multi_level_roi_align: {len(feats)} feature levels for "
                           f"{len(featmap_strides)} featmap_strides")
    for level, feat in enumerate(feats):
        if feat.dim() != 4 or feat.shape[:2] != feats[0].shape[:2] or feat.dtype != feats[0].dtype:
            raise OpInputError(f"multi_level_roi_align: feature level {level} is {feat.dtype} "
                               f"{tuple(feat.shape)}, expected {feats[0].dtype} [B, {feats[0].shape[1]}, H, W]")


@torch.library.custom_op("dettool::multi_level_roi_align", mutates_args=())
def multi_level_roi_align_op(rois: Tensor, feats: list[Tensor], output_height: int, output_width: int,
                             featmap_strides: list[int], sampling_ratio: int, finest_scale: int,
                             aligned: bool) -> Tensor:
    """Reference kernel of ``torch.ops.dettool.multi_level_roi_align``; see :func:`multi_level_roi_align`."""
    _check_inputs(rois, feats, featmap_strides)
    num_levels = len(feats)
    rois = rois.float()
    out = feats[0].new_zeros((rois.shape[0], feats[0].shape[1], output_height, output_width))
    if rois.shape[0] == 0:
        return out
    levels = _roi_levels(rois, num_levels, finest_scale, feats[0].shape[0])
    for level, (feat, stride) in enumerate(zip(feats, featmap_strides)):
        inds = (levels == level).nonzero(as_tuple=True)[0]
        if inds.numel() == 0:
            continue
        pooled = torchvision.ops.roi_align(feat.float(), rois[inds], (output_height, output_width),
                                           spatial_scale=1.0 / stride, sampling_ratio=sampling_ratio,
                                           aligned=aligned)
        out[inds] = pooled.to(out.dtype)
    return out


@multi_level_roi_align_op.register_fake
def _multi_level_roi_align_fake(rois: Tensor, feats: list[Tensor], output_height: int, output_width: int,
                                featmap_strides: list[int], sampling_ratio: int, finest_scale: int,
                                aligned: bool) -> Tensor:
    return feats[0].new_empty((rois.shape[0], feats[0].shape[1], output_height, output_width))


def multi_level_roi_align(rois: Tensor, feats: list[Tensor], output_height: int, output_width: int,
                          featmap_strides: list[int], sampling_ratio: int = 0, finest_scale: int = 56,
                          aligned: bool = True) -> Tensor:
    """Pool every RoI from the FPN level its scale maps to (``DettoolMultiLevelRoIAlign``).

    RoI ``r`` goes to level ``clamp(floor(log2(sqrt(w * h) / finest_scale + 1e-6)), 0, L - 1)``
    and is pooled there by ``torchvision.ops.roi_align`` with ``spatial_scale = 1 / stride``;
    a RoI of negative area or with a batch index outside ``(-1, B)`` gives zeros. Level
    arithmetic and sampling run in float32 whatever the feature type.

    Args:
        rois: ``Tensor[R, 5]`` rows ``(batch_index, x1, y1, x2, y2)`` in input pixels.
        feats: L tensors ``Tensor[B, C, H_l, W_l]`` (float32 or float16, one type), finest first.
        output_height: pooled height.
        output_width: pooled width.
        featmap_strides: L ints, the stride of each level.
        sampling_ratio: sampling points per bin side; 0 = adaptive ``ceil(roi_size / output_size)``.
        finest_scale: 56 in MMDetection.
        aligned: pixel-shifted RoIAlign (torchvision's ``aligned=True``).

    Returns: ``Tensor[R, C, output_height, output_width]`` of the features' type.
    """
    return torch.ops.dettool.multi_level_roi_align(rois, list(feats), int(output_height), int(output_width),
                                                   [int(s) for s in featmap_strides], int(sampling_ratio),
                                                   int(finest_scale), bool(aligned))
