"""(top, bottom, left, right) box coding of FSAF, as MMDetection's TBLRBBoxCoder."""
from __future__ import annotations

import torch

from dettool.structures.boxes import clip_boxes


class TBLRCoder:
    """Encode gt boxes as the distances from a prior box's centre to their four sides, and back.

    For a prior of centre (px, py) and size (pw, ph) and a gt box (x1, y1, x2, y2):
    ``t = (py - y1) / ph``, ``b = (y2 - py) / ph``, ``l = (px - x1) / pw``, ``r = (x2 - px) / pw``,
    each divided by ``normalizer``. Boxes are xyxy, widths are ``x2 - x1``; the order of the
    encoding is (t, b, l, r), MMDetection's.

    Args:
        normalizer: divides every encoded distance (FSAF: 4.0).
        clip_border: clip decoded boxes to the image when ``max_shape`` is given.
    """

    def __init__(self, normalizer: float = 4.0, clip_border: bool = True) -> None:
        self.normalizer = float(normalizer)
        self.clip_border = clip_border

    def encode(self, boxes: torch.Tensor, gt_boxes: torch.Tensor) -> torch.Tensor:
        """Distances ``Tensor[N, 4]`` (t, b, l, r) of ``gt_boxes`` ``[N, 4]`` from the centres of
        ``boxes`` ``[N, 4]``, in units of the prior's size over ``normalizer``."""
        boxes, gt_boxes = boxes.float(), gt_boxes.float()
        pw = boxes[:, 2] - boxes[:, 0]
        ph = boxes[:, 3] - boxes[:, 1]
        px = (boxes[:, 0] + boxes[:, 2]) / 2
        py = (boxes[:, 1] + boxes[:, 3]) / 2
        tblr = torch.stack([(py - gt_boxes[:, 1]) / ph, (gt_boxes[:, 3] - py) / ph,
                            (px - gt_boxes[:, 0]) / pw, (gt_boxes[:, 2] - px) / pw], dim=-1)
        return tblr / self.normalizer

    def decode(self, boxes: torch.Tensor, tblr: torch.Tensor,
               max_shape: tuple[int, int] | torch.Tensor | None = None) -> torch.Tensor:
        """Boxes ``Tensor[..., 4]`` from priors ``boxes`` ``[..., 4]`` and distances ``tblr`` ``[..., 4]``.

        ``max_shape`` ((h, w), or ``Tensor[B, 2]`` for batched boxes) clips the result to the
        image when ``clip_border`` (``structures.boxes.clip_boxes``).
        """
        tblr = tblr.float() * self.normalizer
        boxes = boxes.float()
        pw = boxes[..., 2] - boxes[..., 0]
        ph = boxes[..., 3] - boxes[..., 1]
        px = (boxes[..., 0] + boxes[..., 2]) / 2
        py = (boxes[..., 1] + boxes[..., 3]) / 2
        out = torch.stack([px - pw * tblr[..., 2], py - ph * tblr[..., 0],
                           px + pw * tblr[..., 3], py + ph * tblr[..., 1]], dim=-1)
        if max_shape is not None and self.clip_border:
            out = clip_boxes(out, max_shape)
        return out
