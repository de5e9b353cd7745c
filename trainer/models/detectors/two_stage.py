"""Two-stage detector: backbone -> neck -> RPN (or given proposals) -> RoI head."""
from __future__ import annotations

import torch
from torch import nn

from dettool.trainer.models.dense_heads.rpn_head import ProposalSettings
from dettool.trainer.models.structures import Detections


class TwoStageDetector(nn.Module):
    """Faster / Mask / Cascade R-CNN, or Fast R-CNN when ``rpn_head`` is None.

    Fast R-CNN reads each image's proposals from ``meta['proposals']`` (``Tensor[K, 4 or 5]`` in
    resized-image pixels, put there by the dataset from a proposals file).

    Args:
        backbone, neck: feature extractor.
        rpn_head: ``RPNHead`` or None.
        roi_head: ``StandardRoIHead`` or ``CascadeRoIHead``.
        train_proposals, test_proposals: RPN proposal settings in training and at test time.
    """

    def __init__(self, backbone: nn.Module, neck: nn.Module, rpn_head: nn.Module | None, roi_head: nn.Module,
                 train_proposals: ProposalSettings = ProposalSettings(nms_pre=2000),
                 test_proposals: ProposalSettings = ProposalSettings()) -> None:
        super().__init__()
        self.train_proposals, self.test_proposals = train_proposals, test_proposals
        self.backbone = backbone
        self.neck = neck
        self.rpn_head = rpn_head
        self.roi_head = roi_head

    def extract_feats(self, images: torch.Tensor) -> list[torch.Tensor]:
        """FPN levels ``[B, C, H / s, W / s]``."""
        return self.neck(self.backbone(images))

    def forward(self, images: torch.Tensor) -> tuple:
        """Raw outputs: (FPN features, RPN (cls_scores, bbox_preds) or None)."""
        feats = self.extract_feats(images)
        return feats, (self.rpn_head(feats) if self.rpn_head is not None else None)

    def _given_proposals(self, metas: list[dict], device: torch.device) -> list[torch.Tensor]:
        if any("proposals" not in m for m in metas):
            raise ValueError("Fast R-CNN needs proposals: set data.train.proposals_file / data.val.proposals_file")
        return [m["proposals"].to(device) for m in metas]

    def loss(self, images: torch.Tensor, targets: list[dict], metas: list[dict]) -> dict[str, torch.Tensor]:
        """RPN losses (``loss_rpn_*``) and RoI head losses."""
        feats, rpn_raw = self(images)
        losses: dict[str, torch.Tensor] = {}
        if self.rpn_head is not None:
            losses.update(self.rpn_head.loss(rpn_raw, targets, metas))
            proposals = self.rpn_head.predict_proposals(rpn_raw, metas, self.train_proposals)
        else:
            proposals = self._given_proposals(metas, images.device)
        losses.update(self.roi_head.loss(feats, proposals, targets, metas))
        return losses

    @torch.no_grad()
    def predict(self, images: torch.Tensor, metas: list[dict]) -> list[Detections]:
        """Detections per image in original pixels (masks pasted at the original size)."""
        feats, rpn_raw = self(images)
        if self.rpn_head is not None:
            proposals = self.rpn_head.predict_proposals(rpn_raw, metas, self.test_proposals)
        else:
            proposals = self._given_proposals(metas, images.device)
        return self.roi_head.predict(feats, proposals, metas)
