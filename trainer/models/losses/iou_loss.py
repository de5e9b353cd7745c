"""IoU and generalized IoU losses on decoded xyxy boxes."""
from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import generalized_box_iou_loss

from dettool.trainer.models.losses.reduction import weight_reduce


def aligned_iou(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """IoU of row-aligned box pairs ``[N, 4]`` x ``[N, 4]`` -> ``Tensor[N]``."""
    lt = torch.max(pred[:, :2], target[:, :2])
    rb = torch.min(pred[:, 2:], target[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    area_p = (pred[:, 2] - pred[:, 0]).clamp(min=0) * (pred[:, 3] - pred[:, 1]).clamp(min=0)
    area_t = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
    return inter / (area_p + area_t - inter).clamp(min=eps)


class IoULoss(nn.Module):
    """``-log(IoU)`` (mode ``log``, UnitBox / MMDetection default) or ``1 - IoU`` (``linear``)."""

    decoded_boxes = True  # compares decoded boxes, not deltas

    def __init__(self, *, mode: str, weight: float, eps: float = 1e-6) -> None:
        super().__init__()
        if mode not in ("log", "linear"):
            raise ValueError(f"IoULoss mode must be 'log' or 'linear', got {mode!r}")
        self.mode, self.weight, self.eps = mode, weight, eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                avg_factor: float | torch.Tensor | None = None) -> torch.Tensor:
        """Args: ``pred``, ``target`` ``[N, 4]`` xyxy; ``weight`` ``[N]``. Returns a scalar."""
        return weight_reduce(self.elementwise(pred, target), weight, avg_factor)

    def elementwise(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The weighted loss of each box pair ``[N]``, unreduced (FSAF weighs and sums it itself)."""
        iou = aligned_iou(pred.float(), target.float()).clamp(min=self.eps)
        return self.weight * (-iou.log() if self.mode == "log" else 1 - iou)


class GIoULoss(nn.Module):
    """``1 - GIoU`` (Rezatofighi et al.) via torchvision.ops.generalized_box_iou_loss."""

    decoded_boxes = True  # compares decoded boxes, not deltas

    def __init__(self, *, weight: float) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                avg_factor: float | torch.Tensor | None = None) -> torch.Tensor:
        """Args: ``pred``, ``target`` ``[N, 4]`` xyxy; ``weight`` ``[N]``. Returns a scalar."""
        return weight_reduce(self.elementwise(pred, target), weight, avg_factor)

    def elementwise(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The weighted loss of each box pair ``[N]``, unreduced (FSAF weighs and sums it itself)."""
        return self.weight * generalized_box_iou_loss(pred.float(), target.float(), reduction="none")
