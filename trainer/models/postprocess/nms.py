"""Test-time settings and the multi-class NMS that ends every decode.

``multiclass_nms`` runs ``dettool::batched_nms`` (fixed-size outputs, exportable) or, with a
Soft-NMS setting, Soft-NMS image by image into the same fixed-size outputs (eager only; the
exporter refuses Soft-NMS settings).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

import dettool.ops  # noqa: F401  (registers torch.ops.dettool.*)
from dettool.structures.detections import DetOutputs
from dettool.trainer.models.task_modules.soft_nms import soft_nms

NMS_TYPES = ("nms", "soft_nms_linear", "soft_nms_gaussian")


@dataclass(frozen=True)
class NMSSettings:
    """Test-time decoding of detections (the config's ``test`` section).

    Attributes:
        score_thr: drop (box, class) pairs scoring at or below this.
        nms_pre: (box, class) pairs above ``score_thr`` kept per level before NMS, best first; <= 0
            keeps all.
        iou_thr: IoU threshold of the class-wise NMS (Soft-NMS: of the linear decay).
        max_per_img: detections kept per image (K of the fixed-size outputs).
        nms_type: ``'nms'``, ``'soft_nms_linear'`` or ``'soft_nms_gaussian'`` (Bodla et al.).
        soft_nms_sigma: spread of the gaussian Soft-NMS decay.
        soft_nms_min_score: Soft-NMS drops boxes whose decayed score falls below this.
        min_bbox_size: dense heads drop boxes whose width or height is not larger; < 0 disables.
        nms_pre_per_class: anchor heads keep the ``nms_pre`` best boxes of each class over all
            levels instead (torchvision's SSD).
    """

    score_thr: float
    nms_pre: int
    iou_thr: float
    max_per_img: int
    nms_type: str = "nms"
    soft_nms_sigma: float = 0.5
    soft_nms_min_score: float = 0.001
    min_bbox_size: float = -1.0
    nms_pre_per_class: bool = False

    def __post_init__(self) -> None:
        if self.nms_type not in NMS_TYPES:
            raise ValueError(f"NMSSettings.nms_type must be one of {NMS_TYPES}, got {self.nms_type!r}")


@dataclass(frozen=True)
class ProposalSettings:
    """How RPN proposals are decoded (MMDetection v2's ``rpn`` settings).

    Attributes:
        nms_pre: highest-scoring anchors kept per level before NMS; <= 0 keeps all.
        iou_thr: IoU threshold of the NMS (run independently per level, as MMDetection v2).
        max_per_img: proposals kept per image after NMS, highest scores first.
        min_bbox_size: boxes whose width or height is not larger than this are dropped.
    """

    nms_pre: int
    iou_thr: float
    max_per_img: int
    min_bbox_size: float


def multiclass_nms(boxes: torch.Tensor, scores: torch.Tensor, cfg: NMSSettings,
                   score_thr: float | None = None) -> DetOutputs:
    """Class-wise NMS (or Soft-NMS) of each image's candidates, best first, padded to ``max_per_img``.

    Args:
        boxes: ``Tensor[B, N, 4]`` (shared by the classes) or ``Tensor[B, N, C, 4]`` xyxy.
        scores: ``Tensor[B, N, C]`` >= 0.
        cfg: thresholds; ``cfg.score_thr`` unless ``score_thr`` is given.

    Returns: ``DetOutputs`` without masks; Soft-NMS scores are the decayed ones.
    """
    thr = cfg.score_thr if score_thr is None else score_thr
    if cfg.nms_type == "nms":
        return DetOutputs(*torch.ops.dettool.batched_nms(boxes, scores, float(thr), float(cfg.iou_thr),
                                                         int(cfg.max_per_img)))
    return _soft_nms_batch(boxes.float(), scores.float(), cfg, thr)


def _soft_nms_batch(boxes: torch.Tensor, scores: torch.Tensor, cfg: NMSSettings, thr: float) -> DetOutputs:
    batch, k = scores.shape[0], cfg.max_per_img
    out = DetOutputs(torch.zeros(batch, dtype=torch.int32, device=scores.device), scores.new_zeros((batch, k, 4)),
                     scores.new_zeros((batch, k)), torch.full((batch, k), -1, dtype=torch.int32, device=scores.device))
    method = "linear" if cfg.nms_type == "soft_nms_linear" else "gaussian"
    for i in range(batch):
        idx, labels = (scores[i] > thr).nonzero(as_tuple=True)
        cand = boxes[i, idx] if boxes.dim() == 3 else boxes[i, idx, labels]
        keep, kept_scores = soft_nms(cand, scores[i, idx, labels], labels, iou_thr=cfg.iou_thr,
                                     sigma=cfg.soft_nms_sigma, method=method, min_score=cfg.soft_nms_min_score,
                                     max_num=k)
        n = keep.numel()
        out.num_dets[i] = n
        out.boxes[i, :n] = cand[keep]
        out.scores[i, :n] = kept_scores
        out.labels[i, :n] = labels[keep].int()
    return out
