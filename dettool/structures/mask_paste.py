"""Pasting RoI-resolution mask probabilities into the original image: MMDetection's
``_do_paste_mask`` (:func:`paste_masks`) or torchvision's ``paste_masks_in_image``
(:func:`paste_masks_torchvision`, for converted torchvision models), chosen by ``test.mask_paste``.

Coordinates follow the half-pixel convention: pixel ``i`` covers ``[i, i + 1)`` and its centre
is ``i + 0.5``, so RoIAlign(aligned=True) and grid_sample(align_corners=False) are exact
inverses up to interpolation. Pasting at the original resolution (not at the resized one and
then resizing the binary mask, as MMDeploy's end-to-end models do) keeps mask AP.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# Bytes of paste buffers (sampling grid + result, 12 per pixel) per chunk on the GPU, as
# MMDetection's GPU_MEM_LIMIT bounds its chunks.
_GPU_PASTE_BYTES = 1024**3


def paste_masks(mask_probs: torch.Tensor, boxes: torch.Tensor, ori_shape: tuple[int, int],
                threshold: float = 0.5) -> torch.Tensor:
    """Paste ``M x M`` mask probabilities into the original image and binarise them.

    Each output pixel centre ``(x + 0.5, y + 0.5)`` is mapped into its box and the mask is
    sampled bilinearly there (zero outside the mask), so the mask's outer edge lies on the box.
    On the CPU each mask is pasted only over its box; on the GPU masks go in chunks over the
    whole image.

    Args:
        mask_probs: ``Tensor[K, M, M]`` probabilities in [0, 1].
        boxes: ``Tensor[K, 4]`` xyxy in ORIGINAL image pixels.
        ori_shape: ``(h, w)`` of the original image.
        threshold: pixels with probability ``>= threshold`` are foreground.

    Returns:
        ``bool Tensor[K, h, w]`` on ``mask_probs``' device.
    """
    h, w = int(ori_shape[0]), int(ori_shape[1])
    num = mask_probs.shape[0]
    out = torch.zeros((num, h, w), dtype=torch.bool, device=mask_probs.device)
    if num == 0 or h == 0 or w == 0:
        return out
    probs = mask_probs.float()[:, None]
    boxes = boxes.to(probs.device, torch.float32)
    if probs.device.type == "cpu":
        for i in range(num):
            x0, y0 = (boxes[i, :2].floor() - 1).clamp(min=0).int().tolist()
            x1 = int(min(float(boxes[i, 2].ceil()) + 1, w))
            y1 = int(min(float(boxes[i, 3].ceil()) + 1, h))
            if x1 > x0 and y1 > y0:
                pasted = _paste(probs[i:i + 1], boxes[i:i + 1], x0, y0, x1, y1)
                out[i, y0:y1, x0:x1] = pasted[0] >= threshold
        return out
    chunk = max(1, min(num, _GPU_PASTE_BYTES // (12 * h * w)))
    for start in range(0, num, chunk):
        sl = slice(start, start + chunk)
        out[sl] = _paste(probs[sl], boxes[sl], 0, 0, w, h) >= threshold
    return out


def paste_masks_torchvision(mask_probs: torch.Tensor, boxes: torch.Tensor, ori_shape: tuple[int, int],
                            threshold: float = 0.5) -> torch.Tensor:
    """torchvision's ``paste_masks_in_image``: each ``M x M`` mask padded by one zero pixel, its
    box enlarged by ``(M + 2) / M`` about the centre and truncated to whole pixels, the mask
    resized bilinearly to ``int(x1 - x0 + 1) x int(y1 - y0 + 1)`` and written at the box's
    top-left pixel, then binarised as :func:`paste_masks` (``>= threshold``). Shapes as there."""
    h, w = int(ori_shape[0]), int(ori_shape[1])
    num, m = mask_probs.shape[0], mask_probs.shape[-1]
    out = torch.zeros((num, h, w), dtype=torch.bool, device=mask_probs.device)
    if num == 0 or h == 0 or w == 0:
        return out
    probs = F.pad(mask_probs.float(), (1, 1, 1, 1))
    scale = (m + 2) / m
    boxes = boxes.to(probs.device, torch.float32)
    half_w, half_h = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale, (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
    cx, cy = (boxes[:, 2] + boxes[:, 0]) * 0.5, (boxes[:, 3] + boxes[:, 1]) * 0.5
    expanded = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=1).to(torch.int64)
    for i, (x0, y0, x1, y1) in enumerate(expanded.tolist()):
        bw, bh = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)
        resized = F.interpolate(probs[i][None, None], size=(bh, bw), mode="bilinear", align_corners=False)[0, 0]
        ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1 + 1, w), min(y1 + 1, h)
        if ix1 > ix0 and iy1 > iy0:
            out[i, iy0:iy1, ix0:ix1] = resized[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] >= threshold
    return out


PASTERS = {"mmdet": paste_masks, "torchvision": paste_masks_torchvision}


def _paste(probs: torch.Tensor, boxes: torch.Tensor, x0: int, y0: int, x1: int, y1: int) -> torch.Tensor:
    """Sample ``[N, 1, M, M]`` masks at the pixel centres of ``[x0, x1) x [y0, y1)`` -> ``[N, y1 - y0, x1 - x0]``."""
    bx0, by0, bx1, by1 = boxes.split(1, dim=1)  # each [N, 1]
    # A zero-sized box would divide by zero (NaN grid); a tiny size maps the pixels off the mask.
    bw = (bx1 - bx0).clamp(min=1e-6)
    bh = (by1 - by0).clamp(min=1e-6)
    xs = torch.arange(x0, x1, device=probs.device, dtype=torch.float32) + 0.5
    ys = torch.arange(y0, y1, device=probs.device, dtype=torch.float32) + 0.5
    gx = (xs[None] - bx0) / bw * 2 - 1  # [N, W']
    gy = (ys[None] - by0) / bh * 2 - 1  # [N, H']
    n = probs.shape[0]
    grid = torch.stack([gx[:, None, :].expand(n, gy.shape[1], gx.shape[1]),
                        gy[:, :, None].expand(n, gy.shape[1], gx.shape[1])], dim=3)
    return F.grid_sample(probs, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]
