"""Batched, fixed-size test-time decoding of dense heads: RetinaNet, FCOS and RPN proposals.

Inputs are a head's raw ``forward`` outputs and ``image_shapes`` ``[B, 2]`` (h, w of each
unpadded image); every decoder ends in :func:`multiclass_nms` and returns ``DetOutputs``.
"""
from __future__ import annotations

import torch

from dettool.structures.boxes import clip_boxes
from dettool.structures.detections import DetOutputs
from dettool.trainer.models.postprocess.batched import Float32Block, gather_rows, levels_to_rows, top_k_rows
from dettool.trainer.models.postprocess.nms import NMSSettings, ProposalSettings, multiclass_nms
from dettool.trainer.models.task_modules.anchor_generator import AnchorGenerator
from dettool.trainer.models.task_modules.delta_xywh_coder import DeltaXYWHCoder
from dettool.trainer.models.task_modules.distance_point_coder import distance_to_box
from dettool.trainer.models.task_modules.point_generator import grid_points


class AnchorDecoder(Float32Block):
    """Anchor heads with sigmoid scores (RetinaNet): per level the ``nms_pre`` anchors with the
    best class score, delta decoding, clipping, then class-wise NMS.

    Args:
        anchor_generator, bbox_coder: the head's.
        num_classes: C.
        nms: test-time settings.
    """

    def __init__(self, anchor_generator: AnchorGenerator, bbox_coder: DeltaXYWHCoder, num_classes: int,
                 nms: NMSSettings) -> None:
        super().__init__()
        self.anchor_generator, self.bbox_coder = anchor_generator, bbox_coder
        self.num_classes, self.nms = num_classes, nms

    def forward(self, cls_scores: list[torch.Tensor], bbox_preds: list[torch.Tensor],
                image_shapes: torch.Tensor) -> DetOutputs:
        """Per level ``[B, A * C, H, W]`` logits and ``[B, A * 4, H, W]`` deltas -> detections."""
        anchors = self.anchor_generator.grid_anchors([tuple(c.shape[-2:]) for c in cls_scores], cls_scores[0].device)
        boxes_l, scores_l = [], []
        for c, r, a in zip(cls_scores, bbox_preds, anchors):
            scores = levels_to_rows(c.float(), self.num_classes).sigmoid()  # [B, n, C]
            top = top_k_rows(scores.max(dim=2).values, self.nms.nms_pre)
            deltas = gather_rows(levels_to_rows(r.float(), 4), top)
            boxes_l.append(clip_boxes(self.bbox_coder.decode(gather_rows(a, top), deltas), image_shapes))
            scores_l.append(gather_rows(scores, top))
        return multiclass_nms(torch.cat(boxes_l, 1), torch.cat(scores_l, 1), self.nms)


class PointDecoder(Float32Block):
    """FCOS: per level the ``nms_pre`` points with the best score x centerness, ltrb decoding,
    clipping, then class-wise NMS on ``score x centerness`` of the (point, class) pairs whose raw
    score passes ``score_thr`` (MMDetection's rule).

    Args:
        strides: the head's level strides.
        num_classes: C.
        norm_on_bbox: distances are in units of the stride.
        nms: test-time settings.
    """

    def __init__(self, strides: tuple[int, ...], num_classes: int, norm_on_bbox: bool, nms: NMSSettings) -> None:
        super().__init__()
        self.strides, self.num_classes, self.norm_on_bbox, self.nms = tuple(strides), num_classes, norm_on_bbox, nms

    def forward(self, cls_scores: list[torch.Tensor], bbox_preds: list[torch.Tensor], centernesses: list[torch.Tensor],
                image_shapes: torch.Tensor) -> DetOutputs:
        points = grid_points([tuple(c.shape[-2:]) for c in cls_scores], self.strides, cls_scores[0].device)
        boxes_l, scores_l = [], []
        for lvl, (c, r, t, p) in enumerate(zip(cls_scores, bbox_preds, centernesses, points)):
            scores = levels_to_rows(c.float(), self.num_classes).sigmoid()  # [B, n, C]
            ctr = levels_to_rows(t.float(), 1)[..., 0].sigmoid()  # [B, n]
            top = top_k_rows((scores * ctr[..., None]).max(dim=2).values, self.nms.nms_pre)
            scores, ctr = gather_rows(scores, top), gather_rows(ctr[..., None], top)
            dist = gather_rows(levels_to_rows(r.float(), 4), top)
            if self.norm_on_bbox:
                dist = dist * self.strides[lvl]
            boxes_l.append(clip_boxes(distance_to_box(gather_rows(p, top), dist), image_shapes))
            # Threshold the raw score, rank by score x centerness; NMS then keeps everything above 0.
            scores_l.append(torch.where(scores > self.nms.score_thr, scores * ctr, torch.zeros_like(scores)))
        return multiclass_nms(torch.cat(boxes_l, 1), torch.cat(scores_l, 1), self.nms, score_thr=0.0)


class ProposalDecoder(Float32Block):
    """RPN proposals: per level the ``nms_pre`` best objectness scores, decoding, clipping, the
    min-size filter and NMS per level (the level is the NMS class, as MMDetection v2), the
    ``max_per_img`` best kept.

    ``forward`` returns ``DetOutputs`` whose ``labels`` are the proposals' levels.
    """

    def __init__(self, anchor_generator: AnchorGenerator, bbox_coder: DeltaXYWHCoder) -> None:
        super().__init__()
        self.anchor_generator, self.bbox_coder = anchor_generator, bbox_coder

    def forward(self, cls_scores: list[torch.Tensor], bbox_preds: list[torch.Tensor], image_shapes: torch.Tensor,
                cfg: ProposalSettings) -> DetOutputs:
        anchors = self.anchor_generator.grid_anchors([tuple(c.shape[-2:]) for c in cls_scores], cls_scores[0].device)
        num_levels = len(cls_scores)
        boxes_l, scores_l = [], []
        for lvl, (c, r, a) in enumerate(zip(cls_scores, bbox_preds, anchors)):
            scores = levels_to_rows(c.float(), 1)[..., 0].sigmoid()  # [B, n]
            top = top_k_rows(scores, cfg.nms_pre)
            scores = torch.gather(scores, 1, top)
            deltas = gather_rows(levels_to_rows(r.float(), 4), top)
            boxes = clip_boxes(self.bbox_coder.decode(gather_rows(a, top), deltas), image_shapes)
            w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
            scores = torch.where((w > cfg.min_bbox_size) & (h > cfg.min_bbox_size), scores, torch.zeros_like(scores))
            level = torch.zeros(num_levels, dtype=scores.dtype, device=scores.device)
            level[lvl] = 1.0
            boxes_l.append(boxes)
            scores_l.append(scores[..., None] * level)  # no suppression across levels
        nms = NMSSettings(score_thr=0.0, nms_pre=cfg.nms_pre, iou_thr=cfg.iou_thr, max_per_img=cfg.max_per_img)
        return multiclass_nms(torch.cat(boxes_l, 1), torch.cat(scores_l, 1), nms)
