"""Binary cross-entropy on logits (RPN objectness, FCOS centerness)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from dettool.trainer.models.losses.reduction import one_hot_targets, weight_reduce


class BCEWithLogitsLoss(nn.Module):
    """``-(t log sigmoid(x) + (1 - t) log(1 - sigmoid(x)))``, element-wise.

    The targets are probabilities of the logits' shape, or class labels ``[N]`` in ``[0, C]``
    for logits ``[N, C]`` (C = background), expanded to one-hot rows (MMDetection's
    ``CrossEntropyLoss(use_sigmoid=True)``, the RPN's objectness loss).
    """

    def __init__(self, *, weight: float) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                avg_factor: float | torch.Tensor | None = None) -> torch.Tensor:
        """Args: ``logits``; ``target`` (in [0, 1]) and ``weight`` of its shape, or labels ``[N]``
        and ``weight`` ``[N]`` for logits ``[N, C]``. Returns a scalar."""
        if not target.is_floating_point() and target.dim() == logits.dim() - 1:
            target = one_hot_targets(target, logits.shape[-1])
            weight = None if weight is None else weight.float()[:, None]
        loss = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
        return self.weight * weight_reduce(loss, weight, avg_factor)
