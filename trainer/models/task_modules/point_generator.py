"""Point grids for anchor-free heads (FCOS)."""
from __future__ import annotations

import torch

from dettool.trainer.models.task_modules.anchor_generator import level_strides


def grid_points(featmap_sizes: list[tuple[int, int]], strides: tuple[int, ...],
                device: torch.device | str = "cpu", offset: float = 0.5,
                stride_from_input: bool = False) -> list[torch.Tensor]:
    """Location centres per level: ``Tensor[H_l * W_l, 2]`` (x, y) in input pixels, row-major.

    A cell (y, x) of a level with stride s maps to ``((x + offset) * s, (y + offset) * s)``;
    ``stride_from_input``: s per axis from the input size (torchvision, :func:`level_strides`).
    """
    out = []
    for (h, w), (stride_y, stride_x) in zip(featmap_sizes, level_strides(featmap_sizes, strides, stride_from_input)):
        xs = (torch.arange(w, device=device, dtype=torch.float32) + offset) * stride_x
        ys = (torch.arange(h, device=device, dtype=torch.float32) + offset) * stride_y
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        out.append(torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1))
    return out
