"""Anchor-based dense head: targets from anchors, losses, and test-time decoding.

Subclasses build the conv layers and implement ``forward(feats) -> (cls_scores, bbox_preds)``
with per level ``cls_scores[l]: [B, A * C, H_l, W_l]`` and ``bbox_preds[l]: [B, A * 4, H_l, W_l]``.
"""
from __future__ import annotations

import torch
from torch import nn

from dettool.structures.detections import DetOutputs
from dettool.trainer.models.dense_heads.base_dense_head import BaseDenseHead
from dettool.trainer.models.postprocess.batched import levels_to_rows
from dettool.trainer.models.postprocess.dense_decoders import AnchorDecoder
from dettool.trainer.models.postprocess.nms import NMSSettings
from dettool.trainer.models.task_modules.anchor_generator import AnchorGrid, anchor_inside_flags
from dettool.trainer.models.task_modules.delta_xywh_coder import DeltaXYWHCoder
from dettool.trainer.models.task_modules.max_iou_assigner import MaxIoUAssigner
from dettool.trainer.models.task_modules.samplers import PseudoSampler, RandomSampler


class AnchorHead(BaseDenseHead):
    """Shared anchor-head machinery.

    ``softmax_scores`` (class attribute): the classifier gives C + 1 logits per anchor, background
    last, scored by a softmax (SSD); otherwise C sigmoid logits.

    Args:
        num_classes: foreground classes C (label C is background).
        in_channels: channels of each input level.
        anchor_generator: anchors per level (``AnchorGenerator``, ``SSDAnchorGenerator``).
        bbox_coder: delta coder.
        assigner: assigns anchors to gt.
        sampler: PseudoSampler (all anchors) or RandomSampler (``neg_pos_ub`` honoured).
        loss_cls: classification loss on logits ``[N, C]`` and labels ``[N]`` (None: a subclass's
            ``loss`` computes its own).
        loss_bbox: regression loss (on deltas, or on decoded boxes when its ``decoded_boxes``).
        allowed_border: anchors crossing the image by more than this are not trained; -1 = no limit.
        reg_decoded_bbox: regress decoded boxes (forced for losses on decoded boxes).
        test_cfg: test-time settings (None for a head that decodes proposals instead).
    """

    softmax_scores = False

    def __init__(self, *, num_classes: int, in_channels: int | tuple[int, ...], anchor_generator: AnchorGrid,
                 bbox_coder: DeltaXYWHCoder, assigner: MaxIoUAssigner, sampler: PseudoSampler | RandomSampler,
                 loss_cls: nn.Module | None, loss_bbox: nn.Module, allowed_border: int, reg_decoded_bbox: bool,
                 test_cfg: NMSSettings | None) -> None:
        super().__init__(num_classes, in_channels)
        self.test_cfg = test_cfg
        self.anchor_generator = anchor_generator
        self.bbox_coder = bbox_coder
        self.assigner = assigner
        self.sampler = sampler
        self.loss_cls = loss_cls
        self.loss_bbox = loss_bbox
        self.allowed_border = allowed_border
        self.reg_decoded_bbox = reg_decoded_bbox or loss_bbox.decoded_boxes
        self.sampling = not isinstance(sampler, PseudoSampler)
        self.decoder = AnchorDecoder(anchor_generator, bbox_coder, num_classes, test_cfg,
                                     softmax=self.softmax_scores) if test_cfg else None

    # ------------------------------------------------------------------------------- targets

    def _targets_single(self, anchors: torch.Tensor, valid: torch.Tensor, target: dict, meta: dict):
        """Per-image targets over all anchors ``[N, 4]``: labels, label weights, box targets, box weights."""
        n = anchors.shape[0]
        inside = anchor_inside_flags(anchors, valid, meta["img_shape"], self.allowed_border)
        labels = anchors.new_full((n,), self.num_classes, dtype=torch.long)
        label_weights = anchors.new_zeros(n)
        box_targets = anchors.new_zeros((n, 4))
        box_weights = anchors.new_zeros((n, 4))
        inside_idx = inside.nonzero(as_tuple=True)[0]
        gt_boxes = target["boxes"].to(anchors.device)
        ignore = target.get("ignore_boxes")
        assign = self.assigner.assign(anchors[inside_idx], gt_boxes, target["labels"].to(anchors.device),
                                      None if ignore is None else ignore.to(anchors.device))
        sample = self.sampler.sample(assign)
        pos, neg = inside_idx[sample.pos_inds], inside_idx[sample.neg_inds]
        if pos.numel():
            matched = gt_boxes[assign.gt_inds[sample.pos_inds] - 1]
            box_targets[pos] = matched if self.reg_decoded_bbox else self.bbox_coder.encode(anchors[pos], matched)
            box_weights[pos] = 1.0
            labels[pos] = assign.labels[sample.pos_inds]
            label_weights[pos] = 1.0
        label_weights[neg] = 1.0
        return labels, label_weights, box_targets, box_weights, pos.numel(), neg.numel()

    # ------------------------------------------------------------------------------- loss

    def targets(self, featmap_sizes: list[tuple[int, int]], targets: list[dict], metas: list[dict],
                device: torch.device) -> tuple[torch.Tensor, ...]:
        """Targets of every anchor of the batch, MMDetection's layout (level, y, x, anchor).

        Returns ``anchors [N, 4]``, ``labels [B, N]`` (C = background), ``label_weights [B, N]``,
        ``box_targets [B, N, 4]`` (deltas, or boxes with ``reg_decoded_bbox``), ``box_weights [B, N, 4]``,
        and the loss normaliser (MMDetection 3's ``avg_factor``: per image the positives, at least 1,
        plus with a sampler the negatives, at least 1, summed over the batch).
        """
        anchors = torch.cat(self.anchor_generator.grid_anchors(featmap_sizes, device))
        per_image = []
        for target, meta in zip(targets, metas):
            valid = torch.cat(self.anchor_generator.valid_flags(featmap_sizes, meta["pad_shape"], meta["img_shape"],
                                                                device))
            per_image.append(self._targets_single(anchors, valid, target, meta))
        labels, label_weights, box_targets, box_weights, num_pos, num_neg = zip(*per_image)
        avg_factor = sum(max(p, 1) + (max(n, 1) if self.sampling else 0) for p, n in zip(num_pos, num_neg))
        return (anchors, torch.stack(labels), torch.stack(label_weights), torch.stack(box_targets),
                torch.stack(box_weights), float(avg_factor))

    def loss(self, raw: tuple[list[torch.Tensor], list[torch.Tensor]], targets: list[dict],
             metas: list[dict]) -> dict[str, torch.Tensor]:
        """Focal (or other) classification and box regression losses over all levels and images."""
        cls_scores, bbox_preds = raw
        sizes = [tuple(c.shape[-2:]) for c in cls_scores]
        anchors, labels, label_weights, box_targets, box_weights, avg = self.targets(
            sizes, targets, metas, cls_scores[0].device)
        cls = torch.cat([levels_to_rows(c, self.num_classes) for c in cls_scores], 1)  # [B, N, C]
        reg = torch.cat([levels_to_rows(r, 4) for r in bbox_preds], 1)  # [B, N, 4]
        labels, label_weights = labels.reshape(-1), label_weights.reshape(-1)
        box_targets, box_weights = box_targets.reshape(-1, 4), box_weights.reshape(-1, 4)
        loss_cls = self.loss_cls(cls.reshape(-1, self.num_classes), labels, label_weights, avg_factor=avg)
        reg = reg.reshape(-1, 4)
        pos = box_weights[:, 0] > 0
        if self.reg_decoded_bbox:
            flat_anchors = anchors.repeat(len(targets), 1)
            pred = self.bbox_coder.decode(flat_anchors[pos], reg[pos])
            loss_bbox = self.loss_bbox(pred, box_targets[pos], avg_factor=avg) if pos.any() else reg.sum() * 0
        else:
            loss_bbox = self.loss_bbox(reg[pos], box_targets[pos], box_weights[pos],
                                       avg_factor=avg) if pos.any() else reg.sum() * 0
        return {"loss_cls": loss_cls, "loss_bbox": loss_bbox}

    # ------------------------------------------------------------------------------- decode

    def decode(self, raw: tuple[list[torch.Tensor], list[torch.Tensor]], image_shapes: torch.Tensor) -> DetOutputs:
        """Per level the ``nms_pre`` best anchors, decoded, clipped, class-wise NMS (``AnchorDecoder``)."""
        return self.decoder(*raw, image_shapes)
