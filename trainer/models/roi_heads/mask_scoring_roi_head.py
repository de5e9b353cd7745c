"""Mask Scoring R-CNN's RoI head (Huang et al., 2019; MMDetection's ``MaskScoringRoIHead``): Mask
R-CNN's, plus a MaskIoU head whose predicted IoU rescales each detection's score."""
from __future__ import annotations

import torch

from dettool.structures.detections import DetOutputs
from dettool.trainer.models.roi_heads.maskiou_head import MaskIoUHead, area_ratios
from dettool.trainer.models.roi_heads.standard_roi_head import StandardRoIHead


class MaskScoringRoIHead(StandardRoIHead):
    """``StandardRoIHead`` with a mask branch and a :class:`MaskIoUHead`.

    Training adds ``loss_mask_iou``: the MaskIoU head reads the positives' mask RoI features and
    the mask logits of their class (neither detached, as MMDetection) and regresses the IoU of the
    thresholded mask with the whole gt instance. At test time each detection's score becomes its
    classification score times the predicted IoU of its class (MMDetection rescores the boxes'
    scores too, without re-sorting: the mask score is the one score).

    Args:
        mask_iou_head: the MaskIoU head.
        **kwargs: ``StandardRoIHead`` arguments (``mask_branch`` required).
    """

    def __init__(self, *, mask_iou_head: MaskIoUHead, **kwargs) -> None:
        super().__init__(**kwargs)
        if self.mask_branch is None:
            raise ValueError("MaskScoringRoIHead needs a mask branch (roi_head.mask_head)")
        self.mask_iou_head = mask_iou_head

    def mask_losses(self, feats: list[torch.Tensor], sampled: list, targets: list[dict]) -> dict[str, torch.Tensor]:
        """``loss_mask`` and ``loss_mask_iou`` of the sampled positives."""
        pos_boxes = [s.boxes[: s.num_pos] for s in sampled]
        pos_gt_inds = [s.pos_gt_inds for s in sampled]
        labels = torch.cat([s.pos_labels for s in sampled])
        roi_feats, logits, mask_targets = self.mask_branch.train_outputs(feats, pos_boxes, pos_gt_inds, targets)
        head = self.mask_branch.mask_head
        loss_mask = head.loss(logits, mask_targets, labels)["loss_mask"]
        label_logits = head.label_logits(logits, labels)
        iou_pred = self.mask_iou_head(roi_feats, label_logits)
        iou_pred = iou_pred[torch.arange(iou_pred.shape[0], device=iou_pred.device), labels.long()]
        ratios = torch.cat([area_ratios(b, t["masks"], g) for b, g, t in zip(pos_boxes, pos_gt_inds, targets)]
                           ) if labels.numel() else iou_pred.new_zeros((0,))
        iou_targets = self.mask_iou_head.get_targets(label_logits, mask_targets, ratios.to(iou_pred.device))
        return {"loss_mask": loss_mask, "loss_mask_iou": self.mask_iou_head.loss(iou_pred, iou_targets)}

    def decode(self, feats: list[torch.Tensor], num_proposals: torch.Tensor, proposals: torch.Tensor,
               image_shapes: torch.Tensor) -> DetOutputs:
        """``StandardRoIHead.decode`` with each score times its class's predicted mask IoU."""
        dets = self.box_detections(feats, num_proposals, proposals, image_shapes)
        roi_feats, logits = self.mask_branch.decode_logits(feats, dets.boxes, dets.labels)
        iou = self.mask_iou_head(roi_feats, logits)
        labels = dets.labels.reshape(-1).clamp(min=0).long()
        iou = iou[torch.arange(iou.shape[0], device=iou.device), labels].reshape(dets.scores.shape)
        b, k = dets.boxes.shape[:2]
        masks = logits.sigmoid().reshape(b, k, logits.shape[-2], logits.shape[-1])
        return dets._replace(scores=dets.scores * iou.to(dets.scores.dtype), masks=masks)
