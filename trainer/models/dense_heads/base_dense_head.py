"""What every dense head shares: conv towers, the head contract and test-time post-processing.

Head contract (STYLE.md): ``forward(features) -> raw tensors`` (exportable, no Python data
structures), ``loss(raw, targets, metas) -> {'loss_*': Tensor}``, ``predict(raw, metas) ->
list[Detections]`` in original-image pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchvision.ops import batched_nms

from dettool.trainer.models.structures import Detections
from dettool.trainer.models.task_modules.soft_nms import soft_nms

NMS_TYPES = ("nms", "soft_nms_linear", "soft_nms_gaussian")


@dataclass(frozen=True)
class TestSettings:
    """Test-time decoding settings.

    Attributes:
        score_thr: drop (box, class) pairs scoring at or below this.
        nms_pre: candidates kept per level before NMS (by best class score); <= 0 keeps all.
        nms_iou_thr: IoU threshold of the class-wise NMS (Soft-NMS: of the linear decay).
        max_per_img: detections kept per image.
        nms_type: ``'nms'``, ``'soft_nms_linear'`` or ``'soft_nms_gaussian'`` (Bodla et al.).
        soft_nms_sigma: spread of the gaussian Soft-NMS decay.
        soft_nms_min_score: Soft-NMS drops boxes whose decayed score falls below this.
    """

    score_thr: float = 0.05
    nms_pre: int = 1000
    nms_iou_thr: float = 0.5
    max_per_img: int = 100
    nms_type: str = "nms"
    soft_nms_sigma: float = 0.5
    soft_nms_min_score: float = 0.001

    def __post_init__(self) -> None:
        if self.nms_type not in NMS_TYPES:
            raise ValueError(f"TestSettings.nms_type must be one of {NMS_TYPES}, got {self.nms_type!r}")


def conv_tower(in_channels: int, feat_channels: int, num_convs: int, norm: str) -> nn.Sequential:
    """``num_convs`` x (3x3 conv, optional GN/BN, ReLU)."""
    layers: list[nn.Module] = []
    for i in range(num_convs):
        cin = in_channels if i == 0 else feat_channels
        layers.append(nn.Conv2d(cin, feat_channels, 3, padding=1, bias=norm == "none"))
        if norm == "gn":
            layers.append(nn.GroupNorm(min(32, feat_channels), feat_channels))
        elif norm == "bn":
            layers.append(nn.BatchNorm2d(feat_channels))
        layers.append(nn.ReLU(inplace=True))
    for m in layers:
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return nn.Sequential(*layers)


def levels_to_rows(x: torch.Tensor, channels: int) -> torch.Tensor:
    """``[B, A * channels, H, W]`` -> ``[B, H * W * A, channels]`` (order y, x, anchor)."""
    b = x.shape[0]
    return x.permute(0, 2, 3, 1).reshape(b, -1, channels)


def rescale_boxes(boxes: torch.Tensor, meta: dict) -> torch.Tensor:
    """Boxes ``[K, 4]`` in resized pixels -> original pixels, clipped to the original image."""
    sx, sy = meta["scale_factor"]
    out = boxes / boxes.new_tensor([sx, sy, sx, sy])
    h, w = meta["ori_shape"]
    return torch.stack([out[:, 0].clamp(0, w), out[:, 1].clamp(0, h), out[:, 2].clamp(0, w), out[:, 3].clamp(0, h)], 1)


def select_and_nms(boxes: torch.Tensor, scores: torch.Tensor, cfg: TestSettings,
                   score_factors: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Multi-class NMS (or Soft-NMS, per ``cfg.nms_type``) over candidate boxes.

    Args:
        boxes: ``Tensor[N, 4]`` (one box per candidate, shared by its classes) or
            ``Tensor[N, C, 4]`` (one box per candidate and class, as RoI heads predict).
        scores: ``Tensor[N, C]`` class probabilities.
        cfg: thresholds.
        score_factors: optional ``Tensor[N]`` multiplied into the scores after thresholding
            (FCOS centerness).

    Returns: boxes ``[K, 4]``, scores ``[K]``, labels ``[K]`` sorted by score, K <= max_per_img.
    With Soft-NMS the scores are the decayed ones.
    """
    valid = scores > cfg.score_thr
    idx, labels = valid.nonzero(as_tuple=True)
    sel_scores = scores[idx, labels]
    if score_factors is not None:
        sel_scores = sel_scores * score_factors[idx]
    sel_boxes = boxes[idx] if boxes.dim() == 2 else boxes[idx, labels]
    if sel_boxes.numel() == 0:
        empty = boxes.new_zeros((0, 4))
        return empty, boxes.new_zeros((0,)), torch.zeros((0,), dtype=torch.long, device=boxes.device)
    if cfg.nms_type == "nms":
        keep = batched_nms(sel_boxes.float(), sel_scores.float(), labels, cfg.nms_iou_thr)[: cfg.max_per_img]
        return sel_boxes[keep], sel_scores[keep], labels[keep]
    method = "linear" if cfg.nms_type == "soft_nms_linear" else "gaussian"
    keep, new_scores = soft_nms(sel_boxes, sel_scores, labels, iou_thr=cfg.nms_iou_thr, sigma=cfg.soft_nms_sigma,
                                method=method, min_score=cfg.soft_nms_min_score, max_num=cfg.max_per_img)
    return sel_boxes[keep], new_scores.to(sel_scores.dtype), labels[keep]


class BaseDenseHead(nn.Module):
    """Common interface; subclasses implement ``forward``, ``loss`` and ``predict``."""

    def __init__(self, num_classes: int, in_channels: int, test_cfg: TestSettings) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.test_cfg = test_cfg

    def to_detections(self, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, meta: dict) -> Detections:
        return Detections(rescale_boxes(boxes, meta), scores, labels)
