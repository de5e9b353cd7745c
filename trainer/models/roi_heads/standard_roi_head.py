"""Standard RoI head: one box stage and an optional mask branch (Fast / Faster / Mask R-CNN)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from dettool.structures.detections import DetOutputs
from dettool.trainer.models.postprocess.nms import NMSSettings, multiclass_nms
from dettool.trainer.models.postprocess.roi_decoders import BatchedRoIs, BoxDecode
from dettool.trainer.models.roi_heads.roi_sampling import assign_and_sample, rois_from_boxes
from dettool.trainer.models.task_modules.max_iou_assigner import MaxIoUAssigner
from dettool.trainer.models.task_modules.ohem_sampler import OHEMSampler


class MaskBranch(nn.Module):
    """RoI extractor + FCN mask head, shared by standard and cascade heads.

    Args:
        roi_extractor: multi-level RoIAlign of the mask head (14x14 in Mask R-CNN).
        mask_head: ``FCNMaskHead``.
        mask_thr: probability at which a pasted mask pixel is foreground.
        mask_paste: the pasting rule, ``mmdet`` or ``torchvision`` (``structures.mask_paste``).
    """

    def __init__(self, roi_extractor: nn.Module, mask_head: nn.Module, mask_thr: float,
                 mask_paste: str = "mmdet") -> None:
        super().__init__()
        self.roi_extractor = roi_extractor
        self.mask_head = mask_head
        self.mask_thr = mask_thr
        self.mask_paste = mask_paste
        self.rois = BatchedRoIs()

    def train_outputs(self, feats: list[torch.Tensor], pos_boxes: list[torch.Tensor],
                      pos_gt_inds: list[torch.Tensor], targets: list[dict]
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The positives' RoI features ``[P, C, S, S]``, mask logits ``[P, C', M, M]`` and mask
        targets ``[P, M, M]`` (boxes ``[P_i, 4]`` per image in resized pixels)."""
        rois = rois_from_boxes(pos_boxes).to(feats[0].device)
        roi_feats = self.roi_extractor(feats, rois)
        logits = self.mask_head(roi_feats)
        return roi_feats, logits, self.targets(logits, pos_boxes, pos_gt_inds, targets)

    def targets(self, logits: torch.Tensor, pos_boxes: list[torch.Tensor], pos_gt_inds: list[torch.Tensor],
                targets: list[dict]) -> torch.Tensor:
        """Mask targets ``[P, M, M]`` of the positives whose logits ``[P, C', M, M]`` are given."""
        size = logits.shape[-1]
        if not logits.shape[0]:
            return logits.new_zeros((0, size, size))
        return torch.cat([self.mask_head.get_targets(b, t["masks"], g, mask_size=size)
                          for b, g, t in zip(pos_boxes, pos_gt_inds, targets)])

    def loss(self, feats: list[torch.Tensor], pos_boxes: list[torch.Tensor], pos_gt_inds: list[torch.Tensor],
             pos_labels: list[torch.Tensor], targets: list[dict]) -> torch.Tensor:
        """``loss_mask`` of the positives of each image (boxes ``[P_i, 4]`` in resized pixels)."""
        _, logits, mask_targets = self.train_outputs(feats, pos_boxes, pos_gt_inds, targets)
        return self.mask_head.loss(logits, mask_targets, torch.cat(pos_labels))["loss_mask"]

    def decode_logits(self, feats: list[torch.Tensor], boxes: torch.Tensor,
                      labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """RoI features ``[B * K, C, S, S]`` and the mask logits of each detection's label
        ``[B * K, M, M]`` for detections ``boxes`` ``[B, K, 4]`` (input pixels) and ``labels``
        ``[B, K]`` (padding rows, label -1, read class 0 and are cut by ``num_dets``)."""
        roi_feats = self.roi_extractor(feats, self.rois(boxes))
        flat_labels = labels.reshape(-1).clamp(min=0).long()
        return roi_feats, self.mask_head.label_logits(self.mask_head(roi_feats), flat_labels)

    def decode(self, feats: list[torch.Tensor], boxes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mask probabilities ``[B, K, M, M]`` of the detections (see :meth:`decode_logits`)."""
        logits = self.decode_logits(feats, boxes, labels)[1].sigmoid()
        return logits.reshape(boxes.shape[0], boxes.shape[1], logits.shape[-2], logits.shape[-1])


def mean_mask_probs(branches: list[MaskBranch], feats: list[torch.Tensor], dets: DetOutputs) -> torch.Tensor:
    """Mask probabilities of the detections averaged over the branches (one, or one per cascade stage)."""
    probs = [br.decode(feats, dets.boxes, dets.labels) for br in branches]
    return probs[0] if len(probs) == 1 else sum(probs) / len(probs)


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

    Shapes: ``feats`` list of ``[B, C, H_l, W_l]``; training ``proposals`` per image
    ``[K, 4 or 5]`` in resized-image pixels; ``decode`` takes them padded, ``[B, K, 4]``.
    """

    def __init__(self, *, roi_extractor: nn.Module, bbox_head: nn.Module, assigner: MaxIoUAssigner, sampler,
                 add_gt_as_proposals: bool, mask_branch: MaskBranch | None, test_cfg: NMSSettings) -> None:
        super().__init__()
        self.roi_extractor = roi_extractor
        self.bbox_head = bbox_head
        self.assigner = assigner
        self.sampler = sampler
        self.add_gt_as_proposals = add_gt_as_proposals
        self.mask_branch = mask_branch
        self.test_cfg = test_cfg
        self.rois = BatchedRoIs()
        self.box_decode = BoxDecode(bbox_head.bbox_coder, bbox_head.num_classes, bbox_head.reg_class_agnostic,
                                    test_cfg.min_bbox_size)

    @property
    def num_classes(self) -> int:
        return self.bbox_head.num_classes

    @property
    def mask_branches(self) -> list[MaskBranch]:
        return [self.mask_branch] if self.mask_branch is not None else []

    def bbox_forward(self, feats: list[torch.Tensor], rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cls_score [R, C + 1], bbox_pred)`` of RoIs ``[R, 5]`` (training and test time)."""
        return self.bbox_head(self.roi_extractor(feats, rois))

    def _roi_cls_loss_fn(self, feats: list[torch.Tensor], index: int):
        """Per-RoI classification loss of one image, for OHEM ranking (no grad)."""
        single = [f[index:index + 1] for f in feats]

        def fn(boxes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            cls_score, _ = self.bbox_forward(single, rois_from_boxes([boxes]))
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
        cls_score, bbox_pred = self.bbox_forward(feats, rois)
        parts = [self.bbox_head.get_targets(s.boxes[: s.num_pos], s.pos_gt_boxes, s.pos_labels,
                                            s.boxes.shape[0] - s.num_pos) for s in sampled]
        labels, label_w, box_t, box_w = (torch.cat(x) for x in zip(*parts))
        losses = self.bbox_head.loss(cls_score, bbox_pred, rois, labels, label_w, box_t, box_w)
        losses.update(self.branch_losses(feats, sampled, targets, metas))
        return losses

    def branch_losses(self, feats: list[torch.Tensor], sampled: list, targets: list[dict],
                      metas: list[dict]) -> dict[str, torch.Tensor]:
        """The losses of the branches beside the box head on the sampled RoIs (the mask branch's)."""
        return self.mask_losses(feats, sampled, targets) if self.mask_branch is not None else {}

    def mask_losses(self, feats: list[torch.Tensor], sampled: list, targets: list[dict]) -> dict[str, torch.Tensor]:
        """``loss_mask`` of the sampled positives (``SampledRoIs`` per image)."""
        return {"loss_mask": self.mask_branch.loss(
            feats, [s.boxes[: s.num_pos] for s in sampled], [s.pos_gt_inds for s in sampled],
            [s.pos_labels for s in sampled], targets)}

    def decode(self, feats: list[torch.Tensor], num_proposals: torch.Tensor, proposals: torch.Tensor,
               image_shapes: torch.Tensor) -> DetOutputs:
        """Fixed-size detections (and mask probabilities) from padded proposals.

        Args:
            feats: FPN levels ``[B, C, H_l, W_l]``.
            num_proposals: ``Tensor[B]`` valid rows of ``proposals`` per image.
            proposals: ``Tensor[B, K, 4]`` xyxy in input pixels.
            image_shapes: ``Tensor[B, 2]`` (h, w) of each unpadded image.
        """
        dets = self.box_detections(feats, num_proposals, proposals, image_shapes)
        if self.mask_branch is None:
            return dets
        return dets._replace(masks=mean_mask_probs(self.mask_branches, feats, dets))

    def box_detections(self, feats: list[torch.Tensor], num_proposals: torch.Tensor, proposals: torch.Tensor,
                       image_shapes: torch.Tensor) -> DetOutputs:
        """The box head's decoded boxes after NMS (:meth:`decode` without masks)."""
        rois = self.rois(proposals)
        cls_score, bbox_pred = self.bbox_forward(feats, rois)
        boxes, scores = self.box_decode(rois, cls_score, bbox_pred, num_proposals, image_shapes)
        return multiclass_nms(boxes, scores, self.test_cfg)
