"""Output-level agreement of an engine with the PyTorch model: detections matched one to one.

Per image, each engine detection (highest score first) takes the unmatched PyTorch detection of
the same label with the highest IoU, if that IoU is at least ``iou_thr`` (equal boxes count as
IoU 1, also when they have no area). Matched pairs give
the box error (L-inf, original-image pixels), the score error and, for masks, the pixels that
differ over the pixels of either mask (1 - mask IoU); unmatched detections on either side are counted.

``detections_check`` turns these into the "same detections" verdict of ``dettool eval-engine``:
limits per engine precision (``DETECTION_TOLERANCES``) on

- the score-weighted matched fraction: matched detections' scores (both sides) over all
  detections' scores. Near-tied low-score candidates of an FP16 graph swap in and out at the
  top-k, NMS and ``max_per_img`` cuts; weighted, those swaps count for what they score while a
  lost confident detection counts fully. (FP16 RetinaNet and GHM RetinaNet on the 200 synthetic
  val images: 0.9992 and 0.9983 of detections matched, 0.9999 and 0.9990 weighted; before boxes
  without area were paired by distance, 0.91 and 0.59 matched.)
- the mean and the 99th percentile of the matched boxes' L-inf error (the maximum is reported, not
  checked: on an FP16 graph a swapped low-score detection can match a neighbour 50 px away),
- the mean score error and, for masks, the mean 1 - mask IoU.

Measured on the 200 synthetic val images (ONNX Runtime CPU, docs/results.md), FP32 graphs of
nine detectors agree to ~1e-5 px (max 2.4e-4 px) and ~1e-6 in score; FP16 graphs after the
float16-converter fixes to 0.004-0.023 px mean; before those fixes (a real defect: boxes rounded
to float16, |dAP| up to 0.0051) to 0.11-0.35 px mean, which the FP16 limits reject.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torchvision.ops import box_iou

from dettool.structures.detections import Detections

DEGENERATE_MATCH_PX = 0.5  # largest L-inf distance at which a box without area pairs with another


def _flat(boxes: torch.Tensor) -> torch.Tensor:
    """``Tensor[K]`` bool: boxes ``[K, 4]`` xyxy without area (width or height under 1e-2 px)."""
    return ((boxes[:, 2] - boxes[:, 0]) < 1e-2) | ((boxes[:, 3] - boxes[:, 1]) < 1e-2)


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
    # A box with no area (clipped flat against the image border; a dense head keeps them with
    # min_bbox_size -1) has no IoU with anything, itself included: pair it with a reference box
    # within DEGENERATE_MATCH_PX (L-inf) instead. FP16 moves such boxes by a few thousandths of a
    # pixel, which an exact-equality rule counted as lost detections (most of GHM RetinaNet's).
    linf = (got_boxes[:, None, :] - ref_boxes[None, :, :]).abs().amax(-1)  # [K_g, K_r]
    flat = (_flat(got_boxes)[:, None] | _flat(ref_boxes)[None, :]) & (linf <= DEGENERATE_MATCH_PX)
    iou = box_iou(got_boxes, ref_boxes).nan_to_num(0.0).masked_fill(flat | (linf <= 1e-3), 1.0)
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
    score_total: float = 0.0  # scores of every detection, both sides
    score_matched: float = 0.0  # scores of the matched ones, both sides

    def add(self, ref: Detections, got: Detections) -> None:
        """Match one image's engine detections ``got`` to its PyTorch detections ``ref``."""
        pairs = match_detections(ref, got, self.iou_thr)
        self.matched += len(pairs)
        self.unmatched_engine += len(got) - len(pairs)
        self.unmatched_torch += len(ref) - len(pairs)
        self.score_total += float(ref.scores.float().sum()) + float(got.scores.float().sum())
        if not pairs:
            return
        r = torch.tensor([p[0] for p in pairs])
        g = torch.tensor([p[1] for p in pairs])
        self.score_matched += float(ref.scores.float().cpu()[r].sum()) + float(got.scores.float().cpu()[g].sum())
        self.box_linf += (ref.boxes.float().cpu()[r] - got.boxes.float().cpu()[g]).abs().amax(1).tolist()
        self.score_diff += (ref.scores.float().cpu()[r] - got.scores.float().cpu()[g]).abs().tolist()
        if ref.masks is not None and got.masks is not None:
            a, b = ref.masks.cpu()[r].flatten(1), got.masks.cpu()[g].flatten(1)
            union = (a | b).sum(1).clamp(min=1)
            self.mask_diff += ((a ^ b).sum(1) / union).tolist()

    def summary(self) -> dict:
        """Counts, and max / mean of each difference (None when nothing matched); the box error's
        99th percentile; ``matched_fraction`` (of the larger side) and its score-weighted form."""
        def stats(values: list[float]) -> tuple[float | None, float | None]:
            return (max(values), sum(values) / len(values)) if values else (None, None)

        total = self.matched + max(self.unmatched_engine, self.unmatched_torch)
        out = {"iou_thr": self.iou_thr, "matched": self.matched, "unmatched_engine": self.unmatched_engine,
               "unmatched_torch": self.unmatched_torch,
               "torch_detections": self.matched + self.unmatched_torch,
               "engine_detections": self.matched + self.unmatched_engine,
               "matched_fraction": self.matched / total if total else 1.0,
               "matched_score_fraction": self.score_matched / self.score_total if self.score_total > 0 else 1.0}
        for key, values in (("box_linf_px", self.box_linf), ("score_diff", self.score_diff),
                            ("mask_diff", self.mask_diff)):
            if key == "mask_diff" and not values:
                continue
            out[f"{key}_max"], out[f"{key}_mean"] = stats(values)
        out["box_linf_px_p99"] = float(torch.tensor(self.box_linf).quantile(0.99)) if self.box_linf else None
        return out


