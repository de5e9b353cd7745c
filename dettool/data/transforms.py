"""Image and box helpers the pipeline's transforms share: resize, flip, normalise, batch padding.

Images are RGB ``np.ndarray [H, W, 3]`` (uint8 as decoded, float32 after a photometric step);
boxes are ``Tensor[N, 4]`` xyxy pixels. The scale notation lives in ``dettool.data.scale``.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from dettool.data.scale import ScaleSpec, rescale_size  # re-exported: the exporters import them from here

__all__ = ["ScaleSpec", "hflip_boxes", "pad_batch", "rescale_size", "resize_image", "scale_boxes",
           "to_normalized_tensor"]


def resize_image(img: np.ndarray, new_w: int, new_h: int) -> np.ndarray:
    """Bilinear resize (PIL's, antialiased when shrinking) of a uint8 or float32 ``[H, W, 3]`` image.

    A float32 image is resized channel by channel in PIL's 32-bit float mode (no rounding).
    """
    if img.shape[:2] == (new_h, new_w):
        return img
    if img.dtype == np.uint8:
        return np.asarray(Image.fromarray(img).resize((new_w, new_h), Image.BILINEAR))
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(img[..., c], dtype=np.float32))
                           .resize((new_w, new_h), Image.BILINEAR)) for c in range(img.shape[2])]
    return np.stack(channels, axis=-1)


def scale_boxes(boxes: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    """``Tensor[N, 4]`` xyxy boxes times (sx, sy, sx, sy)."""
    if not boxes.numel():
        return boxes
    return boxes * torch.tensor([sx, sy, sx, sy], dtype=boxes.dtype)


def hflip_boxes(boxes: torch.Tensor, width: int) -> torch.Tensor:
    """Mirror ``Tensor[N, 4]`` xyxy boxes in an image of ``width`` pixels."""
    if not boxes.numel():
        return boxes
    flipped = boxes.clone()
    flipped[:, 0] = width - boxes[:, 2]
    flipped[:, 2] = width - boxes[:, 0]
    return flipped


def to_normalized_tensor(img: np.ndarray | Image.Image, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """RGB ``[H, W, 3]`` (uint8 or float32, or a PIL image) -> ``Tensor[3, H, W]`` float32,
    ``(pixel - mean) / std`` per channel (RGB order)."""
    arr = np.array(img, order="C")  # a copy: the decoded image is read-only, a flipped one strided
    t = torch.from_numpy(arr).permute(2, 0, 1).float()
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (t - m) / s


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
