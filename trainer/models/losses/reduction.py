"""Weighting, normalisation and class targets shared by every loss."""
from __future__ import annotations

import torch


def weight_reduce(loss: torch.Tensor, weight: torch.Tensor | None,
                  avg_factor: float | torch.Tensor | None) -> torch.Tensor:
    """``sum(loss * weight) / avg_factor`` (mean when ``avg_factor`` is None). Empty input gives 0."""
    if weight is not None:
        loss = loss * weight
    if avg_factor is None:
        return loss.mean() if loss.numel() else loss.sum()
    return loss.sum() / avg_factor


def one_hot_targets(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[N]`` labels in ``[0, C]`` (C = background) -> float ``[N, C]`` one-hot rows (background all 0)."""
    onehot = torch.zeros((labels.shape[0], num_classes), dtype=torch.float32, device=labels.device)
    fg = (labels >= 0) & (labels < num_classes)
    onehot[fg.nonzero(as_tuple=True)[0], labels[fg]] = 1.0
    return onehot
