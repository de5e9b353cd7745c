"""Per-image RoI assignment and sampling shared by the standard and cascade RoI heads."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dettool.trainer.models.task_modules.max_iou_assigner import MaxIoUAssigner


@dataclass
class SampledRoIs:
    """Sampled RoIs of one image, positives first.

    Attributes:
        boxes: ``Tensor[P + Q, 4]`` xyxy in resized-image pixels.
        num_pos: P.
        pos_gt_inds: ``Tensor[P]`` index of each positive's gt box.
        pos_labels: ``Tensor[P]`` its label.
        pos_gt_boxes: ``Tensor[P, 4]``.
        pos_is_gt: ``Tensor[P]`` bool, positives that are gt boxes added as proposals.
    """

    boxes: torch.Tensor
    num_pos: int
    pos_gt_inds: torch.Tensor
    pos_labels: torch.Tensor
    pos_gt_boxes: torch.Tensor
    pos_is_gt: torch.Tensor


def split_rows(x: torch.Tensor, counts: list[int]) -> list[torch.Tensor]:
    """``Tensor[sum(counts), ...]`` -> one tensor per image (empty tensors when ``x`` is empty)."""
    return list(torch.split(x, counts)) if x.shape[0] else [x[:0] for _ in counts]


def rois_from_boxes(boxes_per_image: list[torch.Tensor]) -> torch.Tensor:
    """List of ``[K_i, 4+]`` boxes -> ``Tensor[sum K_i, 5]`` (batch index, x1, y1, x2, y2)."""
    parts = [torch.cat([b.new_full((b.shape[0], 1), float(i)), b[:, :4]], dim=1) for i, b in enumerate(boxes_per_image)]
    return torch.cat(parts) if parts else torch.zeros((0, 5))


def assign_and_sample(proposals: torch.Tensor, target: dict, assigner: MaxIoUAssigner, sampler,
                      add_gt_as_proposals: bool, roi_loss_fn=None) -> SampledRoIs:
    """Assign ``proposals`` ``[K, 4+]`` to the image's gt and sample them.

    ``sampler`` is a RandomSampler, or an OHEMSampler; for OHEM ``roi_loss_fn(boxes [N, 4],
    labels [N]) -> Tensor[N]`` gives the per-candidate loss it ranks by (computed without grad).
    """
    gt_boxes, gt_labels = target["boxes"], target["labels"]
    boxes = proposals[:, :4].detach()
    is_gt = torch.zeros(boxes.shape[0], dtype=torch.bool, device=boxes.device)
    if add_gt_as_proposals and gt_boxes.numel():
        boxes = torch.cat([gt_boxes.to(boxes.dtype), boxes])
        is_gt = torch.cat([torch.ones(gt_boxes.shape[0], dtype=torch.bool, device=boxes.device), is_gt])
    assign = assigner.assign(boxes, gt_boxes, gt_labels, target.get("ignore_boxes"))
    if roi_loss_fn is not None:
        labels = torch.where(assign.labels >= 0, assign.labels, torch.full_like(assign.labels, -1))
        with torch.no_grad():
            sample = sampler.sample(assign, roi_loss_fn(boxes, labels))
    else:
        sample = sampler.sample(assign)
    pos, neg = sample.pos_inds, sample.neg_inds
    pos_gt_inds = assign.gt_inds[pos] - 1
    return SampledRoIs(boxes=torch.cat([boxes[pos], boxes[neg]]), num_pos=int(pos.numel()), pos_gt_inds=pos_gt_inds,
                       pos_labels=assign.labels[pos], pos_gt_boxes=gt_boxes[pos_gt_inds] if pos.numel() else boxes[:0],
                       pos_is_gt=is_gt[pos])
