"""Smooth L1 (with ``beta``) and L1 regression losses."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from dettool.trainer.models.losses.reduction import weight_reduce


class SmoothL1Loss(nn.Module):
    """``0.5 x^2 / beta`` for ``|x| < beta``, else ``|x| - 0.5 beta`` (beta = 0 is plain L1).

    Args:
        beta: transition point (MMDetection: 1/9 in the RPN, 1.0 in RoI heads, 0.11 in RetinaNet v1).
        weight: loss weight.
    """

    decoded_boxes = False  # compares deltas

    def __init__(self, *, beta: float, weight: float) -> None:
        super().__init__()
        self.beta, self.weight = beta, weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                avg_factor: float | torch.Tensor | None = None) -> torch.Tensor:
        """Args: ``pred``, ``target``, ``weight`` ``[N, 4]``. Returns a scalar."""
        loss = F.smooth_l1_loss(pred.float(), target.float(), reduction="none", beta=self.beta)
        return self.weight * weight_reduce(loss, weight, avg_factor)


class L1Loss(nn.Module):
    """``|pred - target|``, element-wise."""

    decoded_boxes = False  # compares deltas

    def __init__(self, *, weight: float) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                avg_factor: float | torch.Tensor | None = None) -> torch.Tensor:
        """Args: ``pred``, ``target``, ``weight`` ``[N, 4]``. Returns a scalar."""
        loss = (pred.float() - target.float()).abs()
        return self.weight * weight_reduce(loss, weight, avg_factor)
