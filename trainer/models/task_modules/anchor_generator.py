"""Anchor generation for dense heads, with the ``allowed_border`` validity rule."""
from __future__ import annotations

import math

import torch


class AnchorGenerator:
    """Grid anchors per feature level, MMDetection's layout (level, y, x, anchor).

    For level ``l`` with stride ``s``, base anchors have sizes ``s * scale`` with
    ``scale = octave_base_scale * 2 ** (i / scales_per_octave)`` for every ratio ``r = h / w``
    (w = size / sqrt(r), h = size * sqrt(r)), centred at ``s * center_offset`` and shifted by
    ``(x * s, y * s)``.

    Args:
        strides: stride of each level, e.g. (8, 16, 32, 64, 128).
        ratios: height / width ratios.
        octave_base_scale: base scale in units of the stride.
        scales_per_octave: number of scales per level.
        center_offset: anchor centre offset in units of the stride (0 = top-left of the cell).
    """

    def __init__(self, strides: tuple[int, ...], ratios: tuple[float, ...], octave_base_scale: float,
                 scales_per_octave: int, center_offset: float = 0.0) -> None:
        self.strides = tuple(strides)
        self.ratios = torch.tensor(ratios, dtype=torch.float32)
        self.scales = torch.tensor([octave_base_scale * 2 ** (i / scales_per_octave)
                                    for i in range(scales_per_octave)], dtype=torch.float32)
        self.center_offset = center_offset
        self.base_anchors = [self._base_anchors(s) for s in self.strides]

    @property
    def num_base_anchors(self) -> int:
        """Anchors per location (ratios x scales)."""
        return len(self.ratios) * len(self.scales)

    def _base_anchors(self, stride: int) -> torch.Tensor:
        h_ratios = torch.sqrt(self.ratios)
        w_ratios = 1 / h_ratios
        ws = (stride * w_ratios[:, None] * self.scales[None, :]).reshape(-1)
        hs = (stride * h_ratios[:, None] * self.scales[None, :]).reshape(-1)
        c = self.center_offset * stride
        return torch.stack([c - 0.5 * ws, c - 0.5 * hs, c + 0.5 * ws, c + 0.5 * hs], dim=-1)

    def grid_anchors(self, featmap_sizes: list[tuple[int, int]],
                     device: torch.device | str = "cpu") -> list[torch.Tensor]:
        """Anchors for each level: ``Tensor[H_l * W_l * A, 4]`` xyxy, ordered (y, x, anchor)."""
        out = []
        for (h, w), stride, base in zip(featmap_sizes, self.strides, self.base_anchors):
            shift_x = torch.arange(w, device=device, dtype=torch.float32) * stride
            shift_y = torch.arange(h, device=device, dtype=torch.float32) * stride
            yy, xx = torch.meshgrid(shift_y, shift_x, indexing="ij")
            shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)
            out.append((shifts + base.to(device)[None]).reshape(-1, 4))
        return out

    def valid_flags(self, featmap_sizes: list[tuple[int, int]], pad_shape: tuple[int, int],
                    img_shape: tuple[int, int], device: torch.device | str = "cpu") -> list[torch.Tensor]:
        """Per level ``Tensor[H_l * W_l * A]`` bool: locations inside the unpadded image."""
        out = []
        for (h, w), stride in zip(featmap_sizes, self.strides):
            valid_h = min(math.ceil(img_shape[0] / stride), h)
            valid_w = min(math.ceil(img_shape[1] / stride), w)
            vy = torch.arange(h, device=device) < valid_h
            vx = torch.arange(w, device=device) < valid_w
            flags = (vy[:, None] & vx[None, :]).reshape(-1, 1).expand(-1, self.num_base_anchors)
            out.append(flags.reshape(-1))
        return out


def anchor_inside_flags(anchors: torch.Tensor, valid_flags: torch.Tensor, img_shape: tuple[int, int],
                        allowed_border: int = -1) -> torch.Tensor:
    """Anchors ``[N, 4]`` usable in training: valid and within ``allowed_border`` pixels of the image.

    ``allowed_border < 0`` means unlimited (only ``valid_flags`` count). Returns ``Tensor[N]`` bool.
    """
    if allowed_border < 0:
        return valid_flags
    h, w = img_shape[:2]
    b = allowed_border
    return (valid_flags & (anchors[:, 0] >= -b) & (anchors[:, 1] >= -b)
            & (anchors[:, 2] < w + b) & (anchors[:, 3] < h + b))
