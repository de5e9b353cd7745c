"""R-FCN's RoI head (Dai et al., "R-FCN: Object Detection via Region-based Fully Convolutional
Networks", NIPS 2016): position-sensitive score maps computed once per image, RoIs scored by
position-sensitive RoIAlign and average voting."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from dettool.ops.ps_roi_align import ps_roi_align
from dettool.trainer.models.roi_heads.bbox_head import BBoxHead
from dettool.trainer.models.roi_heads.standard_roi_head import StandardRoIHead


class PSRoIBBoxHead(BBoxHead):
    """R-FCN's box head on a whole feature map: a 1x1 conv with ReLU to ``feat_channels`` (the
    paper's new 1024-channel layer on res5), then 1x1 convs to ``k * k * (C + 1)`` position-sensitive
    class score maps and ``k * k * 4`` box maps (``4 * C`` per bin with per-class regression). A
    RoI's ``(C + 1)`` logits and its deltas are the means over its ``k x k`` bins of
    ``dettool.ops.ps_roi_align`` of those maps (average voting), bin ``(i, j)`` reading the maps of
    that bin.

    Args:
        in_channels: channels of the feature map (res5: 2048 for ResNet-50, 512 for ResNet-18).
        feat_channels: channels of the 1x1 reduction (the paper: 1024); 0 reads the map directly.
        output_size: ``k``, bins per RoI side (the paper: 7).
        stride: input pixels per feature pixel (R-FCN's dilated res5: 16).
        sampling_ratio: bilinear samples per bin side (0: adaptive, ``ceil(roi_size / k)``).
        **kwargs: ``BBoxHead`` arguments (R-FCN: class-agnostic regression).

    Shapes: ``feat`` ``[B, in_channels, H, W]`` and ``rois`` ``[R, 5]`` ``(batch_idx, x1, y1, x2, y2)``
    in input pixels -> ``cls_score`` ``[R, C + 1]`` (background last) and ``bbox_pred`` ``[R, 4]``
    (agnostic) or ``[R, 4 * C]``.
    """

    def __init__(self, *, in_channels: int, feat_channels: int, output_size: int, stride: int, sampling_ratio: int,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.output_size = output_size
        self.stride = stride
        self.sampling_ratio = sampling_ratio
        self.reduce = nn.Conv2d(in_channels, feat_channels, 1) if feat_channels else None
        if self.reduce is not None:
            nn.init.kaiming_normal_(self.reduce.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(self.reduce.bias)
        channels = feat_channels or in_channels
        bins = output_size * output_size
        self.cls_maps = nn.Conv2d(channels, bins * (self.num_classes + 1), 1)
        self.reg_maps = nn.Conv2d(channels, bins * self.reg_out_channels, 1)
        self.init_predictors(self.cls_maps, self.reg_maps)

    def score_maps(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Position-sensitive class and box maps ``[B, k*k*(C+1), H, W]`` and ``[B, k*k*4, H, W]``."""
        x = feat if self.reduce is None else F.relu(self.reduce(feat))
        return self.cls_maps(x), self.reg_maps(x)

    def vote(self, maps: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """``[R, maps / (k * k)]``: each RoI's bins pooled from their own maps, then averaged."""
        pooled = ps_roi_align(maps, rois.to(maps.dtype), self.output_size, 1.0 / self.stride, self.sampling_ratio)
        return pooled.mean(dim=(2, 3))

    def forward(self, feat: torch.Tensor, rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cls_maps, reg_maps = self.score_maps(feat)
        return self.vote(cls_maps, rois), self.vote(reg_maps, rois)


class RFCNRoIHead(StandardRoIHead):
    """``StandardRoIHead`` whose box head is R-FCN's (:class:`PSRoIBBoxHead`): no RoI feature
    extractor, the head reads the last of the levels it is given (R-FCN: res5) whole. No mask branch.

    Args:
        bbox_head: ``PSRoIBBoxHead``.
        **kwargs: ``StandardRoIHead`` arguments but ``roi_extractor`` and ``mask_branch``.
    """

    def __init__(self, *, bbox_head: PSRoIBBoxHead, **kwargs) -> None:
        super().__init__(roi_extractor=None, bbox_head=bbox_head, mask_branch=None, **kwargs)

    def bbox_forward(self, feats: list[torch.Tensor], rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cls_score [R, C + 1], bbox_pred)`` of RoIs ``[R, 5]`` from the last level of ``feats``."""
        return self.bbox_head(feats[-1], rois)
