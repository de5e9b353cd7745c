"""FCOS head (Tian et al., 2019): anchor-free per-point classification, ltrb distances, centerness."""
from __future__ import annotations

import math

import torch
from torch import nn

from dettool.structures.detections import DetOutputs
from dettool.trainer.models.dense_heads.base_dense_head import BaseDenseHead, conv_tower
from dettool.trainer.models.postprocess.batched import levels_to_rows
from dettool.trainer.models.postprocess.dense_decoders import PointDecoder
from dettool.trainer.models.postprocess.nms import NMSSettings
from dettool.trainer.models.task_modules.distance_point_coder import distance_to_box
from dettool.trainer.models.task_modules.point_generator import grid_points

INF = 1e8


class Scale(nn.Module):
    """A learnable scalar multiplier (one per pyramid level)."""

    def __init__(self, value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def centerness_target(ltrb: torch.Tensor) -> torch.Tensor:
    """``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`` for ``[N, 4]`` distances -> ``[N]``."""
    lr, tb = ltrb[:, [0, 2]], ltrb[:, [1, 3]]
    if not ltrb.numel():
        return ltrb.new_zeros(0)
    return torch.sqrt((lr.min(-1).values / lr.max(-1).values) * (tb.min(-1).values / tb.max(-1).values))


class FCOSHead(BaseDenseHead):
    """FCOS dense head.

    Args:
        num_classes: foreground classes C.
        in_channels: channels of each input level.
        feat_channels, stacked_convs, norm: conv towers (GN by default, as in FCOS).
        conv_bias: tower convs with a bias; None: only without a norm (MMDetection's 'auto').
        strides: stride of each level.
        regress_ranges: per level (lo, hi] range of the max regression distance it learns.
        center_sampling, center_sample_radius: positives only within ``radius * stride`` of gt centres.
        norm_on_bbox: predict distances in units of the stride (ReLU) instead of exp(pixels).
        centerness_on_reg: centerness branch reads the regression tower instead of the class tower.
        point_offset, stride_from_input: where the locations lie (:func:`grid_points`).
        test_score: the test-time score rule (``PointDecoder``).
        loss_cls, loss_bbox, loss_centerness: losses (focal, IoU on decoded boxes, BCE).
        test_cfg: test-time settings.

    Shapes: ``forward`` returns ``(cls_scores, bbox_preds, centernesses)``, per level
    ``[B, C, H, W]``, ``[B, 4, H, W]`` (ltrb distances, pixels or strides) and ``[B, 1, H, W]``.
    """

    def __init__(self, *, num_classes: int, in_channels: int, feat_channels: int, stacked_convs: int, norm: str,
                 conv_bias: bool | None, strides: tuple[int, ...], regress_ranges: tuple[tuple[float, float], ...],
                 center_sampling: bool,
                 center_sample_radius: float, norm_on_bbox: bool, centerness_on_reg: bool, loss_cls: nn.Module,
                 loss_bbox: nn.Module, loss_centerness: nn.Module, test_cfg: NMSSettings,
                 point_offset: float = 0.5, stride_from_input: bool = False, test_score: str = "cls",
                 prior_prob: float = 0.01) -> None:
        super().__init__(num_classes, in_channels)
        self.test_cfg = test_cfg
        if len(strides) != len(regress_ranges):
            raise ValueError(f"FCOS needs one regress range per stride ({len(strides)} strides, "
                             f"{len(regress_ranges)} ranges)")
        self.strides = tuple(strides)
        self.regress_ranges = tuple(tuple(r) for r in regress_ranges)
        self.center_sampling = center_sampling
        self.radius = center_sample_radius
        self.norm_on_bbox = norm_on_bbox
        self.centerness_on_reg = centerness_on_reg
        self.point_offset, self.stride_from_input = point_offset, stride_from_input
        self.loss_cls, self.loss_bbox, self.loss_centerness = loss_cls, loss_bbox, loss_centerness
        self.cls_convs = conv_tower(in_channels, feat_channels, stacked_convs, norm, conv_bias)
        self.reg_convs = conv_tower(in_channels, feat_channels, stacked_convs, norm, conv_bias)
        self.conv_cls = nn.Conv2d(feat_channels, num_classes, 3, padding=1)
        self.conv_reg = nn.Conv2d(feat_channels, 4, 3, padding=1)
        self.conv_centerness = nn.Conv2d(feat_channels, 1, 3, padding=1)
        for conv in (self.conv_cls, self.conv_reg, self.conv_centerness):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.constant_(self.conv_cls.bias, -math.log((1 - prior_prob) / prior_prob))
        self.scales = nn.ModuleList(Scale(1.0) for _ in self.strides)
        self.decoder = PointDecoder(self.strides, num_classes, norm_on_bbox, test_cfg, point_offset=point_offset,
                                    stride_from_input=stride_from_input, test_score=test_score)

    def forward(self, feats: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        cls_scores, bbox_preds, centernesses = [], [], []
        for feat, scale, stride in zip(feats, self.scales, self.strides):
            cls_feat = self.cls_convs(feat)
            reg_feat = self.reg_convs(feat)
            cls_scores.append(self.conv_cls(cls_feat))
            centernesses.append(self.conv_centerness(reg_feat if self.centerness_on_reg else cls_feat))
            pred = scale(self.conv_reg(reg_feat)).float()
            # norm_on_bbox: ReLU distances in strides (multiplied back at decode); else exp(pixels).
            bbox_preds.append(pred.clamp(min=0) if self.norm_on_bbox else pred.clamp(max=math.log(INF)).exp())
        return cls_scores, bbox_preds, centernesses

    # ------------------------------------------------------------------------------- targets

    def _targets_single(self, points: torch.Tensor, ranges: torch.Tensor, strides: torch.Tensor,
                        gt_boxes: torch.Tensor, gt_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels ``[N]`` (C = background) and ltrb targets ``[N, 4]`` for points ``[N, 2]``."""
        n, g = points.shape[0], gt_boxes.shape[0]
        if g == 0:
            return points.new_full((n,), self.num_classes, dtype=torch.long), points.new_zeros((n, 4))
        areas = ((gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1]))[None].expand(n, g)
        xs, ys = points[:, 0:1], points[:, 1:2]
        ltrb = torch.stack([xs - gt_boxes[None, :, 0], ys - gt_boxes[None, :, 1],
                            gt_boxes[None, :, 2] - xs, gt_boxes[None, :, 3] - ys], dim=-1)  # [N, G, 4]
        if self.center_sampling:
            cx = (gt_boxes[:, 0] + gt_boxes[:, 2]) / 2
            cy = (gt_boxes[:, 1] + gt_boxes[:, 3]) / 2
            r = strides[:, None] * self.radius
            x1 = torch.max(cx[None] - r, gt_boxes[None, :, 0])
            y1 = torch.max(cy[None] - r, gt_boxes[None, :, 1])
            x2 = torch.min(cx[None] + r, gt_boxes[None, :, 2])
            y2 = torch.min(cy[None] + r, gt_boxes[None, :, 3])
            inside = torch.stack([xs - x1, ys - y1, x2 - xs, y2 - ys], -1).min(-1).values > 0
        else:
            inside = ltrb.min(-1).values > 0
        max_dist = ltrb.max(-1).values
        in_range = (max_dist >= ranges[:, 0:1]) & (max_dist <= ranges[:, 1:2])
        areas = areas.masked_fill(~(inside & in_range), INF)
        min_area, min_idx = areas.min(dim=1)
        labels = gt_labels[min_idx].clone()
        labels[min_area == INF] = self.num_classes
        return labels, ltrb[torch.arange(n, device=points.device), min_idx]

    # ------------------------------------------------------------------------------- loss

    def loss(self, raw: tuple[list[torch.Tensor], ...], targets: list[dict], metas: list[dict]) -> dict[str,
                                                                                                        torch.Tensor]:
        """Focal loss over all points, IoU loss weighted by centerness and BCE centerness on positives."""
        cls_scores, bbox_preds, centernesses = raw
        device = cls_scores[0].device
        sizes = [tuple(c.shape[-2:]) for c in cls_scores]
        pts = grid_points(sizes, self.strides, device, self.point_offset, self.stride_from_input)
        points = torch.cat(pts)
        ranges = torch.cat([points.new_tensor(r)[None].expand(p.shape[0], 2) for r, p in zip(self.regress_ranges, pts)])
        strides = torch.cat([points.new_full((p.shape[0],), float(s)) for s, p in zip(self.strides, pts)])
        labels, ltrb = [], []
        for t in targets:
            lab, dist = self._targets_single(points, ranges, strides, t["boxes"].to(device), t["labels"].to(device))
            labels.append(lab)
            ltrb.append(dist / strides[:, None] if self.norm_on_bbox else dist)
        labels = torch.cat(labels)
        ltrb = torch.cat(ltrb)
        cls = torch.cat([levels_to_rows(c, self.num_classes) for c in cls_scores], 1).reshape(-1, self.num_classes)
        reg = torch.cat([levels_to_rows(r, 4) for r in bbox_preds], 1).reshape(-1, 4)
        ctr = torch.cat([levels_to_rows(c, 1) for c in centernesses], 1).reshape(-1)
        pos = (labels < self.num_classes).nonzero(as_tuple=True)[0]
        num_pos = max(float(pos.numel()), 1.0)
        loss_cls = self.loss_cls(cls, labels, avg_factor=num_pos)
        if pos.numel() == 0:
            return {"loss_cls": loss_cls, "loss_bbox": reg.sum() * 0, "loss_centerness": ctr.sum() * 0}
        pos_points = points.repeat(len(targets), 1)[pos]
        ctr_targets = centerness_target(ltrb[pos])
        loss_bbox = self.loss_bbox(distance_to_box(pos_points, reg[pos]), distance_to_box(pos_points, ltrb[pos]),
                                   ctr_targets, avg_factor=max(float(ctr_targets.sum()), 1e-6))
        loss_ctr = self.loss_centerness(ctr[pos], ctr_targets, avg_factor=num_pos)
        return {"loss_cls": loss_cls, "loss_bbox": loss_bbox, "loss_centerness": loss_ctr}

    # ------------------------------------------------------------------------------- decode

    def decode(self, raw: tuple[list[torch.Tensor], ...], image_shapes: torch.Tensor) -> DetOutputs:
        """Scores x centerness, ``nms_pre`` per level, class-wise NMS (``PointDecoder``)."""
        return self.decoder(*raw, image_shapes)
