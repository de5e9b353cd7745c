"""Guided Anchoring (Wang et al., 2019, "Region Proposal by Guided Anchoring"): what GA heads share.

A location branch predicts where object centres are, a shape branch predicts ``(dw, dh)`` of the
one anchor of each location (the square anchor scaled about its centre: the guided anchor), and
a feature adaption (a deformable conv whose offsets come from the shape prediction) lets the
classification and box convs see features matching the anchor's shape. The classification and
box losses are an anchor head's, on the guided anchors; the location branch is trained with a
focal loss on centre regions, the shape branch with a bounded IoU loss towards the gt each
location is assigned through its approximating anchors (the RetinaNet anchors of the location).

``GuidedAnchorHead`` holds the targets, the losses and the decoding; a subclass (GA-RetinaNet,
later GA-RPN) builds the layers and ``forward(feats) -> (cls_scores, bbox_preds, shape_preds,
loc_preds)``, per level ``[B, A * C, H, W]``, ``[B, A * 4, H, W]``, ``[B, A * 2, H, W]`` and
``[B, 1, H, W]`` (A = 1).
"""
from __future__ import annotations

import torch
from torch import nn

from dettool.ops.modulated_deform_conv import modulated_deform_conv
from dettool.structures.detections import DetOutputs
from dettool.trainer.models.dense_heads.anchor_head import AnchorHead
from dettool.trainer.models.postprocess.batched import levels_to_rows
from dettool.trainer.models.postprocess.guided_anchor_decoder import GuidedAnchorDecoder
from dettool.trainer.models.task_modules.anchor_generator import AnchorGenerator, anchor_inside_flags
from dettool.trainer.models.task_modules.approx_max_iou_assigner import ApproxMaxIoUAssigner
from dettool.trainer.models.task_modules.delta_xywh_coder import DeltaXYWHCoder
from dettool.trainer.models.task_modules.guided_anchors import guided_anchors, location_targets
from dettool.trainer.models.task_modules.samplers import PseudoSampler, RandomSampler


