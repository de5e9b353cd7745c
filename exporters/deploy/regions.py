"""Pieces of a deploy graph shared by every detector: FP32 regions and batched box helpers.

An ``FP32Region`` is a module whose computation stays in float32 in an ``--fp16`` graph (box
decoding, proposal and detection selection, RoI coordinates): ``exporters.fp16`` finds its nodes
through the module class names the ONNX exporter records on every node.
"""
from __future__ import annotations

import torch
from torch import nn


class FP32Region(nn.Module):
    """Marker base class: the nodes of subclasses are kept in float32 by ``exporters.fp16``."""


def fp32_region_classes() -> set[str]:
    """Qualified names (``module.Class``) of every ``FP32Region`` subclass defined so far."""
    out, todo = set(), list(FP32Region.__subclasses__())
    while todo:
        cls = todo.pop()
        out.add(f"{cls.__module__}.{cls.__qualname__}")
        todo += cls.__subclasses__()
    return out


def clip_boxes(boxes: torch.Tensor, image_shapes: torch.Tensor) -> torch.Tensor:
    """Clip xyxy ``boxes`` ``[B, ..., 4]`` to each image's ``(h, w)`` in ``image_shapes`` ``[B, 2]``.

    The same arithmetic as ``DeltaXYWHCoder.decode(max_shape=...)``: ``x.clamp(0, w)``.
    """
    shape = (boxes.shape[0],) + (1,) * (boxes.dim() - 2)
    h = image_shapes[:, 0].to(boxes.dtype).reshape(shape)
    w = image_shapes[:, 1].to(boxes.dtype).reshape(shape)
    zero = torch.zeros((), dtype=boxes.dtype, device=boxes.device)
    x1 = torch.minimum(torch.maximum(boxes[..., 0], zero), w)
    y1 = torch.minimum(torch.maximum(boxes[..., 1], zero), h)
    x2 = torch.minimum(torch.maximum(boxes[..., 2], zero), w)
    y2 = torch.minimum(torch.maximum(boxes[..., 3], zero), h)
    return torch.stack([x1, y1, x2, y2], dim=-1)


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x`` ``[B, N, D]`` (or ``[N, D]``, shared by the batch) at ``index`` ``[B, k]`` -> ``[B, k, D]``."""
    if x.dim() == 2:
        return x[index]
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def top_k_rows(ranking: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``[B, min(k, N)]`` of the largest entries of ``ranking`` ``[B, N]``; ``k <= 0`` keeps all.

    The trained models skip top-k when a level has at most ``k`` candidates; top-k of all of them
    selects the same set, so the graph can always take it (the level size may be symbolic).
    """
    n = ranking.shape[1]
    kk = n if k <= 0 else torch.sym_min(k, n)
    return ranking.topk(kk, dim=1).indices


def rois_from_batched(boxes: torch.Tensor) -> torch.Tensor:
    """``[B, K, 4]`` boxes -> ``[B * K, 5]`` RoIs ``(batch_index, x1, y1, x2, y2)``."""
    b, k = boxes.shape[0], boxes.shape[1]
    index = torch.arange(b, device=boxes.device, dtype=boxes.dtype).repeat_interleave(k)
    return torch.cat([index[:, None], boxes.reshape(b * k, 4)], dim=1)


def padding_mask(num_valid: torch.Tensor, k: int) -> torch.Tensor:
    """``[B, k]`` bool, True for the first ``num_valid[b]`` rows of each image."""
    return torch.arange(k, device=num_valid.device)[None, :] < num_valid[:, None].to(torch.int64)
