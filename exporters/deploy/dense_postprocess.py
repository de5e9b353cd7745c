"""Batched, fixed-size post-processing of dense heads: RetinaNet, FCOS and RPN proposals.

Each module reproduces its head's ``predict`` (``trainer/models/dense_heads``) for a whole batch
with static output shapes, ending in ``dettool::batched_nms``. Inputs are the head's raw
``forward`` outputs and ``image_shapes`` ``[B, 2]`` (h, w of each unpadded image).
"""
from __future__ import annotations

import torch

import dettool.ops  # noqa: F401  (registers torch.ops.dettool.*)
from dettool.exporters.deploy.regions import FP32Region, clip_boxes, gather_rows, top_k_rows
from dettool.trainer.models.dense_heads.base_dense_head import TestSettings, levels_to_rows
from dettool.trainer.models.dense_heads.fcos_head import distance_to_box
from dettool.trainer.models.dense_heads.rpn_head import ProposalSettings
from dettool.trainer.models.task_modules.anchor_generator import AnchorGenerator
from dettool.trainer.models.task_modules.delta_xywh_coder import DeltaXYWHCoder
from dettool.trainer.models.task_modules.point_generator import grid_points

Detections = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def multiclass_nms(boxes: torch.Tensor, scores: torch.Tensor, score_thr: float, iou_thr: float, k: int) -> Detections:
    """``dettool::batched_nms``: ``[B, N, 4]`` (or ``[B, N, C, 4]``) boxes and ``[B, N, C]`` scores ->
    ``(num_dets [B], boxes [B, k, 4], scores [B, k], labels [B, k])``."""
    return torch.ops.dettool.batched_nms(boxes, scores, score_thr, iou_thr, k)


class AnchorDecode(FP32Region):
    """RetinaNet (any anchor head with sigmoid scores): per level top-``nms_pre`` by best class
    score, delta decoding, clipping, then class-wise NMS.

    Args:
        anchor_generator, bbox_coder: the head's.
        num_classes: C.
        test_cfg: the head's test settings (``nms_type`` must be ``nms``).
    """

    def __init__(self, anchor_generator: AnchorGenerator, bbox_coder: DeltaXYWHCoder, num_classes: int,
                 test_cfg: TestSettings) -> None:
        super().__init__()
        self.anchor_generator, self.bbox_coder = anchor_generator, bbox_coder
        self.num_classes, self.test_cfg = num_classes, test_cfg

    def forward(self, cls_scores: list[torch.Tensor], bbox_preds: list[torch.Tensor],
                image_shapes: torch.Tensor) -> Detections:
        """Per level ``[B, A * C, H, W]`` logits and ``[B, A * 4, H, W]`` deltas -> fixed-size detections."""
        anchors = self.anchor_generator.grid_anchors([tuple(c.shape[-2:]) for c in cls_scores], cls_scores[0].device)
        boxes_l, scores_l = [], []
        for c, r, a in zip(cls_scores, bbox_preds, anchors):
            scores = levels_to_rows(c.float(), self.num_classes).sigmoid()  # [B, n, C]
            top = top_k_rows(scores.max(dim=2).values, self.test_cfg.nms_pre)
            deltas = gather_rows(levels_to_rows(r.float(), 4), top)
            boxes_l.append(clip_boxes(self.bbox_coder.decode(gather_rows(a, top), deltas), image_shapes))
            scores_l.append(gather_rows(scores, top))
        cfg = self.test_cfg
        return multiclass_nms(torch.cat(boxes_l, 1), torch.cat(scores_l, 1), cfg.score_thr, cfg.nms_iou_thr, cfg.max_per_img)


