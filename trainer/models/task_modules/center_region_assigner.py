"""Centre-region assignment of FSAF (Zhu et al., 2019), as MMDetection's CenterRegionAssigner.

A gt box's *core* is the box shrunk about its centre by ``pos_scale``: priors whose centre lies in
the gt box and which overlap its core are its positives. A prior that overlaps the core of a gt
without being its positive (its centre lies outside the gt box, or a smaller gt took it) is
*shadowed* by that gt: it is not trained on that gt's class, whatever it is assigned.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dettool.trainer.models.task_modules.max_iou_assigner import AssignResult, box_iof


@dataclass
class CenterRegionAssignResult(AssignResult):
    """``AssignResult`` (``max_overlaps`` all 0: nothing here is an IoU) plus the shadowed pairs.

    Attributes:
        shadowed_labels: ``Tensor[S, 2]`` int64 rows (candidate index, class label): the candidate
            is not trained on that class.
    """

    shadowed_labels: torch.Tensor


def scale_boxes(boxes: torch.Tensor, scale: float) -> torch.Tensor:
    """``[N, 4]`` xyxy boxes with width and height multiplied by ``scale`` about their centres."""
    half = (boxes[:, 2:] - boxes[:, :2]) * (0.5 * scale)
    centre = (boxes[:, 2:] + boxes[:, :2]) * 0.5
    return torch.cat([centre - half, centre + half], dim=1)


def points_in_boxes(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """``[N, M]`` bool: point ``[N, 2]`` strictly inside box ``[M, 4]``."""
    x, y = points[:, 0:1], points[:, 1:2]
    return (x > boxes[None, :, 0]) & (x < boxes[None, :, 2]) & (y > boxes[None, :, 1]) & (y < boxes[None, :, 3])


class CenterRegionAssigner:
    """Assign each candidate to at most one gt by its centre region.

    1. positive pairs: the candidate's centre lies in the gt box and IoF(candidate, core) >
       ``min_pos_iof`` (the core is the gt scaled by ``pos_scale``); a candidate positive for
       several gts takes the smallest one, and is shadowed by the others;
    2. shadowed pairs: IoF(candidate, gt scaled by ``neg_scale``) > ``min_pos_iof`` without a
       positive pair (FSAF's ``neg_scale`` equals ``pos_scale``: candidates overlapping the core
       whose centre lies outside the gt box);
    3. candidates whose centre lies in an ignore box scaled by ``ignore_gt_scale`` are ignored;
    4. a candidate positive for a class it is also shadowed for keeps its gt when
       ``foreground_dominate``, else becomes a negative not trained on that class.
    Every other candidate is negative.

    Args:
        pos_scale: size of the core relative to the gt box.
        neg_scale: size of the shadowing region relative to the gt box.
        min_pos_iof: IoF with the core (shadowing region) above which a candidate overlaps it.
        ignore_gt_scale: size of the ignored region relative to an ignore box.
        foreground_dominate: rule 4.
    """

    def __init__(self, *, pos_scale: float, neg_scale: float, min_pos_iof: float, ignore_gt_scale: float,
                 foreground_dominate: bool) -> None:
        self.pos_scale = pos_scale
        self.neg_scale = neg_scale
        self.min_pos_iof = min_pos_iof
        self.ignore_gt_scale = ignore_gt_scale
        self.foreground_dominate = foreground_dominate

    def assign(self, boxes: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor,
               ignore_boxes: torch.Tensor | None = None) -> CenterRegionAssignResult:
        """Assign candidates ``boxes`` ``[N, 4]`` to ``gt_boxes`` ``[G, 4]`` with ``gt_labels`` ``[G]``.

        ``gt_inds``: 0 negative, -1 ignored, k > 0 gt ``k - 1``; ``shadowed_labels`` as the result's.
        """
        n, g = boxes.shape[0], gt_boxes.shape[0]
        device = boxes.device
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        gt_inds = torch.zeros(n, dtype=torch.long, device=device)
        shadowed = torch.zeros((0, 2), dtype=torch.long, device=device)  # (candidate, 1-based gt)
        if n and g:
            in_core = points_in_boxes(centres, gt_boxes) & (
                box_iof(boxes, scale_boxes(gt_boxes, self.pos_scale)) > self.min_pos_iof)  # [N, G]
            in_shadow = (box_iof(boxes, scale_boxes(gt_boxes, self.neg_scale)) > self.min_pos_iof) & ~in_core
            gt_inds, shadowed = self._one_gt_per_candidate(in_core, in_shadow, gt_boxes)
        if ignore_boxes is not None and ignore_boxes.numel():
            ignored = points_in_boxes(centres, scale_boxes(ignore_boxes.to(boxes), self.ignore_gt_scale)).any(dim=1)
            gt_inds[ignored] = -1
        labels = torch.full((n,), -1, dtype=torch.long, device=device)
        pos = gt_inds > 0
        labels[pos] = gt_labels[gt_inds[pos] - 1]
        shadowed_labels = shadowed.clone()
        if shadowed.numel():
            cand = shadowed[:, 0]
            shadowed_labels[:, 1] = gt_labels[shadowed[:, 1] - 1]
            same_class = labels[cand] == shadowed_labels[:, 1]
            if self.foreground_dominate:
                shadowed_labels = shadowed_labels[~same_class]
            else:
                labels[cand[same_class]] = -1
                gt_inds[cand[same_class]] = 0
        return CenterRegionAssignResult(gt_inds, boxes.new_zeros(n), labels, shadowed_labels=shadowed_labels)

    @staticmethod
    def _one_gt_per_candidate(in_core: torch.Tensor, in_shadow: torch.Tensor,
                              gt_boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each candidate in the core of several gts takes the smallest; returns 1-based ``gt_inds``
        ``[N]`` and the shadowed (candidate, 1-based gt) pairs ``[S, 2]``: the shadow pairs, then
        the core pairs not taken."""
        gt_inds = torch.zeros(in_core.shape[0], dtype=torch.long, device=in_core.device)
        pairs = [in_shadow.nonzero()]
        if in_core.any():
            areas = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])
            # Priority = rank in decreasing area: the smallest gt has the highest.
            priority = areas.sort(descending=True, stable=True).indices.argsort()
            pair_priority = torch.where(in_core, priority[None, :], torch.full_like(in_core, -1, dtype=torch.long))
            matched = in_core.any(dim=1)
            best = pair_priority.max(dim=1).indices
            gt_inds[matched] = best[matched] + 1
            taken = torch.zeros_like(in_core)
            taken[matched.nonzero(as_tuple=True)[0], best[matched]] = True
            pairs.append((in_core & ~taken).nonzero())
        shadowed = torch.cat(pairs)
        shadowed[:, 1] += 1
        return gt_inds, shadowed
