"""Standard RoI head: one box stage and an optional mask branch (Fast / Faster / Mask R-CNN)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from dettool.trainer.models.dense_heads.base_dense_head import TestSettings, rescale_boxes, select_and_nms
from dettool.trainer.models.roi_heads.roi_sampling import assign_and_sample, rois_from_boxes
from dettool.trainer.models.structures import Detections
from dettool.trainer.models.task_modules.max_iou_assigner import MaxIoUAssigner
from dettool.trainer.models.task_modules.ohem_sampler import OHEMSampler


def split_rows(x: torch.Tensor, counts: list[int]) -> list[torch.Tensor]:
    return list(torch.split(x, counts)) if x.shape[0] else [x[:0] for _ in counts]


class MaskBranch(nn.Module):
    """RoI extractor + FCN mask head, shared by standard and cascade heads.

    ``loss`` takes the positives of each image; ``predict`` pastes masks at the original resolution.
    """

    def __init__(self, roi_extractor: nn.Module, mask_head: nn.Module, mask_thr: float = 0.5) -> None:
        super().__init__()
        self.roi_extractor = roi_extractor
        self.mask_head = mask_head
        self.mask_thr = mask_thr

    def loss(self, feats: list[torch.Tensor], pos_boxes: list[torch.Tensor], pos_gt_inds: list[torch.Tensor],
             pos_labels: list[torch.Tensor], targets: list[dict]) -> torch.Tensor:
        rois = rois_from_boxes(pos_boxes).to(feats[0].device)
        logits = self.mask_head(self.roi_extractor(feats, rois))
        mask_size = logits.shape[-1]
        mask_targets = torch.cat([self.mask_head.get_targets(b, t["masks"], g, mask_size=mask_size)
                                  for b, g, t in zip(pos_boxes, pos_gt_inds, targets)]) if rois.shape[0] else logits.new_zeros((0, mask_size, mask_size))
        return self.mask_head.loss(logits, mask_targets, torch.cat(pos_labels))["loss_mask"]

    def mask_probs(self, feats: list[torch.Tensor], boxes: list[torch.Tensor], labels: list[torch.Tensor]) -> list[torch.Tensor]:
        """28x28 probabilities ``[K_i, S, S]`` for detections ``boxes`` (resized pixels) of each image."""
        rois = rois_from_boxes(boxes).to(feats[0].device)
        if rois.shape[0] == 0:
            return [b.new_zeros((0, 28, 28)) for b in boxes]
        probs = self.mask_head.predict_masks(self.mask_head(self.roi_extractor(feats, rois)), torch.cat(labels))
        return split_rows(probs, [b.shape[0] for b in boxes])

    def paste(self, probs: torch.Tensor, boxes_ori: torch.Tensor, meta: dict) -> torch.Tensor:
        """Binary masks ``[K, H, W]`` at the original image size from probabilities and original-pixel boxes."""
        return self.mask_head.paste_masks(probs, boxes_ori, meta["ori_shape"], threshold=self.mask_thr)


class StandardRoIHead(nn.Module):
    """Box head on RoIAligned proposal features, trained on sampled RoIs; optional mask branch.

    Args:
        roi_extractor: multi-level RoIAlign for the box head.
        bbox_head: ``ConvFCBBoxHead``.
        assigner: IoU assigner of proposals to gt (0.5 / 0.5 in R-CNN).
        sampler: RandomSampler (512, 1/4 positives) or OHEMSampler.
        add_gt_as_proposals: add gt boxes to each image's proposals in training.
        mask_branch: optional ``MaskBranch`` (Mask R-CNN).
        test_cfg: score threshold, NMS / soft-NMS, detections per image.

    Shapes: ``feats`` list of ``[B, C, H_l, W_l]``; ``proposals`` per image ``[K, 4 or 5]`` in
    resized-image pixels.
    """

    def __init__(self, roi_extractor: nn.Module, bbox_head: nn.Module, assigner: MaxIoUAssigner, sampler,
                 add_gt_as_proposals: bool = True, mask_branch: MaskBranch | None = None,
                 test_cfg: TestSettings = TestSettings()) -> None:
        super().__init__()
        self.roi_extractor = roi_extractor
        self.bbox_head = bbox_head
        self.assigner = assigner
        self.sampler = sampler
        self.add_gt_as_proposals = add_gt_as_proposals
        self.mask_branch = mask_branch
        self.test_cfg = test_cfg

    @property
    def num_classes(self) -> int:
        return self.bbox_head.num_classes

    def _roi_cls_loss_fn(self, feats: list[torch.Tensor], index: int):
        """Per-RoI classification loss of one image, for OHEM ranking (no grad)."""
        single = [f[index:index + 1] for f in feats]

        def fn(boxes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            cls_score, _ = self.bbox_head(self.roi_extractor(single, rois_from_boxes([boxes])))
            return F.cross_entropy(cls_score, torch.where(labels >= 0, labels, self.num_classes), reduction="none")

        return fn

    def loss(self, feats: list[torch.Tensor], proposals: list[torch.Tensor], targets: list[dict],
             metas: list[dict]) -> dict[str, torch.Tensor]:
        """``loss_cls``, ``loss_bbox`` (and ``loss_mask``), plus the ``acc`` of the box classifier."""
        ohem = isinstance(self.sampler, OHEMSampler)
        sampled = [assign_and_sample(p, t, self.assigner, self.sampler, self.add_gt_as_proposals,
                                     self._roi_cls_loss_fn(feats, i) if ohem else None)
                   for i, (p, t) in enumerate(zip(proposals, targets))]
        rois = rois_from_boxes([s.boxes for s in sampled])
        cls_score, bbox_pred = self.bbox_head(self.roi_extractor(feats, rois))
        parts = [self.bbox_head.get_targets(s.boxes[: s.num_pos], s.pos_gt_boxes, s.pos_labels,
                                            s.boxes.shape[0] - s.num_pos) for s in sampled]
        labels, label_w, box_t, box_w = (torch.cat(x) for x in zip(*parts))
        losses = self.bbox_head.loss(cls_score, bbox_pred, rois, labels, label_w, box_t, box_w)
        if self.mask_branch is not None:
            losses["loss_mask"] = self.mask_branch.loss(
                feats, [s.boxes[: s.num_pos] for s in sampled], [s.pos_gt_inds for s in sampled],
                [s.pos_labels for s in sampled], targets)
        return losses

    @torch.no_grad()
    def predict(self, feats: list[torch.Tensor], proposals: list[torch.Tensor], metas: list[dict]) -> list[Detections]:
        """Detections per image in original pixels (with masks when the head has a mask branch)."""
        rois = rois_from_boxes([p[:, :4] for p in proposals]).to(feats[0].device)
        cls_score, bbox_pred = self.bbox_head(self.roi_extractor(feats, rois))
        counts = [p.shape[0] for p in proposals]
        dets = []
        for r, c, b, meta in zip(split_rows(rois, counts), split_rows(cls_score, counts), split_rows(bbox_pred, counts), metas):
            boxes, scores = self.bbox_head.predict_boxes(r, c, b, meta["img_shape"])
            dets.append(select_and_nms(boxes, scores, self.test_cfg))
        return finish_detections(dets, feats, metas, self.mask_branch)


def finish_detections(dets: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], feats: list[torch.Tensor],
                      metas: list[dict], mask_branch: MaskBranch | list[MaskBranch] | None) -> list[Detections]:
    """Rescale (boxes, scores, labels) in resized pixels to the original image; add pasted masks.

    With several mask branches (cascade) their probabilities are averaged.
    """
    out = []
    probs = None
    if mask_branch is not None:
        branches = mask_branch if isinstance(mask_branch, list) else [mask_branch]
        per_branch = [m.mask_probs(feats, [d[0] for d in dets], [d[2] for d in dets]) for m in branches]
        probs = [sum(p[i] for p in per_branch) / len(per_branch) for i in range(len(dets))]
        paster = branches[-1]
    for i, ((boxes, scores, labels), meta) in enumerate(zip(dets, metas)):
        boxes_ori = rescale_boxes(boxes, meta)
        masks = paster.paste(probs[i], boxes_ori, meta) if probs is not None else None
        out.append(Detections(boxes_ori, scores, labels, masks=masks))
    return out
