"""Delta (dx, dy, dw, dh) box coding, as in R-CNN / MMDetection's DeltaXYWHBBoxCoder."""
from __future__ import annotations

import math

import torch

from dettool.structures.boxes import clip_boxes


class DeltaXYWHCoder:
    """Encode gt boxes relative to reference boxes, and decode predicted deltas back.

    For reference (px, py, pw, ph) (centre, size) and gt (gx, gy, gw, gh):
    ``dx = (gx - px) / pw``, ``dy = (gy - py) / ph``, ``dw = log(gw / pw)``, ``dh = log(gh / ph)``,
    then normalised by ``(d - means) / stds``. Boxes are xyxy, widths are ``x2 - x1``.

    Args:
        target_means: means subtracted from deltas.
        target_stds: stds dividing deltas.
        wh_ratio_clip: |dw|, |dh| are clamped to ``|log(wh_ratio_clip)|`` when decoding.
        clip_border: clip decoded boxes to the image when ``max_shape`` is given.
    """

    def __init__(self, target_means: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0),
                 target_stds: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0),
                 wh_ratio_clip: float = 16 / 1000, clip_border: bool = True) -> None:
        self.means = torch.tensor(target_means, dtype=torch.float32)
        self.stds = torch.tensor(target_stds, dtype=torch.float32)
        self.max_ratio = abs(math.log(wh_ratio_clip))
        self.clip_border = clip_border

    def encode(self, boxes: torch.Tensor, gt_boxes: torch.Tensor) -> torch.Tensor:
        """Deltas ``Tensor[N, 4]`` taking ``boxes`` ``[N, 4]`` to ``gt_boxes`` ``[N, 4]``."""
        boxes, gt_boxes = boxes.float(), gt_boxes.float()
        pw = boxes[:, 2] - boxes[:, 0]
        ph = boxes[:, 3] - boxes[:, 1]
        px = boxes[:, 0] + 0.5 * pw
        py = boxes[:, 1] + 0.5 * ph
        gw = gt_boxes[:, 2] - gt_boxes[:, 0]
        gh = gt_boxes[:, 3] - gt_boxes[:, 1]
        gx = gt_boxes[:, 0] + 0.5 * gw
        gy = gt_boxes[:, 1] + 0.5 * gh
        deltas = torch.stack([(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)], dim=-1)
        return (deltas - self.means.to(deltas.device)) / self.stds.to(deltas.device)

    def decode(self, boxes: torch.Tensor, deltas: torch.Tensor,
               max_shape: tuple[int, int] | torch.Tensor | None = None) -> torch.Tensor:
        """Boxes ``Tensor[..., 4]`` from reference ``boxes`` ``[..., 4]`` and ``deltas`` ``[..., 4]``.

        ``max_shape`` ((h, w), or ``Tensor[B, 2]`` for batched boxes) clips the result to the
        image when ``clip_border`` (``structures.boxes.clip_boxes``).
        """
        deltas = deltas.float() * self.stds.to(deltas.device) + self.means.to(deltas.device)
        boxes = boxes.float()
        pw = boxes[..., 2] - boxes[..., 0]
        ph = boxes[..., 3] - boxes[..., 1]
        px = boxes[..., 0] + 0.5 * pw
        py = boxes[..., 1] + 0.5 * ph
        dw = deltas[..., 2].clamp(-self.max_ratio, self.max_ratio)
        dh = deltas[..., 3].clamp(-self.max_ratio, self.max_ratio)
        gw = pw * dw.exp()
        gh = ph * dh.exp()
        gx = px + pw * deltas[..., 0]
        gy = py + ph * deltas[..., 1]
        out = torch.stack([gx - 0.5 * gw, gy - 0.5 * gh, gx + 0.5 * gw, gy + 0.5 * gh], dim=-1)
        if max_shape is not None and self.clip_border:
            out = clip_boxes(out, max_shape)
        return out
