"""Training / test transforms: keep-ratio resize (single, value or range multi-scale), flip, normalize.

Scales follow the MMDetection paper's notation. ``1333x800`` resizes so that the long side is at
most 1333 and the short side at most 800, keeping the aspect ratio. ``1333x[640:800:32]`` (value
mode) draws the short-side limit from {640, 672, ..., 800}; ``1333x[640:800]`` (range mode)
draws it uniformly from the interval.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image

from dettool.errors import ConfigError

_SCALE_RE = re.compile(r"^\s*(\d+)\s*x\s*(?:(\d+)|\[\s*(\d+)\s*:\s*(\d+)\s*(?::\s*(\d+)\s*)?\])\s*$")


@dataclass(frozen=True)
class ScaleSpec:
    """Parsed scale: ``mode`` none -> ``shorts == (s,)``; value -> the set; range -> (lo, hi)."""

    long: int
    shorts: tuple[int, ...]
    mode: Literal["none", "value", "range"]

    @classmethod
    def parse(cls, text: str, key: str = "scale") -> "ScaleSpec":
        m = _SCALE_RE.match(str(text))
        if not m:
            raise ConfigError(f"{key}: {text!r} is not a scale like 1333x800, 1333x[640:800:32] or 1333x[640:800]")
        long = int(m.group(1))
        if long < 1 or any(g is not None and int(g) < 1 for g in m.group(2, 3, 4)):
            raise ConfigError(f"{key}: {text!r}: sizes must be positive")
        if m.group(2):
            return cls(long, (int(m.group(2)),), "none")
        lo, hi, step = int(m.group(3)), int(m.group(4)), m.group(5)
        if lo > hi:
            raise ConfigError(f"{key}: {text!r}: lower bound {lo} is above upper bound {hi}")
        if step is not None:
            if int(step) <= 0:
                raise ConfigError(f"{key}: {text!r}: step must be positive")
            return cls(long, tuple(range(lo, hi + 1, int(step))), "value")
        return cls(long, (lo, hi), "range")

    def sample(self, rng: np.random.Generator) -> tuple[int, int]:
        """Draw one (long, short) limit pair."""
        if self.mode == "none":
            return self.long, self.shorts[0]
        if self.mode == "value":
            return self.long, int(self.shorts[int(rng.integers(len(self.shorts)))])
        return self.long, int(rng.integers(self.shorts[0], self.shorts[1] + 1))


def rescale_size(w: int, h: int, long: int, short: int) -> tuple[int, int, float]:
    """Keep-ratio target size: the largest (new_w, new_h) with long side <= long, short <= short."""
    factor = min(long / max(h, w), short / min(h, w))
    return int(w * factor + 0.5), int(h * factor + 0.5), factor


def resize(img: Image.Image, boxes: torch.Tensor, long: int, short: int) -> tuple[Image.Image, torch.Tensor, tuple[float, float]]:
    """Keep-ratio resize of a PIL image and its boxes ``Tensor[N, 4]`` (xyxy pixels).

    Returns the image, the boxes and the actual (sx, sy) scale factors.
    """
    w, h = img.size
    new_w, new_h, _ = rescale_size(w, h, long, short)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.BILINEAR)
    sx, sy = new_w / w, new_h / h
    if boxes.numel():
        boxes = boxes * torch.tensor([sx, sy, sx, sy], dtype=boxes.dtype)
    return img, boxes, (sx, sy)


def hflip_boxes(boxes: torch.Tensor, width: int) -> torch.Tensor:
    """Mirror ``Tensor[N, 4]`` xyxy boxes in an image of ``width`` pixels."""
    if not boxes.numel():
        return boxes
    flipped = boxes.clone()
    flipped[:, 0] = width - boxes[:, 2]
    flipped[:, 2] = width - boxes[:, 0]
    return flipped


def to_normalized_tensor(img: Image.Image, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """PIL RGB -> ``Tensor[3, H, W]`` float32, ``(pixel - mean) / std`` per channel (RGB order)."""
    arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float()
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (arr - m) / s


def pad_batch(images: list[torch.Tensor], size_divisor: int) -> torch.Tensor:
    """Zero-pad ``[3, H_i, W_i]`` tensors bottom-right into ``Tensor[B, 3, H, W]``, H and W multiples of the divisor."""
    h = max(t.shape[1] for t in images)
    w = max(t.shape[2] for t in images)
    if size_divisor > 1:
        h = (h + size_divisor - 1) // size_divisor * size_divisor
        w = (w + size_divisor - 1) // size_divisor * size_divisor
    out = images[0].new_zeros((len(images), images[0].shape[0], h, w))
    for i, t in enumerate(images):
        out[i, :, : t.shape[1], : t.shape[2]] = t
    return out
