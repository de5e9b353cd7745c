"""Gradient harmonizing losses (Li et al. 2019, "Gradient Harmonized Single-stage Detector").

Each element's loss is weighted by the inverse density of its gradient norm ``g``: the norm's
range is cut into ``bins`` equal bins, an element in a bin holding ``N_b`` of the ``tot`` valid
elements gets weight ``tot / N_b``, divided by the number of non-empty bins. With ``momentum``
the bin counts are exponential moving averages over iterations (kept in the ``acc_sum`` buffer,
so they travel with checkpoints). MMDetection's ``GHMC`` / ``GHMR``, with the bin loop replaced
by one ``bucketize`` + ``bincount``.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from dettool.trainer.models.losses.reduction import one_hot_targets


class _GradientDensity(nn.Module):
    """Bin edges and (with momentum) running bin counts shared by GHM-C and GHM-R.

    Args:
        bins: number of bins over the gradient norm.
        momentum: weight of the past counts in their moving average; 0 uses this batch's counts.
        last_edge: upper edge of the last bin (just above the largest possible norm).
    """

    def __init__(self, bins: int, momentum: float, last_edge: float) -> None:
        super().__init__()
        edges = torch.arange(bins + 1, dtype=torch.float32) / bins
        edges[-1] = last_edge
        self.register_buffer("edges", edges, persistent=False)
        self.bins, self.momentum = bins, momentum
        if momentum > 0:
            self.register_buffer("acc_sum", torch.zeros(bins))

    def weights(self, g: torch.Tensor, valid: torch.Tensor, tot: float) -> torch.Tensor:
        """Per-element weights ``tot / count(bin) / non-empty bins`` (0 where not ``valid``).

        Args:
            g: gradient norms, any shape, in ``[0, last_edge)``; valid: bool of ``g``'s shape.
            tot: the normaliser (number of valid elements, or the sum of their weights).
        """
        bin_of = (torch.bucketize(g, self.edges.to(g.device), right=True) - 1).clamp(0, self.bins - 1)
        counts = torch.bincount(bin_of[valid], minlength=self.bins).to(torch.float32)
        filled = counts > 0
        if self.momentum > 0:
            acc = torch.where(filled, self.momentum * self.acc_sum + (1 - self.momentum) * counts, self.acc_sum)
            self.acc_sum.copy_(acc)
            density = acc
        else:
            density = counts
        per_bin = torch.where(filled, tot / density.clamp(min=1e-12), torch.zeros_like(density))
        weights = torch.where(valid, per_bin[bin_of], torch.zeros_like(g))
        num_filled = int(filled.sum())
        return weights / num_filled if num_filled > 0 else weights


class GHMCLoss(nn.Module):
    """GHM-C: sigmoid cross-entropy weighted by the density of ``g = |sigmoid(x) - t|``.

    Args:
        bins: gradient-norm bins (MMDetection's GHM RetinaNet: 30).
        momentum: moving-average weight of the bin counts (0.75).
        weight: loss weight.
    """

    def __init__(self, *, bins: int, momentum: float, weight: float) -> None:
        super().__init__()
        self.density = _GradientDensity(bins, momentum, last_edge=1.0 + 1e-6)
        self.weight = weight

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None,
                avg_factor: float | torch.Tensor | None = None) -> torch.Tensor:
        """Args: ``logits`` ``[N, C]``; ``labels`` ``[N]`` in ``[0, C]`` (C = background);
        ``weight`` ``[N]`` (0 = ignored). ``avg_factor`` is not used: GHM normalises by the number
        of valid elements. Returns a scalar."""
        logits = logits.float()
        target = one_hot_targets(labels, logits.shape[1])
        valid = (weight.float()[:, None] > 0).expand_as(logits) if weight is not None else torch.ones_like(
            logits, dtype=torch.bool)
        tot = max(float(valid.sum()), 1.0)
        g = (logits.detach().sigmoid() - target).abs()
        w = self.density.weights(g, valid, tot)
        loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return self.weight * (loss * w).sum() / tot


class GHMRLoss(nn.Module):
    """GHM-R: authentic smooth L1 ``sqrt(d^2 + mu^2) - mu`` on deltas, weighted by the density of
    its gradient norm ``|d| / sqrt(d^2 + mu^2)``.

    Args:
        mu: smoothness of the authentic smooth L1 (MMDetection: 0.02).
        bins: gradient-norm bins (10).
        momentum: moving-average weight of the bin counts (0.7).
        weight: loss weight (10).
    """

    decoded_boxes = False  # compares deltas

    def __init__(self, *, mu: float, bins: int, momentum: float, weight: float) -> None:
        super().__init__()
        self.density = _GradientDensity(bins, momentum, last_edge=1e3)
        self.mu, self.weight = mu, weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                avg_factor: float | torch.Tensor | None = None) -> torch.Tensor:
        """Args: ``pred``, ``target``, ``weight`` ``[N, 4]`` (0 = not a positive). ``avg_factor``
        is not used: GHM normalises by the sum of the weights. Returns a scalar."""
        diff = pred.float() - target.float()
        root = torch.sqrt(diff * diff + self.mu * self.mu)
        loss = root - self.mu
        weight = torch.ones_like(diff) if weight is None else weight.float()
        valid = weight > 0
        tot = max(float(weight.sum()), 1.0)
        w = self.density.weights((diff / root).abs().detach(), valid, tot)
        return self.weight * (loss * w).sum() / tot
