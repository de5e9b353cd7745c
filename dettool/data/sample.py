"""What moves through the data pipeline: one image and everything that must follow its pixels."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from PIL import Image

from dettool.data.transforms import image_shape

IGNORE_LABEL = 255  # a semantic label map's "unknown" (COCO-stuff's unlabeled; Expand's canvas; padding)


@dataclass
class Sample:
    """One image with its annotations, in the image's current pixels.

    Transforms modify a sample in place (and return it); every geometric transform moves all the
    box sets and the masks with the image, and a transform that drops boxes drops their labels
    and masks with them.

    Attributes:
        img: the RGB image: the decoded PIL image, or ``np.ndarray [H, W, 3]`` once a transform
            needed an array (uint8, or float32 after ``PhotoMetricDistortion``); ``Normalize``
            turns it into float32 ``Tensor[3, H, W]``.
        boxes: float32 ``Tensor[N, 4]`` xyxy, the training targets.
        labels: int64 ``Tensor[N]``, one per box.
        ignore_boxes: float32 ``Tensor[M, 4]`` xyxy crowd regions.
        masks: uint8 ``Tensor[N, H, W]`` in {0, 1}, one per box, or None (no mask model).
        semantic: uint8 ``Tensor[H, W]`` semantic labels (``IGNORE_LABEL`` where unknown), or
            None (no semantic branch).
        proposals: float32 ``Tensor[K, 5]`` (xyxy, score) Fast R-CNN proposals, or None.
        scale_factor: ``(sx, sy)``, the resize from original to current pixels. Only ``Resize``
            scales; ``Expand`` and ``MinIoURandomCrop`` translate the pixel grid and leave it as
            it is, so ``boxes / scale_factor`` gives original pixels only without them (always
            true at test time, whose pipeline is fixed: Resize, Normalize, Pad).
        flip: whether the image is mirrored horizontally.
    """

    img: Image.Image | np.ndarray | torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    ignore_boxes: torch.Tensor
    masks: torch.Tensor | None = None
    semantic: torch.Tensor | None = None
    proposals: torch.Tensor | None = None
    scale_factor: tuple[float, float] = (1.0, 1.0)
    flip: bool = False

    @property
    def img_shape(self) -> tuple[int, int]:
        """``(h, w)`` of the image as it is now."""
        if isinstance(self.img, torch.Tensor):
            return int(self.img.shape[1]), int(self.img.shape[2])
        return image_shape(self.img)

    def map_boxes(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Replace ``boxes``, ``ignore_boxes`` and the proposals' coordinates by ``fn`` of them
        (``fn`` maps ``Tensor[K, 4]`` xyxy to ``Tensor[K, 4]``; the proposals keep their scores)."""
        self.boxes = fn(self.boxes)
        self.ignore_boxes = fn(self.ignore_boxes)
        if self.proposals is not None:
            self.proposals = torch.cat([fn(self.proposals[:, :4]), self.proposals[:, 4:]], dim=1)
