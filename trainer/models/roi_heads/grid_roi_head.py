"""Grid R-CNN's RoI head (Lu et al., 2019; MMDetection's ``GridRoIHead``): a box head that only
classifies, and a grid head that locates each detection's box from the heatmaps of its grid points."""
from __future__ import annotations

import torch
from torch import nn

from dettool.structures.detections import DetOutputs
from dettool.trainer.models.roi_heads.grid_head import GridDecode, GridHead
from dettool.trainer.models.roi_heads.roi_sampling import rois_from_boxes
from dettool.trainer.models.roi_heads.standard_roi_head import StandardRoIHead, mean_mask_probs


def jitter_boxes(boxes: torch.Tensor, amplitude: float, image_shape: tuple[int, int]) -> torch.Tensor:
    """Boxes ``[P, 4]`` moved by up to ``amplitude`` of their size and scaled by ``1 +- amplitude``
    (uniform, independent per box and side), clipped to ``[0, w - 1] x [0, h - 1]`` (MMDetection's
    ``GridRoIHead._random_jitter``)."""
    offsets = torch.empty(boxes.shape[0], 4, device=boxes.device).uniform_(-amplitude, amplitude)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    size = (boxes[:, 2:] - boxes[:, :2]).abs()
    centre = centre + size * offsets[:, :2]
    size = size * (1 + offsets[:, 2:])
    out = torch.cat([centre - size / 2, centre + size / 2], dim=1)
    h, w = image_shape
    return torch.stack([out[:, 0].clamp(0, w - 1), out[:, 1].clamp(0, h - 1), out[:, 2].clamp(0, w - 1),
                        out[:, 3].clamp(0, h - 1)], dim=1)


class GridRoIHead(StandardRoIHead):
    """``StandardRoIHead`` whose box head has no regressor, plus a :class:`GridHead`.

    Training adds ``loss_grid``: the positive RoIs, jittered, pooled by the grid RoI extractor
    (14x14), at most ``max_num_grid`` of them drawn at random, against heatmap targets of their gt
    boxes. At test time the box head's detections (its RoIs, after NMS) are pooled again and the
    grid head replaces each box; scores and labels stay.

    Args:
        grid_roi_extractor: multi-level RoIAlign of the grid head.
        grid_head: the :class:`GridHead`.
        pos_radius: radius of each target point's positive disc (1).
        max_num_grid: positives per batch the grid head trains on (192).
        jitter_amplitude: of the positives' random jitter (0.15).
        **kwargs: ``StandardRoIHead`` arguments.
    """

    def __init__(self, *, grid_roi_extractor: nn.Module, grid_head: GridHead, pos_radius: int, max_num_grid: int,
                 jitter_amplitude: float, **kwargs) -> None:
        super().__init__(**kwargs)
        if self.bbox_head.with_reg:
            raise ValueError("Grid R-CNN's box head only classifies (roi_head.bbox_head.with_reg: false)")
        self.grid_roi_extractor = grid_roi_extractor
        self.grid_head = grid_head
        self.pos_radius, self.max_num_grid, self.jitter_amplitude = pos_radius, max_num_grid, jitter_amplitude
        self.grid_decode = GridDecode(grid_head.grid_size, grid_head.origins)

    def branch_losses(self, feats: list[torch.Tensor], sampled: list, targets: list[dict],
                      metas: list[dict]) -> dict[str, torch.Tensor]:
        """``loss_grid`` (and the mask branch's losses, if any)."""
        losses = super().branch_losses(feats, sampled, targets, metas)
        boxes = [jitter_boxes(s.boxes[: s.num_pos], self.jitter_amplitude, m["img_shape"])
                 for s, m in zip(sampled, metas)]
        pick = torch.randperm(sum(b.shape[0] for b in boxes))[: self.max_num_grid]
        rois = rois_from_boxes(boxes).to(feats[0].device)[pick.to(feats[0].device)]
        gt = torch.cat([s.pos_gt_boxes for s in sampled]).to(rois.device)[pick.to(rois.device)]
        fused, unfused = self.grid_head(self.grid_roi_extractor(feats, rois))
        grid_targets = self.grid_head.get_targets(rois[:, 1:], gt, self.pos_radius)
        losses["loss_grid"] = self.grid_head.loss(fused, unfused, grid_targets)
        return losses

    def grid_forward(self, feats: list[torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
        """Fused heatmap logits ``[R, points, M, M]`` of RoIs ``[R, 5]``."""
        return self.grid_head(self.grid_roi_extractor(feats, rois))[0]

    def decode(self, feats: list[torch.Tensor], num_proposals: torch.Tensor, proposals: torch.Tensor,
               image_shapes: torch.Tensor) -> DetOutputs:
        """The box head's detections with their boxes located by the grid head (then masks, if any)."""
        dets = self.box_detections(feats, num_proposals, proposals, image_shapes)
        logits = self.grid_forward(feats, self.rois(dets.boxes))
        dets = dets._replace(boxes=self.grid_decode(logits, dets.boxes, image_shapes).to(dets.boxes.dtype))
        if self.mask_branch is None:
            return dets
        return dets._replace(masks=mean_mask_probs(self.mask_branches, feats, dets))
