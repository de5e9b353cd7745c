"""Mask Scoring R-CNN's MaskIoU head (Huang et al., "Mask Scoring R-CNN", CVPR 2019; MMDetection's
``MaskIoUHead``): it regresses the IoU of each predicted mask with its ground truth, and a
detection's score becomes its classification score times that predicted IoU."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def area_ratios(pos_boxes: torch.Tensor, gt_masks: torch.Tensor, pos_gt_inds: torch.Tensor) -> torch.Tensor:
    """For each positive RoI, the share of its gt mask's area that lies inside the RoI
    (MMDetection's ``MaskIoUHead._get_area_ratio``: the box truncated to whole pixels, clipped to
    the image, at least one pixel wide and high).

    Args:
        pos_boxes: ``Tensor[P, 4]`` xyxy in the pixels of ``gt_masks``.
        gt_masks: ``Tensor[G, H, W]`` the image's instance masks.
        pos_gt_inds: ``Tensor[P]`` index into ``gt_masks`` of each positive.

    Returns: ``Tensor[P]`` float32 in ``[0, 1]`` (0 for an empty gt mask).
    """
    if pos_boxes.shape[0] == 0:
        return pos_boxes.new_zeros((0,), dtype=torch.float32)
    masks = gt_masks.to(pos_boxes.device)
    height, width = masks.shape[-2:]
    # an integral image per gt mask: the area of any box in four reads
    integral = F.pad(masks.float().cumsum(1).cumsum(2), (1, 0, 1, 0))
    box = pos_boxes.detach().to(torch.int32).long()  # numpy's astype(int32): truncation
    x1, x2 = box[:, 0].clamp(0, width), box[:, 2].clamp(0, width)
    y1, y2 = box[:, 1].clamp(0, height), box[:, 3].clamp(0, height)
    x2 = (x1 + (x2 - x1).clamp(min=1)).clamp(max=width)  # a slice past the edge stops there
    y2 = (y1 + (y2 - y1).clamp(min=1)).clamp(max=height)
    g = pos_gt_inds.to(pos_boxes.device).long()
    inside = integral[g, y2, x2] - integral[g, y1, x2] - integral[g, y2, x1] + integral[g, y1, x1]
    return inside / (integral[g, -1, -1] + 1e-7)


class MaskIoUHead(nn.Module):
    """``num_convs`` 3x3 convs with ReLU (the last with stride 2) on the RoI features concatenated
    with the max-pooled (2x2) mask probabilities of the RoI's class, ``num_fcs`` FCs with ReLU, then
    one IoU per class.

    Args:
        num_classes: C.
        in_channels: channels of the mask branch's RoI features (256).
        roi_feat_size: their side (14); the masks are twice that.
        num_convs, num_fcs: 4 and 2 in MMDetection.
        conv_out_channels, fc_out_channels: 256 and 1024.
        loss_weight: factor on the MSE of the IoU of the positives' class (0.5).
        mask_thr_binary: the predicted mask of an IoU target is its logits above this (MMDetection
            thresholds the logits, not the probabilities: 0.5 is a probability of 0.62).

    Shapes: ``forward(roi_feats [N, in_channels, S, S], mask_logits [N, 2S, 2S])`` -> ``[N, C]``.
    """

    def __init__(self, *, num_classes: int, in_channels: int, roi_feat_size: int, num_convs: int, num_fcs: int,
                 conv_out_channels: int, fc_out_channels: int, loss_weight: float, mask_thr_binary: float) -> None:
        super().__init__()
        self.num_classes, self.loss_weight, self.mask_thr_binary = num_classes, loss_weight, mask_thr_binary
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels + 1 if i == 0 else conv_out_channels, conv_out_channels, 3,
                      stride=2 if i == num_convs - 1 else 1, padding=1) for i in range(num_convs))
        pooled = (roi_feat_size // 2) ** 2 if num_convs else roi_feat_size ** 2
        self.fcs = nn.ModuleList(
            nn.Linear(conv_out_channels * pooled if i == 0 else fc_out_channels, fc_out_channels)
            for i in range(num_fcs))
        self.fc_mask_iou = nn.Linear(fc_out_channels if num_fcs else conv_out_channels * pooled, num_classes)
        for conv in self.convs:  # MMDetection: Kaiming (fan_out, normal) convs, Caffe2Xavier FCs
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        for fc in self.fcs:
            nn.init.kaiming_uniform_(fc.weight, a=1, mode="fan_in", nonlinearity="leaky_relu")
            nn.init.zeros_(fc.bias)
        nn.init.normal_(self.fc_mask_iou.weight, std=0.01)
        nn.init.zeros_(self.fc_mask_iou.bias)

    def forward(self, roi_feats: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
        pooled = F.max_pool2d(mask_logits.sigmoid()[:, None], 2, 2)
        x = torch.cat([roi_feats, pooled.to(roi_feats.dtype)], dim=1)
        for conv in self.convs:
            x = F.relu(conv(x))
        x = x.flatten(1)
        for fc in self.fcs:
            x = F.relu(fc(x))
        return self.fc_mask_iou(x)

    def get_targets(self, mask_logits: torch.Tensor, mask_targets: torch.Tensor,
                    ratios: torch.Tensor) -> torch.Tensor:
        """IoU of each positive's predicted mask with its whole gt instance: the overlap inside the
        RoI over the union, the gt's area being its area inside the RoI divided by ``ratios``
        (:func:`area_ratios`). ``mask_logits`` / ``mask_targets``: ``[P, M, M]``; returns ``[P]``."""
        pred = (mask_logits.detach() > self.mask_thr_binary).float()
        overlap = (pred * mask_targets).sum((-1, -2))
        gt_full = mask_targets.sum((-1, -2)) / (ratios + 1e-7)
        return overlap / (pred.sum((-1, -2)) + gt_full - overlap)

    def loss(self, iou_pred: torch.Tensor, iou_targets: torch.Tensor) -> torch.Tensor:
        """MSE of the positives' class IoU ``[P]`` against targets ``[P]`` where the target is
        above 0 (mean over those), times ``loss_weight``; 0 in the graph when none is."""
        valid = iou_targets > 0
        if not bool(valid.any()):
            return iou_pred.sum() * 0
        return self.loss_weight * F.mse_loss(iou_pred[valid], iou_targets[valid].to(iou_pred.dtype))
