"""Batched tensor helpers of the fixed-size decodes, and the float32 marker.

A ``Float32Block`` computes in float32 whatever the network's precision (box decoding, proposal
and detection selection, RoI coordinates): its ``forward`` casts its inputs with ``.float()``.
``exporters.fp16`` keeps the nodes of its subclasses in float32 in FP16 graphs.
"""
from __future__ import annotations

import torch
from torch import nn


class Float32Block(nn.Module):
    """Base class of decode steps that must run in float32 (pixel coordinates, scores)."""


def float32_block_classes() -> set[str]:
    """Qualified names (``module.Class``) of every ``Float32Block`` subclass defined so far."""
    out, todo = set(), list(Float32Block.__subclasses__())
    while todo:
        cls = todo.pop()
        out.add(f"{cls.__module__}.{cls.__qualname__}")
        todo += cls.__subclasses__()
    return out


def levels_to_rows(x: torch.Tensor, channels: int) -> torch.Tensor:
    """``[B, A * channels, H, W]`` -> ``[B, H * W * A, channels]`` (order y, x, anchor)."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, channels)


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x`` ``[B, N, D]`` (or ``[N, D]``, shared by the batch) at ``index`` ``[B, k]`` -> ``[B, k, D]``."""
    if x.dim() == 2:
        return x[index]
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def top_k_rows(ranking: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``[B, min(k, N)]`` of the largest entries of ``ranking`` ``[B, N]``, in increasing
    index order; ``k <= 0`` keeps all.

    In index order, equal values reach the NMS (which stable-sorts by score) lower index first,
    as MMDetection's descending ``sort`` leaves them; ``torch.topk``'s own order puts ties
    anywhere, and a trained RPN's sigmoid saturates into equal top scores of which NMS keeps the
    first. Top-k of all N candidates selects the same set as keeping them all, so the graph can
    always take it (the level size may be symbolic).
    """
    n = ranking.shape[1]
    kk = n if k <= 0 else torch.sym_min(k, n)
    return ranking.topk(kk, dim=1).indices.sort(dim=1).values


def rois_from_batched(boxes: torch.Tensor) -> torch.Tensor:
    """``[B, K, 4]`` boxes -> ``[B * K, 5]`` RoIs ``(batch_index, x1, y1, x2, y2)``."""
    b, k = boxes.shape[0], boxes.shape[1]
    index = torch.arange(b, device=boxes.device, dtype=boxes.dtype).repeat_interleave(k)
    return torch.cat([index[:, None], boxes.reshape(b * k, 4)], dim=1)


def padding_mask(num_valid: torch.Tensor, k: int) -> torch.Tensor:
    """``[B, k]`` bool, True for the first ``num_valid[b]`` rows of each image."""
    return torch.arange(k, device=num_valid.device)[None, :] < num_valid[:, None].to(torch.int64)


def pad_rows(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image ``[K_i, D]`` -> ``(num [B] int32, padded [B, max K_i, D])`` (zero rows after each image's own)."""
    k = max((r.shape[0] for r in rows), default=0)
    d = rows[0].shape[1] if rows else 4
    out = rows[0].new_zeros((len(rows), k, d)) if rows else torch.zeros((0, 0, d))
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
    num = torch.tensor([r.shape[0] for r in rows], dtype=torch.int32, device=out.device)
    return num, out
