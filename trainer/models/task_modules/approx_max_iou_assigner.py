"""Max-IoU assignment of square anchors through their groups of approximating anchors (Guided Anchoring)."""
from __future__ import annotations

import torch
from torchvision.ops import box_iou

from dettool.trainer.models.task_modules.max_iou_assigner import AssignResult, MaxIoUAssigner, box_iof


class ApproxMaxIoUAssigner(MaxIoUAssigner):
    """MMDetection's ``ApproxMaxIoUAssigner``: a location's anchor shape is not known before the
    shape branch predicts it, so each location (its square anchor) overlaps a gt by the best IoU
    of its ``K`` approximating anchors (the ``K`` scales and ratios of a RetinaNet location), and
    :class:`MaxIoUAssigner`'s rules run on those overlaps. Crowd boxes are matched by IoF against
    the squares.

    Args: as :class:`MaxIoUAssigner`.
    """

    def assign_approxs(self, squares: torch.Tensor, approxs: torch.Tensor, gt_boxes: torch.Tensor,
                       gt_labels: torch.Tensor, ignore_boxes: torch.Tensor | None = None) -> AssignResult:
        """Assign ``squares`` ``[N, 4]`` with their ``approxs`` ``[N, K, 4]`` to ``gt_boxes`` ``[G, 4]``
        with ``gt_labels`` ``[G]``. Returns an ``AssignResult`` over the N squares."""
        n, g = squares.shape[0], gt_boxes.shape[0]
        if n == 0 or g == 0:
            return self.assign(squares, gt_boxes, gt_labels)  # no gt: everything negative
        overlaps = box_iou(gt_boxes, approxs.reshape(-1, 4)).reshape(g, n, -1).amax(dim=2)  # [G, N]
        if self.ignore_iof_thr > 0 and ignore_boxes is not None and ignore_boxes.numel():
            overlaps[:, box_iof(squares, ignore_boxes).max(dim=1).values > self.ignore_iof_thr] = -1
        return self.assign_overlaps(overlaps, gt_labels)
