"""Image and box helpers the pipeline's transforms share: resize, flip, normalise, batch padding.

An image is RGB: the decoded PIL image, or ``np.ndarray [H, W, 3]`` once a transform needed its
pixels as an array (uint8, or float32 after a photometric step); the helpers keep the kind they
are given (PIL as long as possible: converting costs a copy each way). Boxes are ``Tensor[N, 4]``
xyxy pixels. The scale notation lives in ``dettool.data.scale``.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from dettool.data.scale import ScaleSpec, rescale_size  # re-exported: the exporters import them from here

__all__ = ["ScaleSpec", "hflip_boxes", "hflip_image", "image_shape", "pad_batch", "rescale_size", "resize_image",
           "to_normalized_tensor"]


def image_shape(img: Image.Image | np.ndarray) -> tuple[int, int]:
    """``(h, w)`` of a PIL image or an ``[H, W, 3]`` array."""
    if isinstance(img, Image.Image):
        return img.height, img.width
    return int(img.shape[0]), int(img.shape[1])


def resize_image(img: Image.Image | np.ndarray, new_w: int, new_h: int) -> Image.Image | np.ndarray:
    """Bilinear resize (PIL's, antialiased when shrinking) of a PIL image or a uint8 / float32
    ``[H, W, 3]`` array, returned as the same kind. A float32 image is resized channel by channel
    in PIL's 32-bit float mode (no rounding)."""
    if image_shape(img) == (new_h, new_w):
        return img
    if isinstance(img, Image.Image):
        return img.resize((new_w, new_h), Image.BILINEAR)
    if img.dtype == np.uint8:
        return np.asarray(Image.fromarray(img).resize((new_w, new_h), Image.BILINEAR))
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(img[..., c], dtype=np.float32))
                           .resize((new_w, new_h), Image.BILINEAR)) for c in range(img.shape[2])]
    return np.stack(channels, axis=-1)


def hflip_image(img: Image.Image | np.ndarray) -> Image.Image | np.ndarray:
    """Mirror a PIL image or an ``[H, W, C]`` array left-right (a new image of the same kind).

    An array is flipped by torch: NumPy copies a reversed ``[H, W, 3]`` view about 30 times slower.
    """
    if isinstance(img, Image.Image):
        return img.transpose(Image.FLIP_LEFT_RIGHT)
    src = img if img.flags.writeable else img.copy()  # torch wants a writable array; a plain copy is cheap
    return torch.from_numpy(src).flip(1).numpy()


def hflip_boxes(boxes: torch.Tensor, width: int) -> torch.Tensor:
    """Mirror ``Tensor[N, 4]`` xyxy boxes in an image of ``width`` pixels."""
    if not boxes.numel():
        return boxes
    flipped = boxes.clone()
    flipped[:, 0] = width - boxes[:, 2]
    flipped[:, 2] = width - boxes[:, 0]
    return flipped


def to_normalized_tensor(img: Image.Image | np.ndarray, mean: tuple[float, ...],
                         std: tuple[float, ...], channel_order: str = "rgb") -> torch.Tensor:
    """RGB image (PIL, or uint8 / float32 ``[H, W, 3]``) -> ``Tensor[3, H, W]`` float32 in
    ``channel_order`` ('rgb', or 'bgr' for caffe-style models), ``(pixel - mean) / std`` per
    channel (``mean`` and ``std`` in that order)."""
    arr = np.array(img, order="C")  # a copy: a decoded image is read-only, a cropped one strided
    if channel_order == "bgr":
        arr = np.ascontiguousarray(arr[..., ::-1])
    elif channel_order != "rgb":
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
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