class PointDecode(FP32Region):
    """FCOS: top-``nms_pre`` by score x centerness, ltrb decoding, clipping, then class-wise NMS on
    ``score x centerness`` of the (class, point) pairs whose raw score passes ``score_thr``.

    Args:
        strides: the head's level strides.
        num_classes: C.
        norm_on_bbox: distances are in units of the stride.
        test_cfg: the head's test settings.
    """

    def __init__(self, strides: tuple[int, ...], num_classes: int, norm_on_bbox: bool, test_cfg: TestSettings) -> None:
        super().__init__()
        self.strides, self.num_classes, self.norm_on_bbox, self.test_cfg = tuple(strides), num_classes, norm_on_bbox, test_cfg

    def forward(self, cls_scores: list[torch.Tensor], bbox_preds: list[torch.Tensor], centernesses: list[torch.Tensor],
                image_shapes: torch.Tensor) -> Detections:
        points = grid_points([tuple(c.shape[-2:]) for c in cls_scores], self.strides, cls_scores[0].device)
        boxes_l, scores_l = [], []
        for lvl, (c, r, t, p) in enumerate(zip(cls_scores, bbox_preds, centernesses, points)):
            scores = levels_to_rows(c.float(), self.num_classes).sigmoid()  # [B, n, C]
            ctr = levels_to_rows(t.float(), 1)[..., 0].sigmoid()  # [B, n]
            top = top_k_rows((scores * ctr[..., None]).max(dim=2).values, self.test_cfg.nms_pre)
            scores, ctr = gather_rows(scores, top), gather_rows(ctr[..., None], top)
            dist = gather_rows(levels_to_rows(r.float(), 4), top)
            if self.norm_on_bbox:
                dist = dist * self.strides[lvl]
            boxes_l.append(clip_boxes(distance_to_box(gather_rows(p, top), dist), image_shapes))
            # Threshold the raw score, then rank by score x centerness (as select_and_nms does);
            # NMS then keeps everything above 0.
            scores_l.append(torch.where(scores > self.test_cfg.score_thr, scores * ctr, torch.zeros_like(scores)))
        cfg = self.test_cfg
        return multiclass_nms(torch.cat(boxes_l, 1), torch.cat(scores_l, 1), 0.0, cfg.nms_iou_thr, cfg.max_per_img)


class ProposalDecode(FP32Region):
    """RPN proposals: per level top-``nms_pre`` objectness, decoding, clipping, the min-size filter
    and NMS per level (level as the class, as MMDetection v2), the ``max_per_img`` best kept.

    Returns ``(num_proposals [B], proposals [B, K, 4], objectness [B, K], levels [B, K])``.
    """

    def __init__(self, anchor_generator: AnchorGenerator, bbox_coder: DeltaXYWHCoder, cfg: ProposalSettings) -> None:
        super().__init__()
        self.anchor_generator, self.bbox_coder, self.cfg = anchor_generator, bbox_coder, cfg

    def forward(self, cls_scores: list[torch.Tensor], bbox_preds: list[torch.Tensor],
                image_shapes: torch.Tensor) -> Detections:
        anchors = self.anchor_generator.grid_anchors([tuple(c.shape[-2:]) for c in cls_scores], cls_scores[0].device)
        num_levels = len(cls_scores)
        boxes_l, scores_l = [], []
        for lvl, (c, r, a) in enumerate(zip(cls_scores, bbox_preds, anchors)):
            scores = levels_to_rows(c.float(), 1)[..., 0].sigmoid()  # [B, n]
            top = top_k_rows(scores, self.cfg.nms_pre)
            scores = torch.gather(scores, 1, top)
            boxes = clip_boxes(self.bbox_coder.decode(gather_rows(a, top), gather_rows(levels_to_rows(r.float(), 4), top)),
                               image_shapes)
            w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
            scores = torch.where((w > self.cfg.min_bbox_size) & (h > self.cfg.min_bbox_size), scores,
                                 torch.zeros_like(scores))
            level = torch.zeros(num_levels, dtype=scores.dtype, device=scores.device)
            level[lvl] = 1.0
            boxes_l.append(boxes)
            scores_l.append(scores[..., None] * level)  # the level is the NMS class: no suppression across levels
        return multiclass_nms(torch.cat(boxes_l, 1), torch.cat(scores_l, 1), 0.0, self.cfg.nms_iou_thr,
                              self.cfg.max_per_img)
