"""Grid R-CNN's grid head (Lu et al., "Grid R-CNN", CVPR 2019, with Grid R-CNN Plus's half-sized
heatmaps; MMDetection's ``GridHead``): a box is located by the heatmaps of a 3x3 grid of points
in the region twice the RoI's size, fused between neighbouring points, and each side of the box
is the score-weighted mean of its three points.

Point ``i`` of a ``g x g`` grid sits in column ``i // g`` and row ``i % g`` (MMDetection's order).
Each point's heatmap covers only the half of the whole ``4S x 4S`` map where it can lie: its
``sub_regions`` (MMDetection's, from Grid R-CNN Plus).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from dettool.structures.boxes import clip_boxes
from dettool.trainer.models.postprocess.batched import Float32Block


class ConvGNReLU(nn.Module):
    """A 3x3 conv with bias, GroupNorm and ReLU (MMDetection's ``ConvModule`` with GN: ``conv``, ``gn``)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, num_groups: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)
        self.gn = nn.GroupNorm(num_groups, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.gn(self.conv(x)))


def _transition(channels: int) -> nn.Sequential:
    """A feature transition between neighbouring points: 5x5 depth-wise conv, then 1x1 conv."""
    return nn.Sequential(nn.Conv2d(channels, channels, 5, padding=2, groups=channels),
                         nn.Conv2d(channels, channels, 1))


def grid_neighbours(grid_size: int) -> list[tuple[int, ...]]:
    """The 4-neighbours of each point, in MMDetection's order: left, up, down, right."""
    out = []
    for col in range(grid_size):
        for row in range(grid_size):
            n = []
            if col > 0:
                n.append((col - 1) * grid_size + row)
            if row > 0:
                n.append(col * grid_size + row - 1)
            if row < grid_size - 1:
                n.append(col * grid_size + row + 1)
            if col < grid_size - 1:
                n.append((col + 1) * grid_size + row)
            out.append(tuple(n))
    return out


def sub_region_origins(grid_size: int, whole_map_size: int) -> list[tuple[int, int]]:
    """``(x, y)`` of each point's half-sized heatmap in the whole map (MMDetection's
    ``calc_sub_regions``: the first column / row at 0, the last at the half size, the others from
    a quarter before their place, truncated)."""
    half = whole_map_size // 4 * 2

    def origin(idx: int) -> int:
        if idx == 0:
            return 0
        if idx == grid_size - 1:
            return half
        return max(int((idx / (grid_size - 1) - 0.25) * whole_map_size), 0)

    return [(origin(i // grid_size), origin(i % grid_size)) for i in range(grid_size * grid_size)]


class GridHead(nn.Module):
    """``num_convs`` 3x3 conv + GN + ReLU (the first with stride 2), first- and second-order feature
    fusion between neighbouring points, and two grouped 4x4 stride-2 deconvolutions (one group per
    point) to ``2S x 2S`` heatmap logits.

    Args:
        in_channels: channels of the RoI features.
        roi_feat_size: their side S (14); the whole map is ``4S``, each heatmap ``2S``.
        grid_points: points of the square grid (9).
        num_convs: 8 in Grid R-CNN.
        point_feat_channels: channels per point (64); the convs have ``grid_points`` times as many.
        num_groups: GroupNorm groups of the convs (36).
        loss_weight: factor on each heatmap's binary cross-entropy (15).

    Shapes: ``forward(roi_feats [R, in_channels, S, S])`` -> fused heatmap logits
    ``[R, grid_points, 2S, 2S]``, and in training also those of the unfused features.
    """

    def __init__(self, *, in_channels: int, roi_feat_size: int, grid_points: int, num_convs: int,
                 point_feat_channels: int, num_groups: int, loss_weight: float) -> None:
        super().__init__()
        self.grid_size = math.isqrt(grid_points)
        if self.grid_size ** 2 != grid_points or grid_points < 4:
            raise ValueError(f"grid_points must be a square of at least 4, got {grid_points}")
        channels = point_feat_channels * grid_points
        if channels % num_groups:
            raise ValueError(f"num_groups ({num_groups}) must divide point_feat_channels x grid_points ({channels})")
        self.grid_points, self.point_feat_channels, self.loss_weight = grid_points, point_feat_channels, loss_weight
        self.whole_map_size = roi_feat_size * 4
        self.origins = sub_region_origins(self.grid_size, self.whole_map_size)
        self.neighbours = grid_neighbours(self.grid_size)
        self.convs = nn.Sequential(*(ConvGNReLU(in_channels if i == 0 else channels, channels, 2 if i == 0 else 1,
                                                num_groups) for i in range(num_convs)))
        self.forder_trans = nn.ModuleList(nn.ModuleList(_transition(point_feat_channels) for _ in n)
                                          for n in self.neighbours)
        self.sorder_trans = nn.ModuleList(nn.ModuleList(_transition(point_feat_channels) for _ in n)
                                          for n in self.neighbours)
        self.deconv1 = nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1, groups=grid_points)
        self.norm1 = nn.GroupNorm(grid_points, channels)
        self.deconv2 = nn.ConvTranspose2d(channels, grid_points, 4, stride=2, padding=1, groups=grid_points)
        for m in self.modules():  # MMDetection: Kaiming (fan_out, normal) convs, N(0, 0.001) deconvs
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, std=0.001)
                nn.init.zeros_(m.bias)
        nn.init.constant_(self.deconv2.bias, -math.log(0.99 / 0.01))  # heatmaps start at p = 0.01

    def _point(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """Point ``i``'s channels of the conv features."""
        c = self.point_feat_channels
        return x[:, i * c:(i + 1) * c]

    def heatmap(self, x: torch.Tensor) -> torch.Tensor:
        return self.deconv2(F.relu(self.norm1(self.deconv1(x))))

    def forward(self, roi_feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(fused, unfused)`` heatmap logits; ``unfused`` only in training (else None)."""
        x = self.convs(roi_feats)
        points = [self._point(x, i) for i in range(self.grid_points)]
        first = self._fuse(points, points, self.forder_trans)
        second = self._fuse(points, first, self.sorder_trans)
        fused = self.heatmap(torch.cat(second, dim=1))
        return fused, (self.heatmap(x) if self.training else None)

    def _fuse(self, own: list[torch.Tensor], sources: list[torch.Tensor], trans: nn.ModuleList) -> list[torch.Tensor]:
        """Each point's features plus its neighbours' ``sources`` through its transitions (added in
        MMDetection's order)."""
        out = []
        for i, neighbours in enumerate(self.neighbours):
            acc = own[i]
            for t, j in zip(trans[i], neighbours):
                acc = acc + t(sources[j])
            out.append(acc)
        return out

    # ------------------------------------------------------------------------------- training

    def get_targets(self, pos_boxes: torch.Tensor, pos_gt_boxes: torch.Tensor, radius: int) -> torch.Tensor:
        """Heatmap targets of positive RoIs (MMDetection's ``GridHead.get_targets``, vectorised).

        Each gt grid point falls at ``trunc((p - x1') / w' * 4S)`` in the whole map of the RoI
        expanded twice around its centre (``x1'``, ``w'``); the pixels within ``radius`` of it
        are 1. RoIs whose expanded side is at most ``grid_size`` pixels have no positive pixel.

        Args:
            pos_boxes: ``Tensor[P, 4]`` xyxy positive RoIs (jittered in training).
            pos_gt_boxes: ``Tensor[P, 4]`` their gt boxes.
            radius: of the positive disc, in whole-map pixels (1).

        Returns: ``Tensor[P, grid_points, 2S, 2S]`` float32 in {0, 1}.
        """
        boxes, gt = pos_boxes.detach().float(), pos_gt_boxes.float()
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        x1, y1 = boxes[:, 0] - w / 2, boxes[:, 1] - h / 2
        ew, eh = (boxes[:, 2] + w / 2) - x1, (boxes[:, 3] + h / 2) - y1
        g, size = self.grid_size, self.whole_map_size
        idx = torch.arange(self.grid_points, device=boxes.device)
        fx = 1 - (idx // g).float() / (g - 1)  # a point's share of the gt's left side
        fy = 1 - (idx % g).float() / (g - 1)
        px = fx * gt[:, 0:1] + (1 - fx) * gt[:, 2:3]
        py = fy * gt[:, 1:2] + (1 - fy) * gt[:, 3:4]
        cx = ((px - x1[:, None]) / ew[:, None] * size).trunc()
        cy = ((py - y1[:, None]) / eh[:, None] * size).trunc()
        half = size // 4 * 2
        origins = torch.tensor(self.origins, dtype=torch.float32, device=boxes.device)
        xs = origins[:, 0, None] + torch.arange(half, device=boxes.device)  # [points, half]
        ys = origins[:, 1, None] + torch.arange(half, device=boxes.device)
        dx2 = (xs[None] - cx[..., None]) ** 2  # [P, points, half]
        dy2 = (ys[None] - cy[..., None]) ** 2
        targets = (dy2[..., :, None] + dx2[..., None, :] <= radius ** 2).float()
        big = (ew > g) & (eh > g)
        return targets * big[:, None, None, None]

    def loss(self, fused: torch.Tensor, unfused: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``loss_grid``: the mean binary cross-entropy of the fused and of the unfused heatmaps,
        summed, times ``loss_weight``; 0 in the graph without RoIs."""
        if targets.shape[0] == 0:
            return (fused.sum() + unfused.sum()) * 0
        t = targets.to(fused.dtype)
        return self.loss_weight * (F.binary_cross_entropy_with_logits(fused, t)
                                   + F.binary_cross_entropy_with_logits(unfused, t))


class GridDecode(Float32Block):
    """Boxes from heatmap logits, in fixed shapes (MMDetection's ``GridHead._predict_by_feat_single``).

    Each heatmap's best pixel (the first of equal probabilities) is a point at the centre of that
    pixel in the whole map over the RoI expanded twice; each side of the box is the mean of its
    ``grid_size`` points weighted by their probabilities. Boxes are clipped to the image (the
    clamp MMDetection writes on a copy, so its boxes are not clipped).

    Args:
        grid_size: g (3).
        origins: ``(x, y)`` of each point's heatmap in the whole map (``sub_region_origins``).

    Shapes: ``forward(logits [B * K, g * g, M, M], boxes [B, K, 4], image_shapes [B, 2])`` ->
    ``[B, K, 4]``.
    """

    def __init__(self, grid_size: int, origins: list[tuple[int, int]]) -> None:
        super().__init__()
        self.grid_size = grid_size
        self.register_buffer("origins", torch.tensor(origins, dtype=torch.float32), persistent=False)

    def forward(self, logits: torch.Tensor, boxes: torch.Tensor, image_shapes: torch.Tensor) -> torch.Tensor:
        b, k = boxes.shape[:2]
        m = logits.shape[-1]
        score, pos = logits.float().sigmoid().flatten(2).max(dim=2)  # [R, points]
        xs = (pos % m).float() + self.origins[:, 0]
        ys = torch.div(pos, m, rounding_mode="floor").float() + self.origins[:, 1]
        flat = boxes.float().reshape(-1, 4)
        w, h = (flat[:, 2] - flat[:, 0])[:, None], (flat[:, 3] - flat[:, 1])[:, None]
        abs_x = (xs + 0.5) / m * w + (flat[:, 0, None] - w / 2)
        abs_y = (ys + 0.5) / m * h + (flat[:, 1, None] - h / 2)
        g = self.grid_size
        points = range(g * g)

        def vote(coord: torch.Tensor, pick: list[int]) -> torch.Tensor:
            s = score[:, pick]
            return (coord[:, pick] * s).sum(dim=1) / s.sum(dim=1)

        out = torch.stack([vote(abs_x, [i for i in points if i // g == 0]),
                           vote(abs_y, [i for i in points if i % g == 0]),
                           vote(abs_x, [i for i in points if i // g == g - 1]),
                           vote(abs_y, [i for i in points if i % g == g - 1])], dim=1)
        return clip_boxes(out.reshape(b, k, 4), image_shapes)
