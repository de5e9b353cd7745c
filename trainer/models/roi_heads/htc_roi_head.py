"""Hybrid Task Cascade's RoI head (Chen et al., CVPR 2019; MMDetection's ``HybridTaskCascadeRoIHead``):
Cascade Mask R-CNN whose box and mask branches interleave, whose mask heads pass their features
on from stage to stage, and whose RoI features carry a semantic segmentation branch's embedding."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from dettool.structures.detections import DetOutputs
from dettool.trainer.models.roi_heads.cascade_roi_head import CascadeRoIHead
from dettool.trainer.models.roi_heads.fused_semantic_head import FusedSemanticHead
from dettool.trainer.models.roi_heads.htc_mask_head import HTCMaskHead
from dettool.trainer.models.roi_heads.roi_sampling import assign_and_sample, rois_from_boxes


class HybridTaskCascadeRoIHead(CascadeRoIHead):
    """``CascadeRoIHead`` with HTC's three additions.

    - Interleaved execution (``interleaved``): in training each stage's mask head learns on RoIs
      re-sampled from the boxes that stage just regressed, not on the boxes it read.
    - Mask information flow (``mask_info_flow``): stage ``s``'s mask head adds (through its
      ``conv_res``) the conv features the heads of stages ``0..s-1`` computed in turn on the same
      RoI features. At test time the chain runs through every stage and the masks are the last
      stage's (MMDetection 3.3; its 2.x averaged the stages' probabilities).
    - Semantic branch (``semantic_head``, optional): its embedding, pooled per RoI by
      ``semantic_roi_extractor`` (and average-pooled to the box heads' size), is added to the
      box and the mask RoI features; its ``loss_semantic_seg`` trains on ``target["semantic"]``.

    Args:
        semantic_head: the ``FusedSemanticHead``, or None (HTC without the semantic branch).
        semantic_roi_extractor: single-level RoIAlign on the embedding (stride 8, 14x14).
        interleaved: train each mask head on its stage's regressed boxes.
        mask_info_flow: chain the mask heads' features.
        **kwargs: ``CascadeRoIHead`` arguments; ``mask_branches`` of ``HTCMaskHead`` s are required.

    Loss keys: ``loss_semantic_seg`` and the cascade's ``loss_cls_s{i}``, ``loss_bbox_s{i}``,
    ``loss_mask_s{i}`` (weighted by their stage).
    """

    def __init__(self, *, semantic_head: FusedSemanticHead | None, semantic_roi_extractor: nn.Module | None,
                 interleaved: bool, mask_info_flow: bool, **kwargs) -> None:
        super().__init__(**kwargs)
        if self.mask_branches is None or not all(isinstance(b.mask_head, HTCMaskHead) for b in self.mask_branches):
            raise ValueError("Hybrid Task Cascade needs an HTC mask head per stage (roi_head.mask_head)")
        if (semantic_head is None) != (semantic_roi_extractor is None):
            raise ValueError("the semantic head and its RoI extractor come together")
        self.semantic_head = semantic_head
        self.semantic_roi_extractor = semantic_roi_extractor
        self.interleaved, self.mask_info_flow = interleaved, mask_info_flow

    def _with_semantic(self, roi_feats: torch.Tensor, rois: torch.Tensor,
                       semantic: torch.Tensor | None) -> torch.Tensor:
        """RoI features plus the semantic embedding's RoI features of the same size."""
        if semantic is None:
            return roi_feats
        extra = self.semantic_roi_extractor([semantic], rois)
        if extra.shape[-2:] != roi_feats.shape[-2:]:
            extra = F.adaptive_avg_pool2d(extra, roi_feats.shape[-2:])
        return roi_feats + extra

    def box_features(self, feats: list[torch.Tensor], rois: torch.Tensor,
                     semantic: torch.Tensor | None = None) -> torch.Tensor:
        return self._with_semantic(self.roi_extractor(feats, rois), rois, semantic)

    def mask_logits(self, stage: int, feats: list[torch.Tensor], rois: torch.Tensor,
                    semantic: torch.Tensor | None) -> torch.Tensor:
        """Stage ``stage``'s mask logits ``[R, C', M, M]`` of RoIs ``[R, 5]``, after the flow of the
        features of the stages before it (on the RoI features of that stage's extractor)."""
        branch = self.mask_branches[stage]
        mask_feats = self._with_semantic(branch.roi_extractor(feats, rois), rois, semantic)
        previous = None
        if self.mask_info_flow:
            for before in self.mask_branches[:stage]:
                previous = before.mask_head.features(mask_feats, previous)
        head = branch.mask_head
        return head.logits(head.features(mask_feats, previous))

    def loss(self, feats: list[torch.Tensor], proposals: list[torch.Tensor], targets: list[dict],
             metas: list[dict]) -> dict[str, torch.Tensor]:
        losses: dict[str, torch.Tensor] = {}
        semantic = None
        if self.semantic_head is not None:
            if any("semantic" not in t for t in targets):
                raise ValueError("the semantic head trains on target['semantic'] (data.train.seg_dir)")
            seg_logits, semantic = self.semantic_head(feats)
            losses["loss_semantic_seg"] = self.semantic_head.loss(seg_logits, [t["semantic"] for t in targets])
        boxes_per_image = [p[:, :4].detach() for p in proposals]
        for s in range(self.num_stages):
            stage_losses, sampled, (rois, labels, cls_score, bbox_pred) = self.stage_box_loss(
                s, feats, boxes_per_image, targets, semantic)
            losses.update(stage_losses)
            refined = None
            if self.interleaved or s + 1 < self.num_stages:
                refined = self._refine(self.bbox_heads[s], sampled, rois, labels, cls_score.detach(),
                                       bbox_pred.detach(), metas)
            if self.interleaved:  # the mask head learns on the boxes this stage regressed
                sampled = [assign_and_sample(b, t, self.assigners[s], self.samplers[s], self.add_gt_as_proposals[s])
                           for b, t in zip(refined, targets)]
            losses[f"loss_mask_s{s}"] = self.stage_loss_weights[s] * self._mask_loss(s, feats, sampled, targets,
                                                                                      semantic)
            if s + 1 < self.num_stages:
                boxes_per_image = refined
        return losses

    def _mask_loss(self, s: int, feats: list[torch.Tensor], sampled: list, targets: list[dict],
                   semantic: torch.Tensor | None) -> torch.Tensor:
        pos_boxes = [x.boxes[: x.num_pos] for x in sampled]
        rois = rois_from_boxes(pos_boxes).to(feats[0].device)
        logits = self.mask_logits(s, feats, rois, semantic)
        branch = self.mask_branches[s]
        mask_targets = branch.targets(logits, pos_boxes, [x.pos_gt_inds for x in sampled], targets)
        return branch.mask_head.loss(logits, mask_targets, torch.cat([x.pos_labels for x in sampled]))["loss_mask"]

    def decode(self, feats: list[torch.Tensor], num_proposals: torch.Tensor, proposals: torch.Tensor,
               image_shapes: torch.Tensor) -> DetOutputs:
        """The cascade's fixed-size detections (RoI features with the semantic embedding) and the
        last stage's mask probabilities after the flow through every stage."""
        semantic = self.semantic_head(feats)[1] if self.semantic_head is not None else None
        dets = self.box_detections(feats, num_proposals, proposals, image_shapes, semantic)
        last = self.num_stages - 1
        branch = self.mask_branches[last]
        logits = self.mask_logits(last, feats, branch.rois(dets.boxes), semantic)  # without the flow: its head alone
        labels = dets.labels.reshape(-1).clamp(min=0).long()
        probs = branch.mask_head.label_logits(logits, labels).sigmoid()
        b, k = dets.boxes.shape[:2]
        return dets._replace(masks=probs.reshape(b, k, probs.shape[-2], probs.shape[-1]))