class FeatureAdaption(nn.Module):
    """A ``kernel_size`` deformable conv (DCN v1: ``dettool::modulated_deform_conv`` with a mask
    of ones, no bias) whose offsets a 1x1 conv computes from the (detached) shape prediction,
    then ReLU (MMDetection's ``FeatureAdaption``).

    ``weight`` is the deformable conv's ``[out_channels, in_channels, k, k]``.

    Shapes: ``x`` ``[B, in_channels, H, W]`` and ``shape`` ``[B, 2, H, W]`` -> ``[B, out_channels, H, W]``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, deform_groups: int = 4) -> None:
        super().__init__()
        self.padding, self.deform_groups = (kernel_size - 1) // 2, deform_groups
        self.num_taps = deform_groups * kernel_size * kernel_size
        self.conv_offset = nn.Conv2d(2, 2 * self.num_taps, 1, bias=False)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        nn.init.normal_(self.conv_offset.weight, std=0.1)
        nn.init.normal_(self.weight, std=0.01)

    def forward(self, x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        offset = self.conv_offset(shape.detach())
        mask = offset.new_ones((offset.shape[0], self.num_taps, *offset.shape[2:]))
        bias = self.weight.new_zeros(self.weight.shape[0])
        out = modulated_deform_conv(x, offset, mask, self.weight, bias, [1, 1], [self.padding, self.padding], [1, 1],
                                    1, self.deform_groups)
        return torch.relu(out)


class GuidedAnchorHead(AnchorHead):
    """Targets, losses and decoding of a guided-anchor head (MMDetection's ``GuidedAnchorHead``).

    Args:
        approx_generator: the approximating anchors (``K`` per location) the shape targets are
            assigned through.
        octave_base_scale: their base scale in strides (the square anchors' size), which also
            places each gt on a level for the location targets.
        anchor_coder: decodes the shape prediction on the squares (``wh_ratio_clip`` 1e-6).
        ga_assigner: assigns squares to gt through their approximating anchors.
        ga_sampler: chooses the squares the shape loss sees.
        loss_loc: focal loss of the location branch (one class: the object centre).
        loss_shape: bounded IoU loss of the guided anchors of the sampled positive squares.
        center_ratio, ignore_ratio: sides of the positive and ignore regions of the location
            targets, fractions of the gt's.
        loc_filter_thr: at test time, locations whose centre probability is below this give no
            detections.
        **kwargs: ``AnchorHead`` arguments; ``anchor_generator`` is the square generator (one
            anchor per location), ``assigner`` / ``sampler`` / ``loss_*`` apply to the guided anchors.
    """

    def __init__(self, *, approx_generator: AnchorGenerator, octave_base_scale: float, anchor_coder: DeltaXYWHCoder,
                 ga_assigner: ApproxMaxIoUAssigner, ga_sampler: PseudoSampler | RandomSampler, loss_loc: nn.Module,
                 loss_shape: nn.Module, center_ratio: float, ignore_ratio: float, loc_filter_thr: float,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if approx_generator.strides != self.anchor_generator.strides:
            raise ValueError(f"GuidedAnchorHead: approximating anchors on strides {approx_generator.strides}, "
                             f"squares on {self.anchor_generator.strides}")
        self.approx_generator, self.octave_base_scale = approx_generator, octave_base_scale
        self.anchor_coder = anchor_coder
        self.ga_assigner, self.ga_sampler = ga_assigner, ga_sampler
        self.loss_loc, self.loss_shape = loss_loc, loss_shape
        self.center_ratio, self.ignore_ratio, self.loc_filter_thr = center_ratio, ignore_ratio, loc_filter_thr
        self.num_anchors = self.anchor_generator.num_base_anchors
        self.decoder = GuidedAnchorDecoder(self.anchor_generator, anchor_coder, self.bbox_coder, self.num_classes,
                                           loc_filter_thr, self.test_cfg) if self.test_cfg else None

    # ------------------------------------------------------------------------------- targets

    def approx_inside(self, featmap_sizes: list[tuple[int, int]], meta: dict, approxs: torch.Tensor) -> torch.Tensor:
        """``Tensor[N]`` bool: the locations (squares) of which any approximating anchor
        (``approxs`` ``[N, K, 4]``) is usable in training (valid and within ``allowed_border``)."""
        valid = torch.cat(self.approx_generator.valid_flags(featmap_sizes, meta["pad_shape"], meta["img_shape"],
                                                            approxs.device))
        inside = anchor_inside_flags(approxs.reshape(-1, 4), valid, meta["img_shape"], self.allowed_border)
        return inside.reshape(approxs.shape[:2]).any(dim=1)

    def shape_targets(self, squares: torch.Tensor, approxs: torch.Tensor, inside: torch.Tensor, target: dict
                      ) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """One image's shape targets (MMDetection's ``_ga_shape_target_single``).

        Args:
            squares: ``Tensor[N, 4]``; approxs: ``Tensor[N, K, 4]``; inside: ``Tensor[N]`` bool.
            target: the image's ``boxes`` / ``labels`` (and ``ignore_boxes``).

        Returns: ``gt_boxes [N, 4]`` (the assigned gt of each sampled positive square),
        ``pos [N]`` bool (the sampled positives), and the numbers of sampled positives and negatives.
        """
        idx = inside.nonzero(as_tuple=True)[0]
        gt_boxes = target["boxes"].to(squares.device).float()
        ignore = target.get("ignore_boxes")
        assign = self.ga_assigner.assign_approxs(squares[idx], approxs[idx], gt_boxes,
                                                 target["labels"].to(squares.device),
                                                 None if ignore is None else ignore.to(squares.device))
        sample = self.ga_sampler.sample(assign)
        pos = idx[sample.pos_inds]
        boxes = squares.new_zeros(squares.shape)
        mask = torch.zeros(squares.shape[0], dtype=torch.bool, device=squares.device)
        if pos.numel():
            boxes[pos] = gt_boxes[assign.gt_inds[sample.pos_inds] - 1]
            mask[pos] = True
        return boxes, mask, pos.numel(), sample.neg_inds.numel()

    # ------------------------------------------------------------------------------- loss

    def loss(self, raw: tuple[list[torch.Tensor], ...], targets: list[dict],
             metas: list[dict]) -> dict[str, torch.Tensor]:
        """``loss_cls`` / ``loss_bbox`` on the guided anchors, ``loss_shape`` and ``loss_loc``."""
        cls_scores, bbox_preds, shape_preds, loc_preds = raw
        sizes = [tuple(c.shape[-2:]) for c in cls_scores]
        device = cls_scores[0].device
        squares = torch.cat(self.anchor_generator.grid_anchors(sizes, device))  # [N, 4]
        approxs = torch.cat([a.reshape(-1, self.approx_generator.num_base_anchors, 4)
                             for a in self.approx_generator.grid_anchors(sizes, device)])  # [N, K, 4]
        shapes = torch.cat([levels_to_rows(s, 2) for s in shape_preds], 1)  # [B, N, 2]
        anchors = guided_anchors(squares, shapes.detach(), self.anchor_coder)  # [B, N, 4]

        shape_gts, shape_pos, labels, label_weights, box_targets, box_weights = [], [], [], [], [], []
        ga_avg = avg = 0.0
        for i, (target, meta) in enumerate(zip(targets, metas)):
            inside = self.approx_inside(sizes, meta, approxs)
            gts, pos, num_pos, num_neg = self.shape_targets(squares, approxs, inside, target)
            shape_gts.append(gts)
            shape_pos.append(pos)
            ga_avg += max(num_pos, 1) + (max(num_neg, 1) if not isinstance(self.ga_sampler, PseudoSampler) else 0)
            lab, lw, bt, bw, num_pos, num_neg = self._targets_single(anchors[i], inside, target, meta)
            for out, value in zip((labels, label_weights, box_targets, box_weights), (lab, lw, bt, bw)):
                out.append(value)
            avg += max(num_pos, 1) + (max(num_neg, 1) if self.sampling else 0)

        cls = torch.cat([levels_to_rows(c, self.num_classes) for c in cls_scores], 1).reshape(-1, self.num_classes)
        reg = torch.cat([levels_to_rows(r, 4) for r in bbox_preds], 1).reshape(-1, 4)
        box_targets, box_weights = torch.cat(box_targets), torch.cat(box_weights)
        loss_cls = self.loss_cls(cls, torch.cat(labels), torch.cat(label_weights), avg_factor=avg)
        pos = box_weights[:, 0] > 0
        if not pos.any():
            loss_bbox = reg.sum() * 0
        elif self.reg_decoded_bbox:
            pred = self.bbox_coder.decode(anchors.reshape(-1, 4)[pos], reg[pos])
            loss_bbox = self.loss_bbox(pred, box_targets[pos], avg_factor=avg)
        else:
            loss_bbox = self.loss_bbox(reg[pos], box_targets[pos], box_weights[pos], avg_factor=avg)

        shape_pos = torch.stack(shape_pos)  # [B, N]
        if shape_pos.any():
            sel_squares = squares[None].expand(len(targets), -1, -1)[shape_pos]
            pred_anchors = guided_anchors(sel_squares, shapes[shape_pos][None], self.anchor_coder)[0]
            loss_shape = self.loss_shape(pred_anchors, torch.stack(shape_gts)[shape_pos], avg_factor=ga_avg)
        else:
            loss_shape = shapes.sum() * 0
        return {"loss_cls": loss_cls, "loss_bbox": loss_bbox, "loss_shape": loss_shape,
                "loss_loc": self.location_loss(loc_preds, targets)}

    def location_loss(self, loc_preds: list[torch.Tensor], targets: list[dict]) -> torch.Tensor:
        """Focal loss of the location logits ``[B, 1, H_l, W_l]`` per level on :func:`location_targets`.

        The object centre is the focal loss's one class (label 0; label 1 is the background), as
        in the paper and in MMDetection v1. MMDetection 3.3 passes the 0/1 targets as labels
        unchanged although its label convention became 0-based in v2.0, so it trains its
        location branch with the two swapped.
        """
        sizes = [tuple(p.shape[-2:]) for p in loc_preds]
        loc_t, loc_w, loc_avg = location_targets([t["boxes"] for t in targets], sizes, self.anchor_generator.strides,
                                                 self.octave_base_scale, self.center_ratio, self.ignore_ratio,
                                                 loc_preds[0].device)
        logits = torch.cat([p.reshape(-1) for p in loc_preds])[:, None]
        labels = (torch.cat([t.reshape(-1) for t in loc_t]) <= 0).long()  # 0 = centre, 1 = background
        return self.loss_loc(logits, labels, torch.cat([w.reshape(-1) for w in loc_w]), avg_factor=loc_avg)

    # ------------------------------------------------------------------------------- decode

    def decode(self, raw: tuple[list[torch.Tensor], ...], image_shapes: torch.Tensor) -> DetOutputs:
        """Guided anchors, masked scores, per-level top ``nms_pre``, NMS (``GuidedAnchorDecoder``)."""
        return self.decoder(*raw, image_shapes)
