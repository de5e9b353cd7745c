"""Box arithmetic on xyxy ``Tensor[..., 4]``: clipping (the one implementation) and rescaling."""
from __future__ import annotations

import torch


def clip_boxes(boxes: torch.Tensor, image_shape: tuple[int, int] | torch.Tensor) -> torch.Tensor:
    """Clip xyxy boxes to ``[0, w] x [0, h]``.

    Args:
        boxes: ``Tensor[..., 4]``; with a tensor ``image_shape`` ``[B, 2]``, ``Tensor[B, ..., 4]``.
        image_shape: ``(h, w)`` shared by all boxes, or ``Tensor[B, 2]`` rows ``(h, w)`` per image
            (the deploy graphs' ``image_shapes`` input).

    Returns: ``Tensor`` of ``boxes``' shape; ``min(max(x, 0), w)`` per coordinate.
    """
    if isinstance(image_shape, torch.Tensor):
        shape = (boxes.shape[0],) + (1,) * (boxes.dim() - 2)
        h = image_shape[:, 0].to(boxes.dtype).reshape(shape)
        w = image_shape[:, 1].to(boxes.dtype).reshape(shape)
    else:
        h = torch.tensor(float(image_shape[0]), dtype=boxes.dtype, device=boxes.device)
        w = torch.tensor(float(image_shape[1]), dtype=boxes.dtype, device=boxes.device)
    zero = torch.zeros((), dtype=boxes.dtype, device=boxes.device)
    x1 = torch.minimum(torch.maximum(boxes[..., 0], zero), w)
    y1 = torch.minimum(torch.maximum(boxes[..., 1], zero), h)
    x2 = torch.minimum(torch.maximum(boxes[..., 2], zero), w)
    y2 = torch.minimum(torch.maximum(boxes[..., 3], zero), h)
    return torch.stack([x1, y1, x2, y2], dim=-1)


def rescale_boxes(boxes: torch.Tensor, scale_factor: tuple[float, float], ori_shape: tuple[int, int]) -> torch.Tensor:
    """Boxes ``Tensor[K, 4]`` in resized pixels -> original pixels, clipped to the original image.

    Args:
        scale_factor: ``(sx, sy)`` the image was resized by.
        ori_shape: ``(h, w)`` of the original image.
    """
    sx, sy = scale_factor
    return clip_boxes(boxes / boxes.new_tensor([sx, sy, sx, sy]), ori_shape)
