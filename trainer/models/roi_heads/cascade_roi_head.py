"""Cascade R-CNN RoI head (Cai & Vasconcelos): box stages trained at rising IoU thresholds."""
from __future__ import annotations

import torch
from torch import nn

from dettool.structures.detections import DetOutputs
from dettool.trainer.models.postprocess.nms import NMSSettings, multiclass_nms
from dettool.trainer.models.postprocess.roi_decoders import BatchedRoIs, BoxDecode, CascadeRefine, StageMean
from dettool.trainer.models.roi_heads.roi_sampling import assign_and_sample, rois_from_boxes, split_rows
from dettool.trainer.models.roi_heads.standard_roi_head import MaskBranch, mean_mask_probs
from dettool.trainer.models.task_modules.max_iou_assigner import MaxIoUAssigner
from dettool.trainer.models.task_modules.samplers import RandomSampler


class CascadeRoIHead(nn.Module):
    """Several box stages; each refines the previous stage's boxes and is trained on them.

    Args:
        roi_extractor: multi-level RoIAlign shared by the stages.
        bbox_heads: one ``ConvFCBBoxHead`` per stage.
        assigners: one per stage (IoU 0.5 / 0.6 / 0.7 in Cascade R-CNN).
        samplers: one per stage.
        add_gt_as_proposals: per stage, add the gt boxes to its RoIs in training (MMDetection: all).
        stage_loss_weights: loss weight per stage (1 / 0.5 / 0.25).
        mask_branches: optional ``MaskBranch`` per stage (Cascade Mask R-CNN).
        test_cfg: test-time settings. At test time the class logits are averaged over the stages
            (then the softmax) and boxes come from the last stage, as in MMDetection.

    Loss keys: ``loss_cls_s{i}``, ``loss_bbox_s{i}`` (``loss_mask_s{i}``), already weighted.
    """

    def __init__(self, *, roi_extractor: nn.Module, bbox_heads: list[nn.Module], assigners: list[MaxIoUAssigner],
                 samplers: list[RandomSampler], add_gt_as_proposals: list[bool], stage_loss_weights: list[float],
                 mask_branches: list[MaskBranch] | None, test_cfg: NMSSettings) -> None:
        super().__init__()
        if not (len(bbox_heads) == len(assigners) == len(samplers) == len(add_gt_as_proposals)
                == len(stage_loss_weights)):
            raise ValueError("cascade: one box head, assigner, sampler, add_gt_as_proposals and loss weight per stage")
        self.roi_extractor = roi_extractor
        self.bbox_heads = nn.ModuleList(bbox_heads)
        self.assigners, self.samplers = list(assigners), list(samplers)
        self.add_gt_as_proposals = list(add_gt_as_proposals)
        self.stage_loss_weights = list(stage_loss_weights)
        self.mask_branches = nn.ModuleList(mask_branches) if mask_branches else None
        self.test_cfg = test_cfg
        self.rois = BatchedRoIs()
        self.refine = nn.ModuleList(CascadeRefine(head.refine_rois) for head in bbox_heads[:-1])
        self.stage_mean = StageMean()
        last = bbox_heads[-1]
        self.box_decode = BoxDecode(last.bbox_coder, last.num_classes, last.reg_class_agnostic,
                                    test_cfg.min_bbox_size)

    @property
    def num_stages(self) -> int:
        return len(self.bbox_heads)

    @property
    def num_classes(self) -> int:
        return self.bbox_heads[0].num_classes

    def box_features(self, feats: list[torch.Tensor], rois: torch.Tensor,
                     semantic: torch.Tensor | None = None) -> torch.Tensor:
        """The box heads' RoI features of RoIs ``[R, 5]`` (``semantic``: the semantic embedding of
        a model with a semantic branch, Hybrid Task Cascade's; unused here)."""
        return self.roi_extractor(feats, rois)

    def stage_box_loss(self, s: int, feats: list[torch.Tensor], boxes_per_image: list[torch.Tensor],
                       targets: list[dict], semantic: torch.Tensor | None = None) -> tuple[dict, list, tuple]:
        """Stage ``s`` on its RoIs sampled from ``boxes_per_image``: its weighted losses
        (``*_s{s}``), the sampled RoIs per image and ``(rois, labels, cls_score, bbox_pred)``."""
        head, w = self.bbox_heads[s], self.stage_loss_weights[s]
        sampled = [assign_and_sample(b, t, self.assigners[s], self.samplers[s], self.add_gt_as_proposals[s])
                   for b, t in zip(boxes_per_image, targets)]
        rois = rois_from_boxes([x.boxes for x in sampled])
        cls_score, bbox_pred = head(self.box_features(feats, rois, semantic))
        parts = [head.get_targets(x.boxes[: x.num_pos], x.pos_gt_boxes, x.pos_labels, x.boxes.shape[0] - x.num_pos)
                 for x in sampled]
        labels, label_w, box_t, box_w = (torch.cat(p) for p in zip(*parts))
        losses = {f"{k}_s{s}": v * w if k.startswith("loss_") else v
                  for k, v in head.loss(cls_score, bbox_pred, rois, labels, label_w, box_t, box_w).items()}
        return losses, sampled, (rois, labels, cls_score, bbox_pred)

    def loss(self, feats: list[torch.Tensor], proposals: list[torch.Tensor], targets: list[dict],
             metas: list[dict]) -> dict[str, torch.Tensor]:
        losses: dict[str, torch.Tensor] = {}
        boxes_per_image = [p[:, :4].detach() for p in proposals]
        for s in range(self.num_stages):
            stage_losses, sampled, (rois, labels, cls_score, bbox_pred) = self.stage_box_loss(
                s, feats, boxes_per_image, targets)
            losses.update(stage_losses)
            if self.mask_branches is not None:
                losses[f"loss_mask_s{s}"] = self.stage_loss_weights[s] * self.mask_branches[s].loss(
                    feats, [x.boxes[: x.num_pos] for x in sampled], [x.pos_gt_inds for x in sampled],
                    [x.pos_labels for x in sampled], targets)
            if s + 1 < self.num_stages:
                boxes_per_image = self._refine(self.bbox_heads[s], sampled, rois, labels, cls_score.detach(),
                                               bbox_pred.detach(), metas)
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

    def box_detections(self, feats: list[torch.Tensor], num_proposals: torch.Tensor, proposals: torch.Tensor,
                       image_shapes: torch.Tensor, semantic: torch.Tensor | None = None) -> DetOutputs:
        """Detections without masks from padded proposals ``[B, K, 4]``: each stage refines the
        RoIs of the one before, logits are averaged over the stages, boxes come from the last."""
        rois = self.rois(proposals)
        cls_scores = []
        for s, head in enumerate(self.bbox_heads):
            cls_score, bbox_pred = head(self.box_features(feats, rois, semantic))
            cls_scores.append(cls_score)
            if s + 1 < self.num_stages:
                rois = self.refine[s](rois, cls_score, bbox_pred, image_shapes)
        logits = cls_scores[0] if len(cls_scores) == 1 else self.stage_mean(cls_scores)
        boxes, scores = self.box_decode(rois, logits, bbox_pred, num_proposals, image_shapes)
        return multiclass_nms(boxes, scores, self.test_cfg)

    def decode(self, feats: list[torch.Tensor], num_proposals: torch.Tensor, proposals: torch.Tensor,
               image_shapes: torch.Tensor) -> DetOutputs:
        """Fixed-size detections (``box_detections``) and mask probabilities averaged over the
        stages' mask branches."""
        dets = self.box_detections(feats, num_proposals, proposals, image_shapes)
        if self.mask_branches is None:
            return dets
        return dets._replace(masks=mean_mask_probs(list(self.mask_branches), feats, dets))
