"""Output-level agreement of an engine with the PyTorch model: detections matched one to one.

Per image, each engine detection (highest score first) takes the unmatched PyTorch detection of
the same label with the highest IoU, if that IoU is at least ``iou_thr`` (equal boxes count as
IoU 1, also when they have no area). Matched pairs give
the box error (L-inf, original-image pixels), the score error and, for masks, the pixels that
differ over the pixels of either mask (1 - mask IoU); unmatched detections on either side are counted.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torchvision.ops import box_iou

from dettool.structures.detections import Detections


def match_detections(ref: Detections, got: Detections, iou_thr: float = 0.5) -> list[tuple[int, int]]:
    """Greedy one-to-one matching of ``got`` to ``ref`` (same label, highest IoU >= ``iou_thr``).

    Args:
        ref: reference detections (PyTorch), ``K_r`` rows.
        got: engine detections, ``K_g`` rows.

    Returns: ``(ref index, got index)`` pairs, in ``got``'s descending-score order.
    """
    if len(ref) == 0 or len(got) == 0:
        return []
    got_boxes, ref_boxes = got.boxes.float().cpu(), ref.boxes.float().cpu()
    # A box with no area (clipped to the image border) has IoU 0/0 with itself: count a box equal
    # to a reference box (within 1e-3 px) as overlapping it fully.
    same = (got_boxes[:, None, :] - ref_boxes[None, :, :]).abs().amax(-1) <= 1e-3
    iou = box_iou(got_boxes, ref_boxes).nan_to_num(0.0).masked_fill(same, 1.0)  # [K_g, K_r]
    iou[got.labels.cpu()[:, None] != ref.labels.cpu()[None, :]] = -1.0
    taken = torch.zeros(len(ref), dtype=torch.bool)
    pairs = []
    for g in torch.argsort(got.scores.float().cpu(), descending=True, stable=True).tolist():
        row = iou[g].masked_fill(taken, -1.0)
        best, r = row.max(0)
        if best >= iou_thr:
            taken[r] = True
            pairs.append((int(r), g))
    return pairs


@dataclass
class OutputDiff:
    """Running totals of the matched-detection differences over a dataset (``add`` per image)."""

    iou_thr: float = 0.5
    matched: int = 0
    unmatched_engine: int = 0
    unmatched_torch: int = 0
    box_linf: list[float] = field(default_factory=list)
    score_diff: list[float] = field(default_factory=list)
    mask_diff: list[float] = field(default_factory=list)

    def add(self, ref: Detections, got: Detections) -> None:
        """Match one image's engine detections ``got`` to its PyTorch detections ``ref``."""
        pairs = match_detections(ref, got, self.iou_thr)
        self.matched += len(pairs)
        self.unmatched_engine += len(got) - len(pairs)
        self.unmatched_torch += len(ref) - len(pairs)
        if not pairs:
            return
        r = torch.tensor([p[0] for p in pairs])
        g = torch.tensor([p[1] for p in pairs])
        self.box_linf += (ref.boxes.float().cpu()[r] - got.boxes.float().cpu()[g]).abs().amax(1).tolist()
        self.score_diff += (ref.scores.float().cpu()[r] - got.scores.float().cpu()[g]).abs().tolist()
        if ref.masks is not None and got.masks is not None:
            a, b = ref.masks.cpu()[r].flatten(1), got.masks.cpu()[g].flatten(1)
            union = (a | b).sum(1).clamp(min=1)
            self.mask_diff += ((a ^ b).sum(1) / union).tolist()

    def summary(self) -> dict:
        """Counts, and max / mean of each difference (None when nothing matched)."""
        def stats(values: list[float]) -> tuple[float | None, float | None]:
            return (max(values), sum(values) / len(values)) if values else (None, None)

        total = self.matched + max(self.unmatched_engine, self.unmatched_torch)
        out = {"iou_thr": self.iou_thr, "matched": self.matched, "unmatched_engine": self.unmatched_engine,
               "unmatched_torch": self.unmatched_torch,
               "matched_fraction": self.matched / total if total else 1.0}
        for key, values in (("box_linf_px", self.box_linf), ("score_diff", self.score_diff),
                            ("mask_diff", self.mask_diff)):
            if key == "mask_diff" and not values:
                continue
            out[f"{key}_max"], out[f"{key}_mean"] = stats(values)
        return out
