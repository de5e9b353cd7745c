"""Multi-level RoIAlign: map each RoI to one FPN level by its size, then pool it there.

MMDetection's ``SingleRoIExtractor`` with ``RoIAlign`` (detectron2's ``ROIPooler``). The module
holds the settings; the computation is ``dettool.ops.multi_level_roi_align``, the op the deploy
graphs run (differentiable, with a fast exact CPU backward), so training, evaluation and export
pool with one implementation.
"""
from __future__ import annotations

import torch
from torch import nn

from dettool.ops.multi_level_roi_align import map_roi_levels, multi_level_roi_align

__all__ = ["MultiLevelRoIAlign", "map_roi_levels"]


class MultiLevelRoIAlign(nn.Module):
    """Pool ``output_size x output_size`` features per RoI from the level its size maps to.

    Args:
        output_size: side of the pooled feature.
        strides: stride of each used level; only the first ``len(strides)`` feature maps are read.
        sampling_ratio: sampling points per bin side (0 = adaptive, ``ceil(roi_size / output_size)``).
        finest_scale: see :func:`map_roi_levels`.
        aligned: shift box coordinates by -0.5 pixel (the pixel-model-correct RoIAlign).
    """

    def __init__(self, output_size: int = 7, strides: tuple[int, ...] = (4, 8, 16, 32), sampling_ratio: int = 0,
                 finest_scale: int = 56, aligned: bool = True) -> None:
        super().__init__()
        self.output_size = output_size
        self.strides = tuple(strides)
        self.sampling_ratio = sampling_ratio
        self.finest_scale = finest_scale
        self.aligned = aligned

    map_roi_levels = staticmethod(map_roi_levels)

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    def forward(self, feats: list[torch.Tensor], rois: torch.Tensor,
                roi_scale_factor: float | None = None) -> torch.Tensor:
        """Pooled features of every RoI, in the order of ``rois``.

        The level of a RoI comes from its box as given; with ``roi_scale_factor`` the box is then
        scaled about its centre before pooling (MMDetection's ``roi_scale_factor``; Double-Head
        R-CNN's regression branch uses 1.3).

        Args:
            feats: per level ``Tensor[B, C, H_l, W_l]``; levels past ``len(strides)`` are ignored.
            rois: ``Tensor[R, 5]`` rows ``(batch_idx, x1, y1, x2, y2)`` in input pixels.
            roi_scale_factor: scale of the pooled boxes, > 0; None pools the boxes as given.

        Returns: ``Tensor[R, C, output_size, output_size]`` of the features' type (``R = 0`` gives
        an empty tensor).
        """
        feats = feats[: self.num_levels]
        if len(feats) < self.num_levels:
            raise ValueError(f"MultiLevelRoIAlign: {len(feats)} feature maps for {self.num_levels} strides")
        # The op pools in at least fp32 (as MMDetection's force_fp32): fp16 cannot hold pixel
        # coordinates past 2048 exactly.
        return multi_level_roi_align(rois, feats, self.output_size, self.output_size, self.strides,
                                     sampling_ratio=self.sampling_ratio, finest_scale=self.finest_scale,
                                     aligned=self.aligned,
                                     roi_scale_factor=1.0 if roi_scale_factor is None else roi_scale_factor)
