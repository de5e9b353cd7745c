"""Softmax cross-entropy over C + 1 classes (RoI box heads; background is the last class)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from dettool.trainer.models.losses.reduction import weight_reduce


class CrossEntropyLoss(nn.Module):
    """``-log softmax(x)[label]`` per sample.

    Args:
        weight: loss weight.
    """

    def __init__(self, *, weight: float) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None,
                avg_factor: float | torch.Tensor | None = None) -> torch.Tensor:
        """Args: ``logits`` ``[N, C + 1]``; ``labels`` ``[N]`` int64 in ``[0, C]``; ``weight`` ``[N]``.
        Returns a scalar."""
        loss = F.cross_entropy(logits.float(), labels.long(), reduction="none")
        if weight is not None:
            weight = weight.float()
        return self.weight * weight_reduce(loss, weight, avg_factor)
