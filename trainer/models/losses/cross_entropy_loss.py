"""Binary cross-entropy on logits (FCOS centerness, later mask heads)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from dettool.trainer.models.losses.reduction import weight_reduce


class BCEWithLogitsLoss(nn.Module):
    """``-(t log sigmoid(x) + (1 - t) log(1 - sigmoid(x)))``, element-wise."""

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                avg_factor: float | torch.Tensor | None = None) -> torch.Tensor:
        """Args: ``logits``, ``target`` (in [0, 1]) and ``weight`` of one shape. Returns a scalar."""
        loss = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
        return self.weight * weight_reduce(loss, weight, avg_factor)
