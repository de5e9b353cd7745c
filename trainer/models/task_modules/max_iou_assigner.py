"""Max-IoU assignment of candidate boxes (anchors, proposals) to ground-truth boxes."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import box_iou


@dataclass
class AssignResult:
    """Outcome of an assignment over N candidates and G ground truths.

    Attributes:
        gt_inds: ``Tensor[N]`` int64: 0 = negative, -1 = ignored, k > 0 = assigned to gt ``k - 1``.
        max_overlaps: ``Tensor[N]`` float: best IoU of each candidate with any gt (0 when G = 0).
        labels: ``Tensor[N]`` int64: label of the assigned gt, -1 where not positive.
    """

    gt_inds: torch.Tensor
    max_overlaps: torch.Tensor
    labels: torch.Tensor

    @property
    def num_gts(self) -> int:
        return int(self.gt_inds.max().clamp(min=0)) if self.gt_inds.numel() else 0


class MaxIoUAssigner:
    """Assign each candidate to the gt it overlaps most (MMDetection's rule).

    1. every candidate starts ignored (-1);
    2. candidates whose max IoU is in ``[0, neg_iou_thr)`` become negative (0);
    3. candidates whose max IoU >= ``pos_iou_thr`` take that gt;
    4. with ``match_low_quality``, each gt takes its best candidate(s) if that IoU >= ``min_pos_iou``
       (all ties when ``gt_max_assign_all``), so every gt gets at least one positive where possible.
    Candidates covered by crowd boxes with IoF > ``ignore_iof_thr`` (if > 0) are ignored.

    Args:
        pos_iou_thr: IoU at or above which a candidate is positive.
        neg_iou_thr: IoU below which a candidate is negative.
        min_pos_iou: lowest IoU for the per-gt best-candidate rule.
        gt_max_assign_all: assign every candidate tying for a gt's best IoU.
        ignore_iof_thr: IoF threshold against crowd boxes; <= 0 disables.
        match_low_quality: apply rule 4 (MMDetection's ``match_low_quality``).
    """

    def __init__(self, *, pos_iou_thr: float, neg_iou_thr: float, min_pos_iou: float, gt_max_assign_all: bool,
                 ignore_iof_thr: float, match_low_quality: bool) -> None:
        self.pos_iou_thr = pos_iou_thr
        self.neg_iou_thr = neg_iou_thr
        self.min_pos_iou = min_pos_iou
        self.gt_max_assign_all = gt_max_assign_all
        self.ignore_iof_thr = ignore_iof_thr
        self.match_low_quality = match_low_quality

    def assign(self, boxes: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor,
               ignore_boxes: torch.Tensor | None = None) -> AssignResult:
        """Assign candidates ``boxes`` ``[N, 4]`` to ``gt_boxes`` ``[G, 4]`` with ``gt_labels`` ``[G]``."""
        n, g = boxes.shape[0], gt_boxes.shape[0]
        device = boxes.device
        if n == 0 or g == 0:
            gt_inds = torch.zeros(n, dtype=torch.long, device=device)  # no gt: everything negative
            return AssignResult(gt_inds, boxes.new_zeros(n), torch.full((n,), -1, dtype=torch.long, device=device))
        overlaps = box_iou(gt_boxes, boxes)  # [G, N]
        if self.ignore_iof_thr > 0 and ignore_boxes is not None and ignore_boxes.numel():
            # Candidates inside crowd regions are neither negative nor picked by the per-gt rule.
            overlaps[:, box_iof(boxes, ignore_boxes).max(dim=1).values > self.ignore_iof_thr] = -1
        return self.assign_overlaps(overlaps, gt_labels)

    def assign_overlaps(self, overlaps: torch.Tensor, gt_labels: torch.Tensor) -> AssignResult:
        """Rules 1-4 on given ``overlaps`` ``[G, N]`` (G, N > 0; -1 marks ignored candidates)."""
        g, n = overlaps.shape
        device = overlaps.device
        max_overlaps, argmax = overlaps.max(dim=0)
        gt_inds = torch.full((n,), -1, dtype=torch.long, device=device)
        gt_inds[(max_overlaps >= 0) & (max_overlaps < self.neg_iou_thr)] = 0
        pos = max_overlaps >= self.pos_iou_thr
        gt_inds[pos] = argmax[pos] + 1
        gt_max, gt_argmax = overlaps.max(dim=1)
        for i in range(g if self.match_low_quality else 0):
            if gt_max[i] >= self.min_pos_iou and gt_max[i] > 0:
                if self.gt_max_assign_all:
                    gt_inds[overlaps[i] == gt_max[i]] = i + 1
                else:
                    gt_inds[gt_argmax[i]] = i + 1
        labels = torch.full((n,), -1, dtype=torch.long, device=device)
        assigned = gt_inds > 0
        labels[assigned] = gt_labels[gt_inds[assigned] - 1]
        return AssignResult(gt_inds, max_overlaps, labels)


def box_iof(boxes: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Intersection over the area of each box: ``[N, 4]`` x ``[M, 4]`` -> ``Tensor[N, M]``."""
    lt = torch.max(boxes[:, None, :2], regions[None, :, :2])
    rb = torch.min(boxes[:, None, 2:], regions[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=-1)
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=1e-6)
    return inter / area[:, None]
