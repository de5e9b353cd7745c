"""Batched, fixed-size test-time decoding of dense heads: RetinaNet, SSD, FCOS and RPN proposals.

Inputs are a head's raw ``forward`` outputs and ``image_shapes`` ``[B, 2]`` (h, w of each
unpadded image); every decoder ends in :func:`multiclass_nms` and returns ``DetOutputs``.
"""
from __future__ import annotations

import torch

from dettool.structures.boxes import clip_boxes
from dettool.structures.detections import DetOutputs
from dettool.trainer.models.postprocess.batched import Float32Block, gather_rows, levels_to_rows, top_k_rows
from dettool.trainer.models.postprocess.nms import NMSSettings, ProposalSettings, multiclass_nms
from dettool.trainer.models.task_modules.anchor_generator import AnchorGenerator, AnchorGrid
from dettool.trainer.models.task_modules.delta_xywh_coder import DeltaXYWHCoder
from dettool.trainer.models.task_modules.distance_point_coder import distance_to_box
from dettool.trainer.models.task_modules.point_generator import grid_points


def top_pairs(scores: torch.Tensor, thr: float, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MMDetection 3.x's ``filter_scores_and_topk`` in fixed shapes: of ``scores`` ``[B, n, C]``,
    the ``k`` best (candidate, class) pairs above ``thr`` (``k <= 0``: all). Returns their scores
    ``[B, k]`` (0 where fewer pairs pass ``thr``), candidate rows and classes ``[B, k]``."""
    num_classes = scores.shape[2]
    flat = scores.reshape(scores.shape[0], -1)
    flat = torch.where(flat > thr, flat, torch.zeros_like(flat))
    top = top_k_rows(flat, k)
    return torch.gather(flat, 1, top), torch.div(top, num_classes, rounding_mode="floor"), top % num_classes


def pair_scores(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, num_classes: int,
                min_bbox_size: float) -> torch.Tensor:
    """``[B, k]`` pair scores as ``[B, k, C]`` (each row scores its own class only), boxes whose
    width or height is not above ``min_bbox_size`` (when >= 0) scored 0."""
    if min_bbox_size >= 0:
        w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
        scores = torch.where((w > min_bbox_size) & (h > min_bbox_size), scores, torch.zeros_like(scores))
    out = scores.new_zeros((*scores.shape, num_classes))
    return out.scatter(2, classes.unsqueeze(-1), scores.unsqueeze(-1))


def class_scores(logits: torch.Tensor, num_classes: int, softmax: bool) -> torch.Tensor:
    """Class probabilities ``[B, n, C]`` of one level's logits ``[B, A * C, H, W]`` (sigmoid), or
    with ``softmax`` of ``[B, A * (C + 1), H, W]`` (background last, dropped after the softmax)."""
    if not softmax:
        return levels_to_rows(logits.float(), num_classes).sigmoid()
    return levels_to_rows(logits.float(), num_classes + 1).softmax(-1)[..., :num_classes]


class AnchorDecoder(Float32Block):
    """Anchor heads: per level the ``nms_pre`` best (anchor, class) pairs above ``score_thr``
    (MMDetection 3.x), delta decoding, clipping, the minimum box size, then class-wise NMS.

    Args:
        anchor_generator, bbox_coder: the head's.
        num_classes: C.
        nms: test-time settings.
        softmax: scores are a softmax over C + 1 logits, background last (SSD); otherwise a
            sigmoid per class (RetinaNet).
    """

    def __init__(self, anchor_generator: AnchorGrid, bbox_coder: DeltaXYWHCoder, num_classes: int,
                 nms: NMSSettings, softmax: bool = False) -> None:
        super().__init__()
        self.anchor_generator, self.bbox_coder = anchor_generator, bbox_coder
        self.num_classes, self.nms, self.softmax = num_classes, nms, softmax

    def forward(self, cls_scores: list[torch.Tensor], bbox_preds: list[torch.Tensor],
                image_shapes: torch.Tensor) -> DetOutputs:
        """Per level ``[B, A * C, H, W]`` (softmax: ``A * (C + 1)``) logits and ``[B, A * 4, H, W]``
        deltas -> detections."""
        anchors = self.anchor_generator.grid_anchors([tuple(c.shape[-2:]) for c in cls_scores], cls_scores[0].device)
        if self.nms.nms_pre_per_class:
            return self._per_class(cls_scores, bbox_preds, anchors, image_shapes)
        boxes_l, scores_l = [], []
        for c, r, a in zip(cls_scores, bbox_preds, anchors):
            scores = class_scores(c, self.num_classes, self.softmax)  # [B, n, C]
            top_scores, rows, classes = top_pairs(scores, self.nms.score_thr, self.nms.nms_pre)
            deltas = gather_rows(levels_to_rows(r.float(), 4), rows)
            boxes = clip_boxes(self.bbox_coder.decode(gather_rows(a, rows), deltas), image_shapes)
            boxes_l.append(boxes)
            scores_l.append(pair_scores(boxes, top_scores, classes, self.num_classes, self.nms.min_bbox_size))
        return multiclass_nms(torch.cat(boxes_l, 1), torch.cat(scores_l, 1), self.nms)


    def _per_class(self, cls_scores: list[torch.Tensor], bbox_preds: list[torch.Tensor], anchors: list[torch.Tensor],
                   image_shapes: torch.Tensor) -> DetOutputs:
        """torchvision's SSD: all anchors decoded and clipped, then per class the ``nms_pre`` best
        scores above ``score_thr`` over all levels (``[B, C * k]`` candidates), then class-wise NMS."""
        scores = torch.cat([class_scores(c, self.num_classes, self.softmax) for c in cls_scores], 1)  # [B, N, C]
        deltas = torch.cat([levels_to_rows(r.float(), 4) for r in bbox_preds], 1)
        boxes = clip_boxes(self.bbox_coder.decode(torch.cat(anchors)[None].expand_as(deltas), deltas), image_shapes)
        per_class = scores.transpose(1, 2)  # [B, C, N]
        per_class = torch.where(per_class > self.nms.score_thr, per_class, torch.zeros_like(per_class))
        k = per_class.shape[2] if self.nms.nms_pre <= 0 else torch.sym_min(self.nms.nms_pre, per_class.shape[2])
        top, rows = per_class.topk(k, dim=2)  # [B, C, k]
        batch = scores.shape[0]
        rows = rows.reshape(batch, -1)
        classes = torch.arange(self.num_classes, device=rows.device).repeat_interleave(k)[None].expand(batch, -1)
        picked = gather_rows(boxes, rows)
        return multiclass_nms(picked, pair_scores(picked, top.reshape(batch, -1), classes, self.num_classes,
                                                  self.nms.min_bbox_size), self.nms)


class PointDecoder(Float32Block):
    """FCOS: per level the ``nms_pre`` best (point, class) pairs whose score passes
    ``score_thr``, ltrb decoding, clipping, the minimum box size, then class-wise NMS.

    ``test_score`` ``cls`` (MMDetection 3.x): the class score is thresholded and ranked, NMS
    ranks ``score x centerness``; ``sqrt_cls_centerness`` (torchvision): ``sqrt(score x
    centerness)`` throughout.

    Args:
        strides: the head's level strides (distances are multiplied by these with ``norm_on_bbox``).
        num_classes: C.
        norm_on_bbox: distances are in units of the stride.
        nms: test-time settings.
        point_offset, stride_from_input: where the locations lie (:func:`grid_points`).
        test_score: the score rule above.
    """

    def __init__(self, strides: tuple[int, ...], num_classes: int, norm_on_bbox: bool, nms: NMSSettings,
                 point_offset: float = 0.5, stride_from_input: bool = False, test_score: str = "cls") -> None:
        super().__init__()
        self.strides, self.num_classes, self.norm_on_bbox, self.nms = tuple(strides), num_classes, norm_on_bbox, nms
        self.point_offset, self.stride_from_input, self.test_score = point_offset, stride_from_input, test_score

    def forward(self, cls_scores: list[torch.Tensor], bbox_preds: list[torch.Tensor], centernesses: list[torch.Tensor],
                image_shapes: torch.Tensor) -> DetOutputs:
        points = grid_points([tuple(c.shape[-2:]) for c in cls_scores], self.strides, cls_scores[0].device,
                             self.point_offset, self.stride_from_input)
        boxes_l, scores_l = [], []
        for lvl, (c, r, t, p) in enumerate(zip(cls_scores, bbox_preds, centernesses, points)):
            scores = levels_to_rows(c.float(), self.num_classes).sigmoid()  # [B, n, C]
            ctr = levels_to_rows(t.float(), 1).sigmoid()  # [B, n, 1]
            if self.test_score == "sqrt_cls_centerness":
                scores = torch.sqrt(scores * ctr)
            top_scores, rows, classes = top_pairs(scores, self.nms.score_thr, self.nms.nms_pre)
            dist = gather_rows(levels_to_rows(r.float(), 4), rows)
            if self.norm_on_bbox:
                dist = dist * self.strides[lvl]
            boxes = clip_boxes(distance_to_box(gather_rows(p, rows), dist), image_shapes)
            boxes_l.append(boxes)
            # The score passed score_thr; NMS keeps everything above 0 (MMDetection ranks score x centerness).
            ranked = top_scores
            if self.test_score == "cls":
                ranked = top_scores * gather_rows(ctr, rows)[..., 0]
            scores_l.append(pair_scores(boxes, ranked, classes, self.num_classes, self.nms.min_bbox_size))
        return multiclass_nms(torch.cat(boxes_l, 1), torch.cat(scores_l, 1), self.nms, score_thr=0.0)


def level_proposals(levels: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], bbox_coder: DeltaXYWHCoder,
                    image_shapes: torch.Tensor, cfg: ProposalSettings) -> DetOutputs:
    """Proposals from per-level ``(scores [B, n], deltas [B, n, 4], anchors [n or B x n, 4])``: per
    level the ``nms_pre`` best scores (a score of 0 is never a proposal), decoding, clipping, the
    min-size filter and NMS per level (the level is the NMS class, as MMDetection v2), the
    ``max_per_img`` best kept; ``labels`` are the proposals' levels."""
    boxes_l, scores_l = [], []
    for lvl, (scores, deltas, anchors) in enumerate(levels):
        top = top_k_rows(scores, cfg.nms_pre)
        scores = torch.gather(scores, 1, top)
        boxes = clip_boxes(bbox_coder.decode(gather_rows(anchors, top), gather_rows(deltas, top)), image_shapes)
        w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
        scores = torch.where((w > cfg.min_bbox_size) & (h > cfg.min_bbox_size), scores, torch.zeros_like(scores))
        level = torch.zeros(len(levels), dtype=scores.dtype, device=scores.device)
        level[lvl] = 1.0
        boxes_l.append(boxes)
        scores_l.append(scores[..., None] * level)  # no suppression across levels
    nms = NMSSettings(score_thr=0.0, nms_pre=cfg.nms_pre, iou_thr=cfg.iou_thr, max_per_img=cfg.max_per_img)
    return multiclass_nms(torch.cat(boxes_l, 1), torch.cat(scores_l, 1), nms)


class ProposalDecoder(Float32Block):
    """RPN proposals (:func:`level_proposals` on the sigmoid objectness of every anchor).

    ``forward`` returns ``DetOutputs`` whose ``labels`` are the proposals' levels.
    """

    def __init__(self, anchor_generator: AnchorGenerator, bbox_coder: DeltaXYWHCoder) -> None:
        super().__init__()
        self.anchor_generator, self.bbox_coder = anchor_generator, bbox_coder

    def forward(self, cls_scores: list[torch.Tensor], bbox_preds: list[torch.Tensor], image_shapes: torch.Tensor,
                cfg: ProposalSettings) -> DetOutputs:
        anchors = self.anchor_generator.grid_anchors([tuple(c.shape[-2:]) for c in cls_scores], cls_scores[0].device)
        levels = [(levels_to_rows(c.float(), 1)[..., 0].sigmoid(), levels_to_rows(r.float(), 4), a)
                  for c, r, a in zip(cls_scores, bbox_preds, anchors)]
        return level_proposals(levels, self.bbox_coder, image_shapes, cfg)
