"""Detection results."""
from __future__ import annotations

from dataclasses import dataclass

import torch


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
