"""Soft-NMS (Bodla et al., 2017): decay the scores of overlapping boxes instead of removing them."""
from __future__ import annotations

import torch
from torchvision.ops import box_iou


def soft_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_thr: float = 0.3,
             sigma: float = 0.5, method: str = "linear", min_score: float = 1e-3,
             max_num: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-wise Soft-NMS.

    Greedily picks the highest-scoring remaining box M and rescales every other remaining box b:
    ``linear``: ``s_b *= 1 - IoU(M, b)`` where ``IoU(M, b) > iou_thr``; ``gaussian``:
    ``s_b *= exp(-IoU(M, b)^2 / sigma)``. Boxes whose score falls below ``min_score`` are dropped.
    Boxes of different ``idxs`` never interact (coordinate offsets, as ``batched_nms``).

    Args:
        boxes: ``Tensor[N, 4]`` xyxy.
        scores: ``Tensor[N]``.
        idxs: ``Tensor[N]`` int64 class ids.
        iou_thr: IoU above which the linear method decays (unused by ``gaussian``).
        sigma: spread of the gaussian decay.
        method: ``'linear'`` or ``'gaussian'``.
        min_score: boxes whose (decayed) score is below this are discarded.
        max_num: keep at most this many; <= 0 keeps all.

    Returns: ``keep`` ``Tensor[K]`` int64 indices into the input and ``new_scores`` ``Tensor[K]``,
    sorted by new score, descending.
    """
    if method not in ("linear", "gaussian"):
        raise ValueError(f"soft_nms method must be 'linear' or 'gaussian', got {method!r}")
    device = boxes.device
    if boxes.numel() == 0:
        return torch.zeros((0,), dtype=torch.long, device=device), scores.new_zeros((0,))
    boxes = boxes.float()
    offsets = idxs.to(boxes) * (boxes.max() - boxes.min() + 1)
    shifted = boxes + offsets[:, None]  # boxes of different classes no longer overlap
    cur = scores.float().clone()
    alive = cur >= min_score
    keep, kept_scores = [], []
    limit = max_num if max_num > 0 else boxes.shape[0]
    while len(keep) < limit and bool(alive.any()):
        i = int(torch.where(alive, cur, cur.new_tensor(-1.0)).argmax())
        keep.append(i)
        kept_scores.append(cur[i])
        alive[i] = False
        ov = box_iou(shifted[i:i + 1], shifted)[0]  # one row at a time: O(N) memory
        if method == "linear":
            decay = torch.where(ov > iou_thr, 1 - ov, torch.ones_like(ov))
        else:
            decay = torch.exp(-(ov * ov) / sigma)
        cur = torch.where(alive, cur * decay, cur)
        alive &= cur >= min_score
    if not keep:
        return torch.zeros((0,), dtype=torch.long, device=device), scores.new_zeros((0,))
    # Scores only decay, so the greedy picks are already in non-increasing score order.
    return torch.tensor(keep, dtype=torch.long, device=device), torch.stack(kept_scores).to(scores.dtype)
