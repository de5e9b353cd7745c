"""Guided Anchoring's anchor-side computations (Wang et al., 2019): the anchors a shape prediction
guides, and the targets of the location branch.

The square anchors of a level are one anchor per location, ``octave_base_scale`` strides wide;
the shape branch predicts ``(dw, dh)`` per location, and the guided anchor is the square with
its width and height scaled by ``exp(dw)``, ``exp(dh)`` about its centre.
"""
from __future__ import annotations

import math

import torch

from dettool.trainer.models.task_modules.delta_xywh_coder import DeltaXYWHCoder


def guided_anchors(squares: torch.Tensor, shapes: torch.Tensor, coder: DeltaXYWHCoder) -> torch.Tensor:
    """Anchors from square anchors and shape predictions.

    Args:
        squares: ``Tensor[N, 4]`` xyxy, one level's squares (or all levels', concatenated).
        shapes: ``Tensor[B, N, 2]`` predicted ``(dw, dh)`` of each square, in the coder's units.
        coder: the anchor coder (MMDetection's ``anchor_coder``; ``wh_ratio_clip`` 1e-6).

    Returns: ``Tensor[B, N, 4]`` xyxy anchors centred on the squares.
    """
    deltas = torch.cat([torch.zeros_like(shapes), shapes], dim=-1)
    return coder.decode(squares[None].expand(shapes.shape[0], -1, -1), deltas)


def _region(box: torch.Tensor, ratio: float, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The cells (inclusive ``x1, y1, x2, y2``) of the centred ``1 - 2 * ratio`` part of ``box``
    (already in cells of the level), rounded half to even and clamped to the level ``size``
    (MMDetection's ``calc_region``)."""
    x1, y1, x2, y2 = box  # float32 arithmetic, as MMDetection's
    corners = torch.stack([(1 - ratio) * x1 + ratio * x2, (1 - ratio) * y1 + ratio * y2,
                           ratio * x1 + (1 - ratio) * x2, ratio * y1 + (1 - ratio) * y2])
    rx1, ry1, rx2, ry2 = corners.round().long().tolist()
    h, w = size
    return min(max(rx1, 0), w), min(max(ry1, 0), h), min(max(rx2, 0), w), min(max(ry2, 0), h)


def location_targets(gt_boxes: list[torch.Tensor], featmap_sizes: list[tuple[int, int]], strides: tuple[int, ...],
                     octave_base_scale: float, center_ratio: float, ignore_ratio: float,
                     device: torch.device | str = "cpu") -> tuple[list[torch.Tensor], list[torch.Tensor], float]:
    """Targets of the location branch (MMDetection's ``ga_loc_targets``).

    Each gt goes to the level whose anchors ``octave_base_scale * stride`` match its scale
    ``sqrt(w * h)`` (``floor(log2(scale / (octave_base_scale * strides[0])) + 0.5)``, clamped).
    There, the centre region (the box shrunk to ``center_ratio`` of its sides) is positive
    (target 1, weight 1), the rest of the box shrunk to ``ignore_ratio`` is ignored (weight 0), and
    the ignore region is ignored on the two neighbouring levels as well; everything else is
    negative with weight 0.1.

    Args:
        gt_boxes: per image ``Tensor[G_i, 4]`` xyxy input pixels.
        featmap_sizes: ``(H_l, W_l)`` per level.
        strides: the levels' strides.
        octave_base_scale: the approximating anchors' base scale (in strides).
        center_ratio, ignore_ratio: the positive and ignore regions' sides, fractions of the box's.

    Returns: per level ``targets`` ``Tensor[B, 1, H_l, W_l]`` (1 = object centre) and ``weights``
    (same shape), and the loss normaliser (MMDetection's: all locations of the batch / 200).
    """
    batch, num_levels = len(gt_boxes), len(featmap_sizes)
    targets = [torch.zeros((batch, 1, h, w), device=device) for h, w in featmap_sizes]
    weights = [torch.full((batch, 1, h, w), -1.0, device=device) for h, w in featmap_sizes]
    ignore = [torch.zeros((batch, 1, h, w), device=device) for h, w in featmap_sizes]
    r_center, r_ignore = (1 - center_ratio) / 2, (1 - ignore_ratio) / 2
    for i, boxes in enumerate(gt_boxes):
        boxes = boxes.float().cpu()
        if not boxes.numel():
            continue
        scale = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        levels = torch.floor(torch.log2(scale) - math.log2(octave_base_scale * strides[0]) + 0.5)
        for box, lvl in zip(boxes, levels.clamp(0, num_levels - 1).long().tolist()):
            ix1, iy1, ix2, iy2 = _region(box / strides[lvl], r_ignore, featmap_sizes[lvl])
            cx1, cy1, cx2, cy2 = _region(box / strides[lvl], r_center, featmap_sizes[lvl])
            targets[lvl][i, 0, cy1:cy2 + 1, cx1:cx2 + 1] = 1
            weights[lvl][i, 0, iy1:iy2 + 1, ix1:ix2 + 1] = 0
            weights[lvl][i, 0, cy1:cy2 + 1, cx1:cx2 + 1] = 1
            for near in (lvl - 1, lvl + 1):
                if 0 <= near < num_levels:
                    nx1, ny1, nx2, ny2 = _region(box / strides[near], r_ignore, featmap_sizes[near])
                    ignore[near][i, 0, ny1:ny2 + 1, nx1:nx2 + 1] = 1
    for w, ign in zip(weights, ignore):
        w[(w < 0) & (ign > 0)] = 0
        w[w < 0] = 0.1
    avg_factor = sum(batch * h * w for h, w in featmap_sizes) / 200
    return targets, weights, avg_factor
