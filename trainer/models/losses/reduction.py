"""Weighting and normalisation shared by every loss."""
from __future__ import annotations

import torch


def weight_reduce(loss: torch.Tensor, weight: torch.Tensor | None, avg_factor: float | torch.Tensor | None) -> torch.Tensor:
    """``sum(loss * weight) / avg_factor`` (mean when ``avg_factor`` is None). Empty input gives 0."""
    if weight is not None:
        loss = loss * weight
    if avg_factor is None:
        return loss.mean() if loss.numel() else loss.sum()
    return loss.sum() / avg_factor
