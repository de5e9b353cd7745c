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
        pos = self._positives(assign, pos, int(self.num * self.pos_fraction))
        num_neg = self.num - pos.numel()
        if self.neg_pos_ub >= 0:
            num_neg = min(num_neg, int(self.neg_pos_ub * max(pos.numel(), 1)))
        neg = torch.nonzero(assign.gt_inds == 0, as_tuple=False).squeeze(1)
        return SampleResult(pos, self._negatives(assign, neg, num_neg))

    def _positives(self, assign: AssignResult, pos: torch.Tensor, num: int) -> torch.Tensor:
        """``num`` of the positives ``pos`` (all when fewer), drawn uniformly."""
        return self._choose(pos, num)

    def _negatives(self, assign: AssignResult, neg: torch.Tensor, num: int) -> torch.Tensor:
        """``num`` of the negatives ``neg`` (all when fewer), drawn uniformly."""
        return self._choose(neg, num)

    def _fill(self, chosen: torch.Tensor, pool: torch.Tensor, num: int) -> torch.Tensor:
        """``chosen`` topped up to ``num`` with a uniform draw from the rest of ``pool``."""
        if chosen.numel() >= num:
            return chosen
        rest = pool[~torch.isin(pool, chosen)]
        return torch.cat([chosen, self._choose(rest, num - chosen.numel())])


class IoUBalancedNegSampler(RandomSampler):
    """Libra R-CNN's IoU-balanced sampling of negatives (Pang et al. 2019; MMDetection's
    ``IoUBalancedNegSampler``), and with ``instance_balanced_pos`` its positives drawn evenly over the
    gt boxes (MMDetection's ``InstanceBalancedPosSampler``; the two in its ``CombinedSampler`` are
    Libra Faster R-CNN's RoI sampler).

    Positives: when there are more than wanted, at most ``int(round(num / G) + 1)`` per gt box
    (``G`` gt boxes with positives), then the rest drawn uniformly from the others (MMDetection
    means to; its set difference of tensors removes nothing), then cut to ``num`` uniformly.

    Negatives whose best IoU is at least ``floor_thr`` (above 0 when ``floor_thr`` is 0; every
    negative when it is -1) are drawn evenly from ``num_bins`` IoU bins splitting
    ``[max(floor_thr, 0), the image's highest IoU]``, ``int(n / num_bins)`` from each (``n`` =
    ``(1 - floor_fraction)`` of the negatives wanted); the rest come uniformly from those below the
    floor, then from any negative not yet drawn. MMDetection turns ``floor_thr`` -1 into 0 after
    its first image (it assigns the attribute); here -1 keeps meaning every negative.

    Args:
        floor_thr: IoU floor of the balanced draw, ``>= 0`` or -1.
        floor_fraction: share of the negatives drawn uniformly below the floor.
        num_bins: IoU bins (1: a uniform draw above the floor).
        instance_balanced_pos: draw the positives evenly over the gt boxes (else uniformly).
        **kwargs: ``RandomSampler`` arguments.
    """

    def __init__(self, *, floor_thr: float, floor_fraction: float, num_bins: int, instance_balanced_pos: bool,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.instance_balanced_pos = instance_balanced_pos
        if not (floor_thr >= 0 or floor_thr == -1) or not 0 <= floor_fraction <= 1 or num_bins < 1:
            raise ValueError(f"IoUBalancedNegSampler: floor_thr >= 0 or -1, floor_fraction in [0, 1] and "
                             f"num_bins >= 1, got {floor_thr}, {floor_fraction}, {num_bins}")
        self.floor_thr = floor_thr
        self.floor_fraction = floor_fraction
        self.num_bins = num_bins

    def _positives(self, assign: AssignResult, pos: torch.Tensor, num: int) -> torch.Tensor:
        if not self.instance_balanced_pos or pos.numel() <= num:
            return self._choose(pos, num)
        owners = assign.gt_inds[pos]
        gts = owners.unique()
        per_gt = int(round(num / float(gts.numel())) + 1)
        chosen = self._fill(torch.cat([self._choose(pos[owners == g], per_gt) for g in gts]), pos, num)
        return self._choose(chosen, num)

    def _by_bins(self, iou: torch.Tensor, cand: torch.Tensor, num: int) -> torch.Tensor:
        low = max(self.floor_thr, 0.0)
        step = (float(iou.max()) - low) / self.num_bins
        per_bin = int(num / self.num_bins)
        cand_iou = iou[cand]
        chosen = [self._choose(cand[(cand_iou >= low + i * step) & (cand_iou < low + (i + 1) * step)], per_bin)
                  for i in range(self.num_bins)]
        return self._fill(torch.cat(chosen), cand, num)

    def _negatives(self, assign: AssignResult, neg: torch.Tensor, num: int) -> torch.Tensor:
        if neg.numel() <= num:
            return neg
        iou = assign.max_overlaps[neg]
        if self.floor_thr > 0:
            floor, balanced = iou < self.floor_thr, iou >= self.floor_thr
        elif self.floor_thr == 0:
            floor, balanced = iou == 0, iou > 0
        else:
            floor, balanced = torch.zeros_like(iou, dtype=torch.bool), torch.ones_like(iou, dtype=torch.bool)
        num_balanced = int(num * (1 - self.floor_fraction))
        cand = neg[balanced]
        if cand.numel() <= num_balanced:
            chosen = cand
        elif self.num_bins >= 2:
            chosen = self._by_bins(assign.max_overlaps, cand, num_balanced)
        else:
            chosen = self._choose(cand, num_balanced)
        chosen = torch.cat([self._choose(neg[floor], num - chosen.numel()), chosen])
        return self._fill(chosen, neg, num)
