"""FSAF head (Zhu et al., 2019, "Feature Selective Anchor-Free Module for Single-Shot Object Detection").

MMDetection's FSAFHead: RetinaNet's towers with one "anchor" per location (a square of the
level's stride, only the reference its centre and size give the TBLR distances), ReLU distances,
centre-region assignment, focal loss and IoU loss on decoded boxes. Online feature selection:
each gt is trained on the one pyramid level where its mean loss (classification summed over
classes plus regression, over its positive locations) is lowest; on the other levels its
locations are neither positive nor negative for its class.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dettool.trainer.models.dense_heads.retina_head import RetinaHead
from dettool.trainer.models.postprocess.batched import levels_to_rows
from dettool.trainer.models.task_modules.anchor_generator import anchor_inside_flags

UNSEEN_LEVEL_LOSS = 1e6  # the loss of a gt on a level where it has no positive location: never selected


class FSAFHead(RetinaHead):
    """FSAF's anchor-free branch on a RetinaNet head.

    Args:
        reg_bias: initial bias of the distance outputs (MMDetection 0.25: boxes of non-zero area).
        **kwargs: ``RetinaHead`` arguments; ``bbox_coder`` a ``TBLRCoder``, ``assigner`` a
            ``CenterRegionAssigner``, ``loss_cls`` with ``elementwise(logits, labels) -> [N, C]``
            (focal), ``loss_bbox`` with ``elementwise(boxes, gt_boxes) -> [N]`` on decoded boxes (IoU).

    Shapes: ``forward`` takes L maps ``[B, in_channels, H_l, W_l]`` and returns
    ``(cls_scores, bbox_preds)``: ``[B, A * C, H_l, W_l]`` logits and ``[B, A * 4, H_l, W_l]``
    non-negative (t, b, l, r) distances (A = 1 in FSAF).
    """

    def __init__(self, *, reg_bias: float, **kwargs) -> None:
        super().__init__(reg_decoded_bbox=True, **kwargs)
        if not getattr(self.loss_bbox, "decoded_boxes", False):
            raise ValueError("FSAF regresses decoded boxes: its loss_bbox must compare boxes (IoU, GIoU)")
        nn.init.constant_(self.retina_reg.bias, reg_bias)

    def forward(self, feats: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        cls_scores, bbox_preds = super().forward(feats)
        return cls_scores, [F.relu(b) for b in bbox_preds]  # TBLR distances are non-negative

    # ------------------------------------------------------------------------------- targets

    def _fsaf_targets_single(self, anchors: torch.Tensor, valid: torch.Tensor, target: dict,
                             meta: dict) -> tuple[torch.Tensor, ...]:
        """One image's targets over its anchors ``[N, 4]``.

        Returns ``labels [N]`` (C = background), ``label_weights [N, C]`` (0 for the classes a
        location is shadowed for, and on ignored or outside locations), ``box_targets [N, 4]``
        (the gt boxes of positives), ``gt_inds [N]`` (0-based gt of each positive, -1 elsewhere)
        and the number of negative locations.
        """
        n, c = anchors.shape[0], self.num_classes
        inside = anchor_inside_flags(anchors, valid, meta["img_shape"], self.allowed_border)
        inside_idx = inside.nonzero(as_tuple=True)[0]
        gt_boxes = target["boxes"].to(anchors.device).float()
        ignore = target.get("ignore_boxes")
        assign = self.assigner.assign(anchors[inside_idx], gt_boxes, target["labels"].to(anchors.device),
                                      None if ignore is None else ignore.to(anchors.device))
        labels = anchors.new_full((n,), c, dtype=torch.long)
        label_weights = anchors.new_zeros((n, c))
        box_targets = anchors.new_zeros((n, 4))
        gt_inds = anchors.new_full((n,), -1, dtype=torch.long)
        pos = inside_idx[assign.gt_inds > 0]
        neg = inside_idx[assign.gt_inds == 0]
        if pos.numel():
            assigned = assign.gt_inds[assign.gt_inds > 0] - 1
            box_targets[pos] = gt_boxes[assigned]
            gt_inds[pos] = assigned
            labels[pos] = assign.labels[assign.gt_inds > 0]
            label_weights[pos] = 1.0
        label_weights[neg] = 1.0
        shadowed = assign.shadowed_labels
        if shadowed.numel():
            label_weights[inside_idx[shadowed[:, 0]], shadowed[:, 1]] = 0.0
        return labels, label_weights, box_targets, gt_inds, neg.numel()

    # ------------------------------------------------------------------------------- loss

    def loss(self, raw: tuple[list[torch.Tensor], list[torch.Tensor]], targets: list[dict],
             metas: list[dict]) -> dict[str, torch.Tensor]:
        """Focal and IoU losses, each gt's on its selected level only, over the batch's positives.

        Also returns ``num_pos`` (positives per image after the selection) and ``pos_recall``
        (percent of positives whose top class is their gt's), both detached.
        """
        cls_scores, bbox_preds = raw
        bbox_preds = [b.clamp(min=1e-4) for b in bbox_preds]  # no zero-area boxes in the IoU loss
        sizes = [tuple(c.shape[-2:]) for c in cls_scores]
        device = cls_scores[0].device
        level_anchors = self.anchor_generator.grid_anchors(sizes, device)
        anchors = torch.cat(level_anchors)
        level_of = torch.cat([torch.full((a.shape[0],), i, dtype=torch.long, device=device)
                              for i, a in enumerate(level_anchors)])
        per_image, num_gts, num_neg = [], 0, 0
        for target, meta in zip(targets, metas):
            valid = torch.cat(self.anchor_generator.valid_flags(sizes, meta["pad_shape"], meta["img_shape"], device))
            labels, lw, bt, gt_inds, q = self._fsaf_targets_single(anchors, valid, target, meta)
            per_image.append((labels, lw, bt, torch.where(gt_inds >= 0, gt_inds + num_gts, gt_inds)))
            num_gts += target["boxes"].shape[0]  # gt indices run over the batch
            num_neg += q
        labels, label_weights, box_targets, gt_inds = (torch.cat(x) for x in zip(*per_image))
        level_of = level_of.repeat(len(targets))
        cls = torch.cat([levels_to_rows(c, self.num_classes) for c in cls_scores], 1).reshape(-1, self.num_classes)
        reg = torch.cat([levels_to_rows(r, 4) for r in bbox_preds], 1).reshape(-1, 4)

        loss_cls = self.loss_cls.elementwise(cls, labels) * label_weights  # [B * N, C]
        pos = (gt_inds >= 0).nonzero(as_tuple=True)[0]
        pred = self.bbox_coder.decode(anchors.repeat(len(targets), 1)[pos], reg[pos])
        loss_pos_box = self.loss_bbox.elementwise(pred, box_targets[pos])  # [P]

        best = self._select_levels(loss_cls[pos].sum(dim=1) + loss_pos_box, gt_inds[pos], level_of[pos],
                                   num_gts, len(cls_scores))
        off_level = best[gt_inds[pos]] != level_of[pos]
        # Off its gt's level a location is neither positive nor negative for that gt's class.
        cls_weight = torch.ones_like(loss_cls)
        cls_weight[pos[off_level], labels[pos[off_level]]] = 0.0
        num_pos = int((~off_level).sum())
        avg = float(num_pos) if num_pos else float(num_neg)
        avg = max(avg, 1.0)
        losses = {"loss_cls": (loss_cls * cls_weight).sum() / avg,
                  "loss_bbox": (loss_pos_box * (~off_level)).sum() / avg if pos.numel() else reg.sum() * 0}
        with torch.no_grad():
            kept = pos[~off_level]
            hits = cls[kept].argmax(dim=1) == labels[kept]
            losses["pos_recall"] = hits.float().mean() * 100 if kept.numel() else cls.new_zeros(())
            losses["num_pos"] = cls.new_tensor(num_pos / len(targets))
        return losses

    @staticmethod
    @torch.no_grad()
    def _select_levels(pos_losses: torch.Tensor, pos_gt: torch.Tensor, pos_level: torch.Tensor, num_gts: int,
                       num_levels: int) -> torch.Tensor:
        """The level ``[num_gts]`` of each gt with the lowest mean loss over its positives.

        Args:
            pos_losses: ``[P]`` loss of each positive location (classes summed, plus box loss).
            pos_gt: ``[P]`` its gt (index over the batch).
            pos_level: ``[P]`` its level.
        """
        slot = pos_level * num_gts + pos_gt
        total = pos_losses.new_zeros(num_levels * num_gts).index_add_(0, slot, pos_losses.detach())
        count = pos_losses.new_zeros(num_levels * num_gts).index_add_(0, slot, torch.ones_like(pos_losses))
        mean = torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, UNSEEN_LEVEL_LOSS))
        if num_gts == 0:
            return pos_gt.new_zeros(0)
        return mean.reshape(num_levels, num_gts).argmin(dim=0)
