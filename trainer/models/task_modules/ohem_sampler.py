"""Online hard example mining (Shrivastava et al., 2016): keep the RoIs the head gets most wrong."""
from __future__ import annotations

import torch

from dettool.trainer.models.task_modules.max_iou_assigner import AssignResult
from dettool.trainer.models.task_modules.samplers import SampleResult


class OHEMSampler:
    """Sample ``num`` candidates by highest loss, at most ``pos_fraction`` of them positive.

    The counts follow :class:`RandomSampler`: at most ``int(num * pos_fraction)`` positives,
    negatives fill up to ``num``, capped at ``neg_pos_ub * max(num_pos, 1)`` when
    ``neg_pos_ub >= 0``. Within each group the candidates with the highest ``roi_losses`` are
    kept (MMDetection's ``OHEMSampler`` mines positives and negatives alike). The caller computes
    ``roi_losses`` with the current head and without grad, typically the per-RoI sum of the
    classification and regression losses against the assigned targets.

    Args:
        num: total number of samples per image.
        pos_fraction: upper bound of the positive share.
        neg_pos_ub: upper bound of negatives per positive; negative disables the cap.
    """

    def __init__(self, *, num: int, pos_fraction: float, neg_pos_ub: float) -> None:
        self.num = num
        self.pos_fraction = pos_fraction
        self.neg_pos_ub = neg_pos_ub

    @staticmethod
    def _hardest(inds: torch.Tensor, losses: torch.Tensor, k: int) -> torch.Tensor:
        """The ``k`` of ``inds`` with the highest ``losses[inds]``, hardest first (all if fewer)."""
        if inds.numel() <= k:
            return inds
        return inds[losses[inds].topk(k).indices]

    def sample(self, assign: AssignResult, roi_losses: torch.Tensor) -> SampleResult:
        """Choose the hardest positives and negatives.

        Args:
            assign: assignment of N candidates (``gt_inds`` > 0 positive, 0 negative, -1 ignored).
            roi_losses: ``Tensor[N]`` loss of each candidate (no grad needed).

        Returns: ``SampleResult`` with ``pos_inds`` ``Tensor[P]`` and ``neg_inds`` ``Tensor[Q]``.
        """
        losses = roi_losses.detach().float()
        pos = torch.nonzero(assign.gt_inds > 0, as_tuple=False).squeeze(1)
        pos = self._hardest(pos, losses, int(self.num * self.pos_fraction))
        num_neg = self.num - pos.numel()
        if self.neg_pos_ub >= 0:
            num_neg = min(num_neg, int(self.neg_pos_ub * max(pos.numel(), 1)))
        neg = torch.nonzero(assign.gt_inds == 0, as_tuple=False).squeeze(1)
        return SampleResult(pos, self._hardest(neg, losses, max(num_neg, 0)))
