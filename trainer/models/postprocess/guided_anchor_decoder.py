"""Batched, fixed-size test-time decoding of guided-anchor heads (GA-RetinaNet's detections, GA-RPN's
proposals).

MMDetection computes the classification and box convs only where the location score reaches
``loc_filter_thr`` (a masked conv, one image at a time) and drops the other locations; here the
convs are dense and the scores of those locations are zeroed, so that every shape is static
and the detections are the same.
"""
from __future__ import annotations

import torch

from dettool.structures.boxes import clip_boxes
from dettool.structures.detections import DetOutputs
from dettool.trainer.models.postprocess.batched import Float32Block, gather_rows, levels_to_rows, top_k_rows
from dettool.trainer.models.postprocess.dense_decoders import level_proposals
from dettool.trainer.models.postprocess.nms import NMSSettings, ProposalSettings, multiclass_nms
from dettool.trainer.models.task_modules.anchor_generator import AnchorGrid
from dettool.trainer.models.task_modules.delta_xywh_coder import DeltaXYWHCoder
from dettool.trainer.models.task_modules.guided_anchors import guided_anchors


class GuidedAnchorDecoder(Float32Block):
    """Per level: guided anchors from the squares and the shape prediction, sigmoid class scores
    zeroed where ``sigmoid(loc) < loc_filter_thr``, the ``nms_pre`` locations of highest class
    score, delta decoding on their guided anchors, clipping, then class-wise NMS of every (box,
    class) pair above ``score_thr`` (MMDetection's ``GuidedAnchorHead.predict_by_feat``, which
    applies no minimum box size).

    Args:
        square_generator: one square anchor per location.
        anchor_coder: decodes the shape predictions (``wh_ratio_clip`` 1e-6).
        bbox_coder: decodes the box deltas on the guided anchors.
        num_classes: C.
        loc_filter_thr: lowest location probability whose scores are kept.
        nms: test-time settings.
    """

    def __init__(self, square_generator: AnchorGrid, anchor_coder: DeltaXYWHCoder, bbox_coder: DeltaXYWHCoder,
                 num_classes: int, loc_filter_thr: float, nms: NMSSettings) -> None:
        super().__init__()
        self.square_generator, self.anchor_coder, self.bbox_coder = square_generator, anchor_coder, bbox_coder
        self.num_classes, self.loc_filter_thr, self.nms = num_classes, loc_filter_thr, nms

    def forward(self, cls_scores: list[torch.Tensor], bbox_preds: list[torch.Tensor], shape_preds: list[torch.Tensor],
                loc_preds: list[torch.Tensor], image_shapes: torch.Tensor) -> DetOutputs:
        """Per level ``[B, C, H, W]`` logits, ``[B, 4, H, W]`` deltas, ``[B, 2, H, W]`` shapes and
        ``[B, 1, H, W]`` location logits -> detections."""
        squares = self.square_generator.grid_anchors([tuple(c.shape[-2:]) for c in cls_scores], cls_scores[0].device)
        boxes_l, scores_l = [], []
        for c, r, s, loc, sq in zip(cls_scores, bbox_preds, shape_preds, loc_preds, squares):
            anchors = guided_anchors(sq, levels_to_rows(s.float(), 2), self.anchor_coder)  # [B, n, 4]
            keep = levels_to_rows(loc.float(), 1).sigmoid() >= self.loc_filter_thr  # [B, n, 1]
            scores = levels_to_rows(c.float(), self.num_classes).sigmoid()
            scores = torch.where(keep, scores, torch.zeros_like(scores))  # [B, n, C]
            rows = top_k_rows(scores.amax(dim=2), self.nms.nms_pre)
            deltas = gather_rows(levels_to_rows(r.float(), 4), rows)
            boxes_l.append(clip_boxes(self.bbox_coder.decode(gather_rows(anchors, rows), deltas), image_shapes))
            scores_l.append(gather_rows(scores, rows))
        return multiclass_nms(torch.cat(boxes_l, 1), torch.cat(scores_l, 1), self.nms)


class GuidedProposalDecoder(Float32Block):
    """GA-RPN proposals (MMDetection's ``GARPNHead._predict_by_feat_single``): per level the guided
    anchors, the sigmoid objectness of the locations whose centre probability reaches
    ``loc_filter_thr`` (MMDetection drops the others before its top-k; here their scores are 0, which
    never makes a proposal), then :func:`level_proposals`. MMDetection's ``nms_post`` (proposals kept
    per level after NMS) changes nothing while it is at least ``max_per_img``.

    Args:
        square_generator: one square anchor per location.
        anchor_coder: decodes the shape predictions (``wh_ratio_clip`` 1e-6).
        bbox_coder: decodes the box deltas on the guided anchors.
        loc_filter_thr: lowest location probability whose proposals are kept.
    """

    def __init__(self, square_generator: AnchorGrid, anchor_coder: DeltaXYWHCoder, bbox_coder: DeltaXYWHCoder,
                 loc_filter_thr: float) -> None:
        super().__init__()
        self.square_generator, self.anchor_coder, self.bbox_coder = square_generator, anchor_coder, bbox_coder
        self.loc_filter_thr = loc_filter_thr

    def forward(self, cls_scores: list[torch.Tensor], bbox_preds: list[torch.Tensor], shape_preds: list[torch.Tensor],
                loc_preds: list[torch.Tensor], image_shapes: torch.Tensor, cfg: ProposalSettings) -> DetOutputs:
        """Per level ``[B, 1, H, W]`` objectness logits, ``[B, 4, H, W]`` deltas, ``[B, 2, H, W]``
        shapes and ``[B, 1, H, W]`` location logits -> proposals (``labels``: their levels)."""
        squares = self.square_generator.grid_anchors([tuple(c.shape[-2:]) for c in cls_scores], cls_scores[0].device)
        levels = []
        for c, r, s, loc, sq in zip(cls_scores, bbox_preds, shape_preds, loc_preds, squares):
            anchors = guided_anchors(sq, levels_to_rows(s.float(), 2), self.anchor_coder)  # [B, n, 4]
            keep = levels_to_rows(loc.float(), 1)[..., 0].sigmoid() >= self.loc_filter_thr
            scores = levels_to_rows(c.float(), 1)[..., 0].sigmoid()
            levels.append((torch.where(keep, scores, torch.zeros_like(scores)), levels_to_rows(r.float(), 4), anchors))
        return level_proposals(levels, self.bbox_coder, image_shapes, cfg)
