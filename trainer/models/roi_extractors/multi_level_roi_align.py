"""Multi-level RoIAlign: map each RoI to one FPN level by its size, then pool it there.

MMDetection's ``SingleRoIExtractor`` with ``RoIAlign`` (detectron2's ``ROIPooler``), on
``torchvision.ops.roi_align`` (with a faster, equal CPU backward: ``roi_align_cpu_grad``).
"""
from __future__ import annotations

import torch
from torch import nn

from dettool.trainer.models.ops.roi_align_cpu_grad import roi_align


def map_roi_levels(rois: torch.Tensor, num_levels: int, finest_scale: int = 56) -> torch.Tensor:
    """FPN level of each RoI by its scale ``sqrt(w * h)`` (MMDetection's rule).

    ``level = floor(log2(scale / finest_scale + 1e-6))`` clamped to ``[0, num_levels - 1]``;
    with ``finest_scale = 56``: scale < 112 -> 0, < 224 -> 1, < 448 -> 2, else 3.

    Args:
        rois: ``Tensor[R, 5]`` rows ``(batch_idx, x1, y1, x2, y2)`` in input pixels.
        num_levels: number of feature levels.
        finest_scale: scale mapped to the boundary of level 0 and 1, halved.

    Returns: ``Tensor[R]`` int64 level indices.
    """
    scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
    levels = torch.floor(torch.log2(scale / finest_scale + 1e-6))
    return levels.clamp(min=0, max=num_levels - 1).long()


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

    def forward(self, feats: list[torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
        """Pooled features of every RoI, in the order of ``rois``.

        Args:
            feats: per level ``Tensor[B, C, H_l, W_l]``; levels past ``len(strides)`` are ignored.
            rois: ``Tensor[R, 5]`` rows ``(batch_idx, x1, y1, x2, y2)`` in input pixels.

        Returns: ``Tensor[R, C, output_size, output_size]`` (``R = 0`` gives an empty tensor).
        """
        feats = feats[: self.num_levels]
        if len(feats) < self.num_levels:
            raise ValueError(f"MultiLevelRoIAlign: {len(feats)} feature maps for {self.num_levels} strides")
        s = self.output_size
        out = feats[0].new_zeros((rois.shape[0], feats[0].shape[1], s, s))
        if rois.shape[0] == 0:
            return out
        # Pool in at least fp32 (as MMDetection's force_fp32): fp16 cannot hold pixel coordinates
        # past 2048 exactly, and roi_align wants features and boxes of one dtype.
        dtype = torch.promote_types(feats[0].dtype, torch.float32)
        rois = rois.to(dtype)
        levels = map_roi_levels(rois, self.num_levels, self.finest_scale)
        for lvl, (feat, stride) in enumerate(zip(feats, self.strides)):
            inds = (levels == lvl).nonzero(as_tuple=True)[0]
            if inds.numel() == 0:
                continue
            out[inds] = roi_align(feat.to(dtype), rois[inds], (s, s), spatial_scale=1.0 / stride,
                                  sampling_ratio=self.sampling_ratio, aligned=self.aligned).to(out.dtype)
        return out
