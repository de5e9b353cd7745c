"""Bounded IoU loss (Tychsen-Smith and Petersson, 2018) on decoded xyxy boxes."""
from __future__ import annotations

import torch
from torch import nn

from dettool.trainer.models.losses.reduction import weight_reduce


def bounded_iou_terms(pred: torch.Tensor, target: torch.Tensor, eps: float) -> torch.Tensor:
    """The four bounded-IoU distances of row-aligned boxes ``[N, 4]`` -> ``Tensor[N, 4]``:
    ``1 - max(0, (w_t - 2|dx|) / (w_t + 2|dx|))`` for the centre offsets ``dx`` (and y), and
    ``1 - min(w_t / w_p, w_p / w_t)`` for the width (and height); the target is a constant."""
    pred_c = (pred[:, :2] + pred[:, 2:]) * 0.5
    pred_wh = pred[:, 2:] - pred[:, :2]
    target = target.detach()
    target_c = (target[:, :2] + target[:, 2:]) * 0.5
    target_wh = target[:, 2:] - target[:, :2]
    d = (target_c - pred_c).abs()
    loss_xy = 1 - torch.clamp((target_wh - 2 * d) / (target_wh + 2 * d + eps), min=0)
    loss_wh = 1 - torch.min(target_wh / (pred_wh + eps), pred_wh / (target_wh + eps))
    return torch.cat([loss_xy, loss_wh], dim=1)


class BoundedIoULoss(nn.Module):
    """Smooth L1 with transition ``beta`` of the bounded-IoU distances (MMDetection's
    ``BoundedIoULoss``; Guided Anchoring's anchor-shape loss, beta 0.2).

    Args:
        beta: smooth L1 transition point.
        weight: loss weight.
        eps: added to the denominators.
    """

    decoded_boxes = True  # compares decoded boxes, not deltas

    def __init__(self, *, beta: float, weight: float, eps: float = 1e-3) -> None:
        super().__init__()
        self.beta, self.weight, self.eps = beta, weight, eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                avg_factor: float | torch.Tensor | None = None) -> torch.Tensor:
        """Args: ``pred``, ``target`` ``[N, 4]`` xyxy; ``weight`` ``[N, 4]`` or ``[N]``. Returns a scalar."""
        if weight is not None and weight.dim() == 1:
            weight = weight[:, None]
        return weight_reduce(self.elementwise(pred, target), weight, avg_factor)

    def elementwise(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The weighted loss of each box pair and term ``[N, 4]``, unreduced."""
        d = bounded_iou_terms(pred.float(), target.float(), self.eps)
        return self.weight * torch.where(d < self.beta, 0.5 * d * d / self.beta, d - 0.5 * self.beta)
