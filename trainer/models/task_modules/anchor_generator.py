"""Anchor generation for dense heads, with the ``allowed_border`` validity rule."""
from __future__ import annotations

import math

import torch


def level_strides(featmap_sizes: list[tuple[int, int]], strides: tuple[int, ...],
                  from_input: bool) -> list[tuple[int, int]]:
    """The (y, x) stride of each level: the nominal one, or (``from_input``, torchvision's rule)
    the padded input's size floor-divided by the level's size, per axis. The input size is the
    first level's size times its stride (exact when the input is padded to a multiple of it).
    An odd-sized P5 gives P6 a stride below 64 (an 800-pixel side: 800 // 13 = 61)."""
    if not from_input:
        return [(s, s) for s in strides]
    input_h, input_w = featmap_sizes[0][0] * strides[0], featmap_sizes[0][1] * strides[0]
    return [(input_h // h, input_w // w) for h, w in featmap_sizes]


def base_anchors(base_size: float, ratios: torch.Tensor, scales: torch.Tensor, center: float,
                 scale_major: bool = True) -> torch.Tensor:
    """One level's anchors around ``(center, center)``: ``Tensor[len(ratios) * len(scales), 4]`` xyxy.

    For ratio ``r = h / w`` and scale ``k``: ``w = base_size * k / sqrt(r)``, ``h = base_size * k * sqrt(r)``.
    ``scale_major`` (MMDetection's name): ordered ratio by ratio, each with every scale, computed
    as ``(base_size * ratio) * scale``; else scale by scale, each with every ratio, computed as
    ``(base_size * scale) * ratio`` (SSD). The float32 order of operations is MMDetection's.
    """
    h_ratios = torch.sqrt(ratios)
    w_ratios = 1 / h_ratios
    if scale_major:
        ws = (base_size * w_ratios[:, None] * scales[None, :]).reshape(-1)
        hs = (base_size * h_ratios[:, None] * scales[None, :]).reshape(-1)
    else:
        ws = (base_size * scales[:, None] * w_ratios[None, :]).reshape(-1)
        hs = (base_size * scales[:, None] * h_ratios[None, :]).reshape(-1)
    return torch.stack([center - 0.5 * ws, center - 0.5 * hs, center + 0.5 * ws, center + 0.5 * hs], dim=-1)


class AnchorGrid:
    """Given base anchors per level, the anchors of every feature-map location, MMDetection's
    layout (level, y, x, anchor): level ``l``'s base anchors shifted by ``(x * s, y * s)``.

    Args:
        strides: stride of each level, e.g. (8, 16, 32, 64, 128).
        base_anchors: per level ``Tensor[A_l, 4]`` xyxy, the anchors of location (0, 0).
        stride_from_input: shift by the strides of :func:`level_strides` with ``from_input``.
    """

    def __init__(self, strides: tuple[int, ...], base_anchors: list[torch.Tensor],
                 stride_from_input: bool = False) -> None:
        if len(base_anchors) != len(strides):
            raise ValueError(f"{type(self).__name__}: {len(base_anchors)} levels of base anchors "
                             f"for {len(strides)} strides")
        self.strides = tuple(strides)
        self.base_anchors = base_anchors
        self.stride_from_input = stride_from_input

    @property
    def num_base_anchors_per_level(self) -> list[int]:
        """Anchors per location, per level."""
        return [b.shape[0] for b in self.base_anchors]

    @property
    def num_base_anchors(self) -> int:
        """Anchors per location, the same on every level (a head sharing its convs across levels)."""
        counts = set(self.num_base_anchors_per_level)
        if len(counts) != 1:
            raise ValueError(f"{type(self).__name__}: anchors per location differ by level "
                             f"{self.num_base_anchors_per_level}; use num_base_anchors_per_level")
        return counts.pop()

    def grid_anchors(self, featmap_sizes: list[tuple[int, int]],
                     device: torch.device | str = "cpu") -> list[torch.Tensor]:
        """Anchors for each level: ``Tensor[H_l * W_l * A_l, 4]`` xyxy, ordered (y, x, anchor)."""
        out = []
        strides = level_strides(featmap_sizes, self.strides, self.stride_from_input)
        for (h, w), (stride_y, stride_x), base in zip(featmap_sizes, strides, self.base_anchors):
            shift_x = torch.arange(w, device=device, dtype=torch.float32) * stride_x
            shift_y = torch.arange(h, device=device, dtype=torch.float32) * stride_y
            yy, xx = torch.meshgrid(shift_y, shift_x, indexing="ij")
            shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)
            out.append((shifts + base.to(device)[None]).reshape(-1, 4))
        return out

    def valid_flags(self, featmap_sizes: list[tuple[int, int]], pad_shape: tuple[int, int],
                    img_shape: tuple[int, int], device: torch.device | str = "cpu") -> list[torch.Tensor]:
        """Per level ``Tensor[H_l * W_l * A_l]`` bool: locations inside the unpadded image."""
        out = []
        for (h, w), stride, num in zip(featmap_sizes, self.strides, self.num_base_anchors_per_level):
            valid_h = min(math.ceil(img_shape[0] / stride), h)
            valid_w = min(math.ceil(img_shape[1] / stride), w)
            vy = torch.arange(h, device=device) < valid_h
            vx = torch.arange(w, device=device) < valid_w
            flags = (vy[:, None] & vx[None, :]).reshape(-1, 1).expand(-1, num)
            out.append(flags.reshape(-1))
        return out


class AnchorGenerator(AnchorGrid):
    """Grid anchors of RetinaNet, RPN and torchvision's detectors (MMDetection's ``AnchorGenerator``).

    For level ``l`` with stride ``s``, base anchors have sizes ``s * scale`` with
    ``scale = octave_base_scale * 2 ** (i / scales_per_octave)`` (or the level's explicit
    ``sizes``) for every ratio ``r = h / w`` (w = size / sqrt(r), h = size * sqrt(r)), ordered
    ratio-major, centred at ``s * center_offset`` and shifted by ``(x * s, y * s)``.

    Args:
        strides: stride of each level, e.g. (8, 16, 32, 64, 128).
        ratios: height / width ratios.
        octave_base_scale: base scale in units of the stride.
        scales_per_octave: number of scales per level.
        center_offset: anchor centre offset in units of the stride (0 = top-left of the cell).
        sizes: per level the anchor sizes in pixels, in place of the octave scales (torchvision's
            ``AnchorGenerator(sizes)``); every level the same count.
        round_base: base anchors rounded to whole pixels (torchvision).
        stride_from_input: shift by the strides of :func:`level_strides` with ``from_input``.
    """

    def __init__(self, strides: tuple[int, ...], ratios: tuple[float, ...], octave_base_scale: float,
                 scales_per_octave: int, center_offset: float = 0.0,
                 sizes: tuple[tuple[float, ...], ...] | None = None, round_base: bool = False,
                 stride_from_input: bool = False) -> None:
        if sizes is not None and (len(sizes) != len(strides) or len({len(s) for s in sizes}) != 1):
            raise ValueError(f"AnchorGenerator: sizes {sizes} must give each of the {len(strides)} "
                             "levels the same number of sizes")
        ratios_t = torch.tensor(ratios, dtype=torch.float32)
        scales = torch.tensor([octave_base_scale * 2 ** (i / scales_per_octave)
                               for i in range(scales_per_octave)], dtype=torch.float32)
        # (base, scales): w = base * w_ratio * scale, MMDetection's float32 order of operations
        levels = [(float(s), scales) for s in strides] if sizes is None else \
            [(1.0, torch.tensor(sz, dtype=torch.float32)) for sz in sizes]
        anchors = [base_anchors(base, ratios_t, sc, center_offset * s) for s, (base, sc) in zip(strides, levels)]
        super().__init__(strides, [a.round() for a in anchors] if round_base else anchors, stride_from_input)


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
