"""Cascade R-CNN RoI head (Cai & Vasconcelos): box stages trained at rising IoU thresholds."""
from __future__ import annotations

import torch
from torch import nn

from dettool.trainer.models.dense_heads.base_dense_head import TestSettings, select_and_nms
from dettool.trainer.models.roi_heads.roi_sampling import assign_and_sample, rois_from_boxes
from dettool.trainer.models.roi_heads.standard_roi_head import MaskBranch, finish_detections, split_rows
from dettool.trainer.models.structures import Detections
from dettool.trainer.models.task_modules.max_iou_assigner import MaxIoUAssigner
from dettool.trainer.models.task_modules.ohem_sampler import OHEMSampler


class CascadeRoIHead(nn.Module):
    """Several box stages; each refines the previous stage's boxes and is trained on them.

    Args:
        roi_extractor: multi-level RoIAlign shared by the stages.
        bbox_heads: one ``ConvFCBBoxHead`` per stage.
        assigners: one per stage (IoU 0.5 / 0.6 / 0.7 in Cascade R-CNN).
        samplers: one per stage.
        stage_loss_weights: loss weight per stage (1 / 0.5 / 0.25).
        add_gt_as_proposals: add gt boxes to every stage's RoIs in training.
        mask_branches: optional ``MaskBranch`` per stage (Cascade Mask R-CNN).
        test_cfg: test-time settings. At test time class scores are averaged over the stages and
            boxes come from the last stage (as in MMDetection).

    Loss keys: ``loss_cls_s{i}``, ``loss_bbox_s{i}`` (``loss_mask_s{i}``), already weighted.
    """

    def __init__(self, roi_extractor: nn.Module, bbox_heads: list[nn.Module], assigners: list[MaxIoUAssigner],
                 samplers: list, stage_loss_weights: list[float], add_gt_as_proposals: bool = True,
                 mask_branches: list[MaskBranch] | None = None, test_cfg: TestSettings = TestSettings()) -> None:
        super().__init__()
        if not (len(bbox_heads) == len(assigners) == len(samplers) == len(stage_loss_weights)):
            raise ValueError("cascade: one box head, assigner, sampler and loss weight per stage")
        self.roi_extractor = roi_extractor
        self.bbox_heads = nn.ModuleList(bbox_heads)
        self.assigners, self.samplers = list(assigners), list(samplers)
        self.stage_loss_weights = list(stage_loss_weights)
        self.add_gt_as_proposals = add_gt_as_proposals
        self.mask_branches = nn.ModuleList(mask_branches) if mask_branches else None
        self.test_cfg = test_cfg

    @property
    def num_stages(self) -> int:
        return len(self.bbox_heads)

    @property
    def num_classes(self) -> int:
        return self.bbox_heads[0].num_classes

    def loss(self, feats: list[torch.Tensor], proposals: list[torch.Tensor], targets: list[dict],
             metas: list[dict]) -> dict[str, torch.Tensor]:
        losses: dict[str, torch.Tensor] = {}
        boxes_per_image = [p[:, :4].detach() for p in proposals]
        for s, (head, assigner, sampler, w) in enumerate(zip(self.bbox_heads, self.assigners, self.samplers,
                                                             self.stage_loss_weights)):
            if isinstance(sampler, OHEMSampler):
                raise ValueError("OHEM is supported in the standard RoI head only")
            sampled = [assign_and_sample(b, t, assigner, sampler, self.add_gt_as_proposals)
                       for b, t in zip(boxes_per_image, targets)]
            rois = rois_from_boxes([x.boxes for x in sampled])
            cls_score, bbox_pred = head(self.roi_extractor(feats, rois))
            parts = [head.get_targets(x.boxes[: x.num_pos], x.pos_gt_boxes, x.pos_labels, x.boxes.shape[0] - x.num_pos)
                     for x in sampled]
            labels, label_w, box_t, box_w = (torch.cat(p) for p in zip(*parts))
            for k, v in head.loss(cls_score, bbox_pred, rois, labels, label_w, box_t, box_w).items():
                losses[f"{k}_s{s}"] = v * w if k.startswith("loss_") else v
            if self.mask_branches is not None:
                losses[f"loss_mask_s{s}"] = w * self.mask_branches[s].loss(
                    feats, [x.boxes[: x.num_pos] for x in sampled], [x.pos_gt_inds for x in sampled],
                    [x.pos_labels for x in sampled], targets)
            if s + 1 < self.num_stages:
                boxes_per_image = self._refine(head, sampled, rois, labels, cls_score.detach(), bbox_pred.detach(), metas)
        return losses

    def _refine(self, head, sampled, rois, labels, cls_score, bbox_pred, metas) -> list[torch.Tensor]:
        """Regress this stage's RoIs into the next stage's proposals (gt boxes added as RoIs dropped)."""
        bg = labels == self.num_classes
        labels = torch.where(bg, cls_score[:, :-1].argmax(dim=1), labels)
        counts = [x.boxes.shape[0] for x in sampled]
        out = []
        for x, r, lab, reg, meta in zip(sampled, split_rows(rois, counts), split_rows(labels, counts),
                                        split_rows(bbox_pred, counts), metas):
            refined = head.refine_rois(r, lab, reg, meta["img_shape"])[:, 1:]
            keep = torch.ones(refined.shape[0], dtype=torch.bool, device=refined.device)
            keep[: x.num_pos] = ~x.pos_is_gt
            out.append(refined[keep].detach())
        return out

    @torch.no_grad()
    def predict(self, feats: list[torch.Tensor], proposals: list[torch.Tensor], metas: list[dict]) -> list[Detections]:
        counts = [p.shape[0] for p in proposals]
        rois = rois_from_boxes([p[:, :4] for p in proposals]).to(feats[0].device)
        probs = []
        for s, head in enumerate(self.bbox_heads):
            cls_score, bbox_pred = head(self.roi_extractor(feats, rois))
            probs.append(cls_score.softmax(dim=1))
            if s + 1 < self.num_stages:
                labels = cls_score[:, :-1].argmax(dim=1)
                rois = torch.cat([head.refine_rois(r, lab, reg, m["img_shape"]) for r, lab, reg, m in zip(
                    split_rows(rois, counts), split_rows(labels, counts), split_rows(bbox_pred, counts), metas)])
        mean_logits = (sum(probs) / len(probs)).clamp(min=1e-12).log()  # softmax(log p) = p
        dets = []
        last = self.bbox_heads[-1]
        for r, c, b, meta in zip(split_rows(rois, counts), split_rows(mean_logits, counts),
                                 split_rows(bbox_pred, counts), metas):
            boxes, scores = last.predict_boxes(r, c, b, meta["img_shape"])
            dets.append(select_and_nms(boxes, scores, self.test_cfg))
        branches = list(self.mask_branches) if self.mask_branches is not None else None
        return finish_detections(dets, feats, metas, branches)
