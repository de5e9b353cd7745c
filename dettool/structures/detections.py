"""Detections: the fixed-size batched form every test-time path ends in, and per-image results.

``DetOutputs`` is what a detector's ``decode`` and its deploy graph return: padded, one row per
kept detection, the same for every image of the batch. ``Detections`` is one image's result in
original-image pixels, what ``predict``, ``dettool eval`` and the runtimes hand out;
:func:`outputs_to_detections` turns the first into the second (the one place doing so).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from dettool.structures.boxes import rescale_boxes
from dettool.structures.mask_paste import PASTERS


class DetOutputs(NamedTuple):
    """Fixed-size detections of a batch.

    Attributes:
        num_dets: ``Tensor[B]`` int32, valid rows per image.
        boxes: ``Tensor[B, K, 4]`` xyxy in input-image pixels; rows ``>= num_dets`` are 0.
        scores: ``Tensor[B, K]``.
        labels: ``Tensor[B, K]`` int32 contiguous labels, -1 in padding rows.
        masks: ``Tensor[B, K, M, M]`` RoI-resolution mask probabilities, or None.
    """

    num_dets: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor | None = None


@dataclass
class Detections:
    """Detections of one image, in original-image pixels.

    Attributes:
        boxes: ``Tensor[K, 4]`` xyxy.
        scores: ``Tensor[K]``.
        labels: ``Tensor[K]`` int64 contiguous labels in ``[0, C)``.
        masks: optional ``Tensor[K, H, W]`` bool instance masks at the original image size
            ``(H, W) = ori_shape``; ``None`` for box-only detectors.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.scores.numel())


def image_shapes_tensor(metas: list[dict], device: torch.device | str = "cpu") -> torch.Tensor:
    """``Tensor[B, 2]`` float32 (h, w) of each image's unpadded region: the decode's second input."""
    return torch.tensor([[float(m["img_shape"][0]), float(m["img_shape"][1])] for m in metas],
                        dtype=torch.float32, device=device)


def outputs_to_detections(out: DetOutputs, metas: list[dict], mask_thr: float = 0.5,
                          mask_paste: str = "mmdet") -> list[Detections]:
    """Cut each image's rows at ``num_dets``, rescale boxes to the original image and paste masks.

    Args:
        out: a batch's fixed-size detections.
        metas: per image ``scale_factor`` (sx, sy) and ``ori_shape`` (h, w).
        mask_thr: probability at which a pasted mask pixel is foreground.
        mask_paste: ``mmdet`` or ``torchvision``, the pasting rule (``structures.mask_paste``).
    """
    dets = []
    for i, meta in enumerate(metas):
        n = int(out.num_dets[i])
        boxes = rescale_boxes(out.boxes[i, :n].float(), meta["scale_factor"], meta["ori_shape"])
        masks = None
        if out.masks is not None:
            masks = PASTERS[mask_paste](out.masks[i, :n].float(), boxes, meta["ori_shape"], threshold=mask_thr)
        dets.append(Detections(boxes, out.scores[i, :n].float(), out.labels[i, :n].long(), masks=masks))
    return dets
