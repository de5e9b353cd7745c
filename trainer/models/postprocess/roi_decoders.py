"""Batched, fixed-size steps of the RoI heads' test-time path (Faster / Mask / Cascade R-CNN).

Every image brings exactly K proposals (padding rows scored 0 never become detections); the
steps below are the float32 parts between the networks: RoIs from padded boxes, per-class box
decoding, cascade refinement and the cascade's stage-averaged scores.
"""
from __future__ import annotations

import torch

from dettool.structures.boxes import clip_boxes
from dettool.trainer.models.postprocess.batched import Float32Block, padding_mask, rois_from_batched
from dettool.trainer.models.task_modules.delta_xywh_coder import DeltaXYWHCoder


class BatchedRoIs(Float32Block):
    """``[B, K, 4]`` boxes -> ``[B * K, 5]`` float32 RoIs ``(batch_index, x1, y1, x2, y2)``."""

    def forward(self, boxes: torch.Tensor) -> torch.Tensor:
        return rois_from_batched(boxes.float())


class BoxDecode(Float32Block):
    """Class probabilities and per-class boxes of a box head's RoIs, clipped per image.

    Args:
        bbox_coder: the box head's delta coder.
        num_classes: C.
        class_agnostic: one box per RoI instead of one per class.
        min_bbox_size: boxes whose width or height is not above it are scored 0 (torchvision's
            ``remove_small_boxes``; < 0, MMDetection's RoI heads: none).

    ``forward`` returns ``boxes`` ``[B, K, C, 4]`` (``[B, K, 4]`` when class-agnostic, or the RoIs
    themselves when ``bbox_pred`` is None: a head without a regressor) and
    ``scores`` ``[B, K, C]`` (softmax without the background column), the scores of padding
    RoIs (index >= ``num_rois[b]``) set to 0.
    """

    def __init__(self, bbox_coder: DeltaXYWHCoder, num_classes: int, class_agnostic: bool,
                 min_bbox_size: float = -1.0) -> None:
        super().__init__()
        self.bbox_coder, self.num_classes, self.class_agnostic = bbox_coder, num_classes, class_agnostic
        self.min_bbox_size = min_bbox_size

    def forward(self, rois: torch.Tensor, cls_score: torch.Tensor, bbox_pred: torch.Tensor | None,
                num_rois: torch.Tensor, image_shapes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = image_shapes.shape[0]
        k = rois.shape[0] // batch
        c = self.num_classes
        scores = cls_score.float().softmax(dim=1)[:, :c].reshape(batch, k, c)
        scores = torch.where(padding_mask(num_rois, k)[..., None], scores, torch.zeros_like(scores))
        if bbox_pred is None:
            boxes = rois[:, 1:].reshape(batch, k, 4)
        elif self.class_agnostic:
            boxes = self.bbox_coder.decode(rois[:, 1:], bbox_pred.float()).reshape(batch, k, 4)
        else:
            ref = rois[:, None, 1:].expand(rois.shape[0], c, 4)
            boxes = self.bbox_coder.decode(ref, bbox_pred.float().reshape(-1, c, 4)).reshape(batch, k, c, 4)
        boxes = clip_boxes(boxes, image_shapes)
        if self.min_bbox_size >= 0:
            w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
            big = (w > self.min_bbox_size) & (h > self.min_bbox_size)
            scores = torch.where(big[..., None] if boxes.dim() == 3 else big, scores,
                                 torch.zeros_like(scores))
        return boxes, scores


class CascadeRefine(Float32Block):
    """A cascade stage's RoIs regressed by the deltas of their best foreground class, clipped per image.

    Args:
        refine_rois: the stage's box head ``refine_rois(rois [R, 5], labels [R], bbox_pred) -> [R, 5]``.
    """

    def __init__(self, refine_rois) -> None:
        super().__init__()
        self.refine_rois = refine_rois

    def forward(self, rois: torch.Tensor, cls_score: torch.Tensor, bbox_pred: torch.Tensor,
                image_shapes: torch.Tensor) -> torch.Tensor:
        batch = image_shapes.shape[0]
        labels = cls_score[:, :-1].argmax(dim=1)
        refined = self.refine_rois(rois, labels, bbox_pred.float())
        boxes = clip_boxes(refined[:, 1:].reshape(batch, -1, 4), image_shapes)
        return torch.cat([rois[:, :1], boxes.reshape(-1, 4)], dim=1)


class StageMean(Float32Block):
    """Cascade test-time scores: the stages' class logits averaged (MMDetection's rule, 2.x and
    3.x alike: ``BoxDecode`` then applies the softmax to the mean logits)."""

    def forward(self, cls_scores: list[torch.Tensor]) -> torch.Tensor:
        return sum(c.float() for c in cls_scores) / len(cls_scores)
