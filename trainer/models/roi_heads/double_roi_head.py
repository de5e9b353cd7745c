"""Double-Head R-CNN's RoI head (MMDetection's ``DoubleHeadRoIHead``): the standard RoI head
whose box head classifies the RoIs' features and regresses from enlarged RoIs' features."""
from __future__ import annotations

import torch

from dettool.trainer.models.roi_heads.standard_roi_head import StandardRoIHead


class DoubleHeadRoIHead(StandardRoIHead):
    """``StandardRoIHead`` with a ``DoubleConvFCBBoxHead``.

    Args:
        reg_roi_scale_factor: the regression branch pools each RoI enlarged this many times
            around its centre, at the FPN level of the RoI itself (MMDetection: 1.3).
        **kwargs: ``StandardRoIHead`` arguments.
    """

    def __init__(self, *, reg_roi_scale_factor: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.reg_roi_scale_factor = reg_roi_scale_factor

    def bbox_forward(self, feats: list[torch.Tensor], rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cls_score, bbox_pred)`` from the RoIs' features and the enlarged RoIs' features."""
        cls_feats = self.roi_extractor(feats, rois)
        reg_feats = self.roi_extractor(feats, rois, roi_scale_factor=self.reg_roi_scale_factor)
        return self.bbox_head(cls_feats, reg_feats)
