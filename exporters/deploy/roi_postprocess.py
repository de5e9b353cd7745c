"""Batched, fixed-size RoI heads for deploy graphs: Faster / Mask / Cascade (Mask) R-CNN.

``DeployRoIHead`` reproduces ``StandardRoIHead.predict`` and ``CascadeRoIHead.predict`` for a
whole batch: every image brings exactly K proposals (``ProposalDecode``'s padded output; padding
rows are scored 0 so they never become detections), RoI features come from
``dettool::multi_level_roi_align`` and the detections from ``dettool::batched_nms``.
"""
from __future__ import annotations

import torch
from torch import nn

import dettool.ops  # noqa: F401  (registers torch.ops.dettool.*)
from dettool.exporters.deploy.dense_postprocess import Detections, multiclass_nms
from dettool.exporters.deploy.regions import FP32Region, clip_boxes, padding_mask, rois_from_batched
from dettool.trainer.models.dense_heads.base_dense_head import TestSettings
from dettool.trainer.models.roi_extractors.multi_level_roi_align import MultiLevelRoIAlign
from dettool.trainer.models.roi_heads.bbox_head import ConvFCBBoxHead


def pool(extractor: MultiLevelRoIAlign, feats: list[torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
    """``dettool::multi_level_roi_align`` with an extractor's settings: ``[R, 5]`` -> ``[R, C, S, S]``."""
    s = extractor.output_size
    return torch.ops.dettool.multi_level_roi_align(rois, list(feats[: extractor.num_levels]), s, s,
                                                   list(extractor.strides), extractor.sampling_ratio,
                                                   extractor.finest_scale, extractor.aligned)


class RoIs(FP32Region):
    """``[B, K, 4]`` boxes -> ``[B * K, 5]`` float32 RoIs (coordinates stay float32 in FP16 graphs)."""

    def forward(self, boxes: torch.Tensor) -> torch.Tensor:
        return rois_from_batched(boxes.float())


class BoxDecode(FP32Region):
    """Class probabilities and per-class boxes of the RoIs of one box head, clipped per image.

    Returns ``boxes`` ``[B, K, C, 4]`` (``[B, K, 4]`` when class-agnostic) and ``scores``
    ``[B, K, C]``, the scores of padding RoIs (index >= ``num_rois[b]``) set to 0.
    """

    def __init__(self, head: ConvFCBBoxHead) -> None:
        super().__init__()
        self.num_classes, self.agnostic, self.coder = head.num_classes, head.reg_class_agnostic, head.bbox_coder

    def forward(self, rois: torch.Tensor, cls_score: torch.Tensor, bbox_pred: torch.Tensor, num_rois: torch.Tensor,
                image_shapes: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        k = rois.shape[0] // batch
        c = self.num_classes
        scores = cls_score.float().softmax(dim=1)[:, :c].reshape(batch, k, c)
        scores = torch.where(padding_mask(num_rois, k)[..., None], scores, torch.zeros_like(scores))
        if self.agnostic:
            boxes = self.coder.decode(rois[:, 1:], bbox_pred.float()).reshape(batch, k, 4)
        else:
            ref = rois[:, None, 1:].expand(rois.shape[0], c, 4)
            boxes = self.coder.decode(ref, bbox_pred.float().reshape(-1, c, 4)).reshape(batch, k, c, 4)
        return clip_boxes(boxes, image_shapes), scores


class CascadeRefine(FP32Region):
    """A cascade stage's RoIs regressed by the deltas of their best foreground class, clipped per image."""

    def __init__(self, head: ConvFCBBoxHead) -> None:
        super().__init__()
        self.head = head

    def forward(self, rois: torch.Tensor, cls_score: torch.Tensor, bbox_pred: torch.Tensor, image_shapes: torch.Tensor,
                batch: int) -> torch.Tensor:
        labels = cls_score[:, :-1].argmax(dim=1)
        refined = self.head.refine_rois(rois, labels, bbox_pred.float())
        boxes = clip_boxes(refined[:, 1:].reshape(batch, -1, 4), image_shapes)
        return torch.cat([rois[:, :1], boxes.reshape(-1, 4)], dim=1)


class StageMean(FP32Region):
    """Cascade test-time scores: class probabilities averaged over the stages, as log-probabilities
    (``softmax(log p) = p``, as ``CascadeRoIHead.predict``)."""

    def forward(self, cls_scores: list[torch.Tensor]) -> torch.Tensor:
        probs = [c.float().softmax(dim=1) for c in cls_scores]
        return (sum(probs) / len(probs)).clamp(min=1e-12).log()


class MaskProbs(nn.Module):
    """Mask probabilities ``[B, K, M, M]`` of the detections, averaged over the mask branches."""

    def __init__(self, branches: list[nn.Module]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.rois = RoIs()

    def forward(self, feats: list[torch.Tensor], boxes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        b, k = boxes.shape[0], boxes.shape[1]
        rois = self.rois(boxes)
        flat_labels = labels.reshape(-1).clamp(min=0).long()  # padding rows (-1) read class 0; cut by num_dets
        probs = [br.mask_head.predict_masks(br.mask_head(pool(br.roi_extractor, feats, rois)), flat_labels)
                 for br in self.branches]
        mean = probs[0] if len(probs) == 1 else sum(probs) / len(probs)
        return mean.reshape(b, k, mean.shape[-2], mean.shape[-1])


class DeployRoIHead(nn.Module):
    """Box stages (one for Faster / Mask R-CNN, several for Cascade) and optional mask branches.

    Args:
        roi_extractor: the box RoI extractor.
        bbox_heads: one ``ConvFCBBoxHead`` per stage.
        mask_branches: ``MaskBranch`` modules (one, or one per cascade stage), or None.
        test_cfg: score threshold, NMS IoU, detections per image.

    ``forward(feats, num_proposals [B], proposals [B, K, 4], image_shapes [B, 2])`` returns
    ``(num_dets [B], boxes [B, D, 4], scores [B, D], labels [B, D])`` and, with masks,
    ``masks [B, D, M, M]``, ``D = test_cfg.max_per_img``.
    """

    def __init__(self, roi_extractor: MultiLevelRoIAlign, bbox_heads: list[ConvFCBBoxHead],
                 mask_branches: list[nn.Module] | None, test_cfg: TestSettings) -> None:
        super().__init__()
        self.roi_extractor = roi_extractor
        self.bbox_heads = nn.ModuleList(bbox_heads)
        self.rois = RoIs()
        self.refine = nn.ModuleList(CascadeRefine(h) for h in bbox_heads[:-1])
        self.stage_mean = StageMean()
        self.decode = BoxDecode(bbox_heads[-1])
        self.masks = MaskProbs(mask_branches) if mask_branches else None
        self.test_cfg = test_cfg

    def forward(self, feats: list[torch.Tensor], num_proposals: torch.Tensor, proposals: torch.Tensor,
                image_shapes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        batch = proposals.shape[0]
        rois = self.rois(proposals)
        cls_scores = []
        for s, head in enumerate(self.bbox_heads):
            cls_score, bbox_pred = head(pool(self.roi_extractor, feats, rois))
            cls_scores.append(cls_score)
            if s + 1 < len(self.bbox_heads):
                rois = self.refine[s](rois, cls_score, bbox_pred, image_shapes, batch)
        logits = cls_scores[0] if len(cls_scores) == 1 else self.stage_mean(cls_scores)
        boxes, scores = self.decode(rois, logits, bbox_pred, num_proposals, image_shapes, batch)
        cfg = self.test_cfg
        num, det_boxes, det_scores, det_labels = multiclass_nms(boxes, scores, cfg.score_thr, cfg.nms_iou_thr,
                                                                cfg.max_per_img)
        if self.masks is None:
            return num, det_boxes, det_scores, det_labels
        return num, det_boxes, det_scores, det_labels, self.masks(feats, det_boxes, det_labels)
