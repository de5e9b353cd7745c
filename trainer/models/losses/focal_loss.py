"""Sigmoid focal loss (Lin et al., RetinaNet) on torchvision.ops.sigmoid_focal_loss."""
from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from dettool.trainer.models.losses.reduction import one_hot_targets, weight_reduce


class FocalLoss(nn.Module):
    """``FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t)`` per class, summed over classes.

    Args:
        gamma: focusing parameter.
        alpha: weight of positives (negatives get ``1 - alpha``).
        weight: loss weight.
    """

    def __init__(self, *, gamma: float, alpha: float, weight: float) -> None:
        super().__init__()
        self.gamma, self.alpha, self.weight = gamma, alpha, weight

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None,
                avg_factor: float | torch.Tensor | None = None) -> torch.Tensor:
        """Args: ``logits`` ``[N, C]``; ``labels`` ``[N]`` in ``[0, C]`` (C = background);
        ``weight`` ``[N]``. Returns a scalar."""
        if weight is not None:
            weight = weight.float()[:, None]
        return weight_reduce(self.elementwise(logits, labels), weight, avg_factor)

    def elementwise(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The weighted loss of each (row, class) ``[N, C]``, unreduced (FSAF weighs and sums it itself)."""
        onehot = one_hot_targets(labels, logits.shape[1])
        return self.weight * sigmoid_focal_loss(logits.float(), onehot, alpha=self.alpha, gamma=self.gamma,
                                                reduction="none")