@dataclass(frozen=True)
class DetectionTolerances:
    """Limits of the "same detections" check (see the module docstring for the measurements).

    Attributes:
        min_matched_fraction: least score-weighted matched fraction.
        box_linf_mean_px, box_linf_p99_px: largest mean and 99th percentile of the matched boxes'
            L-inf error (original-image pixels).
        score_diff_mean: largest mean |score difference| of matched detections.
        mask_diff_mean: largest mean 1 - mask IoU of matched detections (mask models).
    """

    min_matched_fraction: float
    box_linf_mean_px: float
    box_linf_p99_px: float
    score_diff_mean: float
    mask_diff_mean: float


# FP32: far above what nine FP32 graphs show on ONNX Runtime CPU (matched fraction >= 0.999,
# 1e-5 px mean and 2.4e-4 px max box error, ~1e-6 score, mask 1-IoU < 1e-5 mean), leaving room
# for other kernels (cuDNN, TensorRT's TF32: unmeasured here) while a wrong op is off by pixels.
# FP16, fixed exporter: matched score fraction 0.999+ (two-stage), 0.979 (RetinaNet), 0.63 (GHM
# RetinaNet, whose median score is 0.14: it fails, and its verdict rests on AP), box error mean
# 0.004-0.023 px, p99 0.01-0.03 px, score mean 4e-5-1.5e-4, mask 1-IoU mean 3e-4-8e-4. Defective
# float16 converter (boxes rounded to float16): 0.11-0.35 px mean, p99 2.85 px, score mean up to
# 1.35e-3, mask 0.012. The FP16 limits sit between the two.
DETECTION_TOLERANCES = {
    "fp32": DetectionTolerances(min_matched_fraction=0.995, box_linf_mean_px=0.01, box_linf_p99_px=0.05,
                                score_diff_mean=1e-4, mask_diff_mean=0.002),
    "fp16": DetectionTolerances(min_matched_fraction=0.95, box_linf_mean_px=0.1, box_linf_p99_px=1.0,
                                score_diff_mean=1e-3, mask_diff_mean=0.005),
}


@dataclass(frozen=True)
class Criterion:
    """One measured quantity of the detections check against its limit."""

    name: str
    value: float | None
    limit: float
    at_least: bool  # the value must be >= limit (else <=)
    passed: bool

    def describe(self) -> str:
        op = (">=" if self.at_least else "<=") if self.passed else ("<" if self.at_least else ">")
        return f"{self.name} {_fmt(self.value)} {op} {self.limit:g}"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


@dataclass(frozen=True)
class DetectionCheck:
    """The "same detections" check: every criterion within its limit.

    Attributes:
        status: ``pass`` or ``fail``.
        criteria: what was measured, against what.
    """

    status: str
    criteria: tuple[Criterion, ...]

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def failure(self) -> str:
        """``detections differ: box_linf_mean_px 0.37 > 0.1; ...`` (the failed criteria)."""
        return "detections differ: " + "; ".join(c.describe() for c in self.criteria if not c.passed)

    def to_dict(self) -> dict:
        return {"status": self.status, "passed": self.passed, "criteria": [asdict(c) for c in self.criteria]}


def detections_check(summary: dict, tol: DetectionTolerances) -> DetectionCheck:
    """Judge ``OutputDiff.summary()`` against ``tol``. A quantity with nothing to measure (no
    matched detections, or no masks) passes: there is no difference to see."""
    measured = [("matched_score_fraction", summary["matched_score_fraction"], tol.min_matched_fraction, True),
                ("box_linf_mean_px", summary["box_linf_px_mean"], tol.box_linf_mean_px, False),
                ("box_linf_p99_px", summary["box_linf_px_p99"], tol.box_linf_p99_px, False),
                ("score_diff_mean", summary["score_diff_mean"], tol.score_diff_mean, False)]
    if "mask_diff_mean" in summary:
        measured.append(("mask_diff_mean", summary["mask_diff_mean"], tol.mask_diff_mean, False))
    criteria = tuple(Criterion(name, value, limit, at_least,
                               value is None or (value >= limit if at_least else value <= limit))
                     for name, value, limit, at_least in measured)
    return DetectionCheck("pass" if all(c.passed for c in criteria) else "fail", criteria)
