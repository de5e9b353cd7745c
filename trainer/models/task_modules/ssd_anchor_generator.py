"""SSD's anchors (MMDetection's ``SSDAnchorGenerator``): per level a min and a max size."""
from __future__ import annotations

import math

import torch

from dettool.trainer.models.task_modules.anchor_generator import AnchorGrid, base_anchors

# SSD's first level, in percent of the input size, keyed by (input_size, basesize_ratio_range[0]):
# the rest of the levels start at basesize_ratio_range[0], so the first lies below them.
_FIRST_LEVEL_PERCENT = {
    (300, 0.15): (7, 15),  # SSD300 COCO
    (300, 0.2): (10, 20),  # SSD300 VOC
    (512, 0.1): (4, 10),  # SSD512 COCO
    (512, 0.15): (7, 15),  # SSD512 VOC
}


def ssd_anchor_sizes(input_size: int, basesize_ratio_range: tuple[float, float],
                     num_levels: int) -> tuple[list[int], list[int]]:
    """Per level the min and max anchor size in pixels, MMDetection's rule.

    Levels 1.. take sizes evenly spaced (in whole percent of ``input_size``) from
    ``basesize_ratio_range[0]`` up to ``[1]``, each level's max the next one's min; level 0 takes
    a fixed smaller pair (:data:`_FIRST_LEVEL_PERCENT`: 7% / 15% for SSD300 COCO, 4% / 10% for
    SSD512 COCO). Sizes are truncated to whole pixels. SSD300 COCO: min (21, 45, 99, 153, 207, 261),
    max (45, 99, 153, 207, 261, 315).

    Returns:
        ``(min_sizes, max_sizes)``, ``num_levels`` each.
    """
    first = _FIRST_LEVEL_PERCENT.get((input_size, basesize_ratio_range[0]))
    if first is None:
        known = ", ".join(f"{s} with {r}" for s, r in _FIRST_LEVEL_PERCENT)
        raise ValueError(f"SSD anchors: no first-level rule for input_size {input_size} with basesize_ratio_range "
                         f"starting at {basesize_ratio_range[0]} (known: {known}); give min_sizes and max_sizes")
    # int() of the percentages as MMDetection takes them: 0.15 * 100 is 15.000000000000002 -> 15
    min_ratio, max_ratio = int(basesize_ratio_range[0] * 100), int(basesize_ratio_range[1] * 100)
    step = (max_ratio - min_ratio) // (num_levels - 2)
    ratios = range(min_ratio, max_ratio + 1, step)
    min_sizes = [int(input_size * first[0] / 100)] + [int(input_size * r / 100) for r in ratios]
    max_sizes = [int(input_size * first[1] / 100)] + [int(input_size * (r + step) / 100) for r in ratios]
    if len(min_sizes) != num_levels:
        raise ValueError(f"SSD anchors: basesize_ratio_range {basesize_ratio_range} gives {len(min_sizes)} "
                         f"levels, not {num_levels}")
    return min_sizes, max_sizes


class SSDAnchorGenerator(AnchorGrid):
    """SSD's grid anchors, equal to MMDetection's ``SSDAnchorGenerator`` (``scale_major=False``).

    At level ``l`` with stride ``s``, min size ``m`` and max size ``M``, the anchors of a location
    are centred at ``(s / 2, s / 2)`` of its cell and are, in this order: the square of side ``m``,
    the square of side ``sqrt(m * M)``, then for each ``r`` in the level's ratios the pair of
    side ``m`` boxes with h / w ``1 / r`` and ``r``. Four anchors for ratios (2,), six for (2, 3).

    Args:
        strides: stride of each level, e.g. (8, 16, 32, 64, 100, 300) for SSD300.
        ratios: per level the aspect ratios ``r`` above, e.g. ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)).
        min_sizes: per level the anchor size ``m`` in pixels (:func:`ssd_anchor_sizes`).
        max_sizes: per level the size ``M`` in pixels.
        max_side: anchor widths and heights are capped at this (torchvision's
            ``DefaultBoxGenerator(clip=True)`` caps them at the input size); None: no cap.
    """

    def __init__(self, strides: tuple[int, ...], ratios: tuple[tuple[float, ...], ...],
                 min_sizes: tuple[float, ...], max_sizes: tuple[float, ...], max_side: float | None = None) -> None:
        if not len(strides) == len(ratios) == len(min_sizes) == len(max_sizes):
            raise ValueError(f"SSDAnchorGenerator: strides, ratios, min_sizes and max_sizes need one entry per level, "
                             f"got {len(strides)}, {len(ratios)}, {len(min_sizes)}, {len(max_sizes)}")
        anchors = []
        for stride, level_ratios, min_size, max_size in zip(strides, ratios, min_sizes, max_sizes):
            all_ratios = torch.tensor([1.0] + [x for r in level_ratios for x in (1 / r, r)], dtype=torch.float32)
            scales = torch.tensor([1.0, math.sqrt(max_size / min_size)], dtype=torch.float32)
            # (scale, ratio) pairs scale-major: keep (1, 1), (sqrt(M/m), 1), then (1, r) for r != 1
            grid = base_anchors(min_size, all_ratios, scales, stride / 2, scale_major=False)
            n = len(all_ratios)
            grid = grid[[0, n, *range(1, n)]]
            if max_side is not None:  # the same centre, sides capped
                center = (grid[:, :2] + grid[:, 2:]) / 2
                half = ((grid[:, 2:] - grid[:, :2]) / 2).clamp(max=max_side / 2)
                grid = torch.cat([center - half, center + half], dim=1)
            anchors.append(grid)
        super().__init__(strides, anchors)
