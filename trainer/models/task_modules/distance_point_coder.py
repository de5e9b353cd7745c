"""Point + (left, top, right, bottom) distance box coding of anchor-free heads (FCOS)."""
from __future__ import annotations

import torch


def distance_to_box(points: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """Points ``[..., 2]`` (x, y) and distances ``[..., 4]`` (l, t, r, b) -> boxes ``[..., 4]`` xyxy."""
    return torch.stack([points[..., 0] - distances[..., 0], points[..., 1] - distances[..., 1],
                        points[..., 0] + distances[..., 2], points[..., 1] + distances[..., 3]], dim=-1)
