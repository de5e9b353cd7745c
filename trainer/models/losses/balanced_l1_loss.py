"""Balanced L1 regression loss (Pang et al. 2019, "Libra R-CNN: Towards Balanced Learning for Object Detection")."""
from __future__ import annotations

import math

import torch
from torch import nn

from dettool.trainer.models.losses.reduction import weight_reduce


def balanced_l1(diff: torch.Tensor, *, alpha: float, gamma: float, beta: float) -> torch.Tensor:
    """Element-wise balanced L1 of ``diff = |pred - target|`` (MMDetection's formula).

    With ``b = exp(gamma / alpha) - 1``: ``alpha / b (b x + 1) ln(b x / beta + 1) - alpha x`` for
    ``x < beta``, else ``gamma x + gamma / b - alpha beta``. The two pieces meet at ``x = beta``;
    the inliers' (small errors') gradient, ``alpha ln(b x + 1)`` at ``beta = 1``, is larger than
    smooth L1's.

    Args:
        diff: non-negative errors, any shape.

    Returns:
        the loss, ``diff``'s shape.
    """
    b = math.exp(gamma / alpha) - 1
    inlier = alpha / b * (b * diff + 1) * torch.log(b * diff / beta + 1) - alpha * diff
    outlier = gamma * diff + gamma / b - alpha * beta
    return torch.where(diff < beta, inlier, outlier)


class BalancedL1Loss(nn.Module):
    """Balanced L1 on box deltas: promotes the gradients of accurate (inlier) samples.

    Args:
        alpha: the inliers' gradient scale (0.5 in the paper).
        gamma: the outliers' gradient, the loss's slope past ``beta`` (1.5).
        beta: transition point (1.0 in Libra R-CNN's RoI head; 0.11 in Libra RetinaNet).
        weight: loss weight.
    """

    decoded_boxes = False  # compares deltas

    def __init__(self, *, alpha: float, gamma: float, beta: float, weight: float) -> None:
        super().__init__()
        if beta <= 0:
            raise ValueError(f"beta must be positive, got {beta}")
        self.alpha, self.gamma, self.beta, self.weight = alpha, gamma, beta, weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                avg_factor: float | torch.Tensor | None = None) -> torch.Tensor:
        """Args: ``pred``, ``target``, ``weight`` ``[N, 4]``. Returns a scalar."""
        diff = (pred.float() - target.float()).abs()
        loss = balanced_l1(diff, alpha=self.alpha, gamma=self.gamma, beta=self.beta)
        return self.weight * weight_reduce(loss, weight, avg_factor)
