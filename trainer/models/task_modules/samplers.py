"""Samplers choosing which assigned candidates contribute to the loss."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dettool.trainer.models.task_modules.max_iou_assigner import AssignResult


@dataclass
class SampleResult:
    """Indices ``pos_inds`` ``Tensor[P]`` and ``neg_inds`` ``Tensor[Q]`` into the candidates."""

    pos_inds: torch.Tensor
    neg_inds: torch.Tensor


class PseudoSampler:
    """Keep every positive and every negative (dense heads with focal loss)."""

    def sample(self, assign: AssignResult) -> SampleResult:
        pos = torch.nonzero(assign.gt_inds > 0, as_tuple=False).squeeze(1)
        neg = torch.nonzero(assign.gt_inds == 0, as_tuple=False).squeeze(1)
        return SampleResult(pos, neg)


class RandomSampler:
    """Sample ``num`` candidates, at most ``pos_fraction`` of them positive.

    Negatives fill the remainder, capped at ``neg_pos_ub * max(num_pos, 1)`` when
    ``neg_pos_ub >= 0`` (MMDetection's rule).

    Args:
        num: total number of samples per image.
        pos_fraction: upper bound of the positive share.
        neg_pos_ub: upper bound of negatives per positive; negative disables the cap.
        generator: optional ``torch.Generator`` for reproducible draws.
    """

    def __init__(self, *, num: int, pos_fraction: float, neg_pos_ub: float,
                 generator: torch.Generator | None = None) -> None:
        self.num = num
        self.pos_fraction = pos_fraction
        self.neg_pos_ub = neg_pos_ub
        self.generator = generator

    def _choose(self, inds: torch.Tensor, k: int) -> torch.Tensor:
        if inds.numel() <= k:
            return inds
        perm = torch.randperm(inds.numel(), generator=self.generator)[:k].to(inds.device)
        return inds[perm]

    def sample(self, assign: AssignResult) -> SampleResult:
        pos = torch.nonzero(assign.gt_inds > 0, as_tuple=False).squeeze(1)
        pos = self._choose(pos, int(self.num * self.pos_fraction))
        num_neg = self.num - pos.numel()
        if self.neg_pos_ub >= 0:
            num_neg = min(num_neg, int(self.neg_pos_ub * max(pos.numel(), 1)))
        neg = torch.nonzero(assign.gt_inds == 0, as_tuple=False).squeeze(1)
        return SampleResult(pos, self._choose(neg, num_neg))
