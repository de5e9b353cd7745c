"""Point grids for anchor-free heads (FCOS)."""
from __future__ import annotations

import torch


def grid_points(featmap_sizes: list[tuple[int, int]], strides: tuple[int, ...],
                device: torch.device | str = "cpu", offset: float = 0.5) -> list[torch.Tensor]:
    """Location centres per level: ``Tensor[H_l * W_l, 2]`` (x, y) in input pixels, row-major.

    A cell (y, x) of a level with stride s maps to ``((x + offset) * s, (y + offset) * s)``.
    """
    out = []
    for (h, w), stride in zip(featmap_sizes, strides):
        xs = (torch.arange(w, device=device, dtype=torch.float32) + offset) * stride
        ys = (torch.arange(h, device=device, dtype=torch.float32) + offset) * stride
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        out.append(torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1))
    return out
