"""``dettool::batched_nms``: multi-class NMS with fixed-size, padded outputs (``DettoolBatchedNMS``).

The reference is ``torchvision.ops.batched_nms`` over the thresholded candidates of each image
(docs/custom_ops.md), run class by class with ``torchvision.ops.nms`` (torchvision's own path for
large inputs): the spec computes IoU on the original coordinates, and ``batched_nms``'s path for
small inputs shifts each class's boxes by an offset first, which can move an IoU in its last bits.

Ties: the candidates are stable-sorted by decreasing score first, so equal scores sit in
increasing flat index ``n * C + c``. torchvision's CPU ``nms`` sorts scores with ``stable=True``:
equal scores are visited in input order, i.e. smaller flat index first. The kept positions are
then sorted in increasing order (``batched_nms``'s per-class path would re-sort them by score
with an unstable sort, which does reorder ties), so the output is by decreasing score, ties by
the smaller flat index, whatever the input size.
"""
from __future__ import annotations

import torch
import torchvision
from torch import Tensor

from dettool.ops.errors import OpInputError


def _check_inputs(boxes: Tensor, scores: Tensor, max_output_boxes: int) -> None:
    if scores.dim() != 3:
        raise OpInputError(f"batched_nms: scores must be [B, N, C], got shape {tuple(scores.shape)}")
    b, n, c = scores.shape
    if tuple(boxes.shape) not in ((b, n, 4), (b, n, c, 4)):
        raise OpInputError(f"batched_nms: boxes must be [B, N, 4] or [B, N, C, 4] for scores "
                           f"{tuple(scores.shape)}, got shape {tuple(boxes.shape)}")
    if max_output_boxes < 0:
        raise OpInputError(f"batched_nms: max_output_boxes must be >= 0, got {max_output_boxes}")


def _nms_per_class(boxes: Tensor, scores: Tensor, classes: Tensor, iou_threshold: float) -> Tensor:
    """Positions kept by NMS within each class, in increasing order.

    Args:
        boxes: ``Tensor[M, 4]`` float32 xyxy, scores ``Tensor[M]`` (sorted by decreasing score),
            classes ``Tensor[M]`` int64.

    Returns: ``Tensor[k]`` int64 positions into the M candidates.
    """
    kept = [torch.empty(0, dtype=torch.long, device=scores.device)]
    for cls in classes.unique():
        positions = (classes == cls).nonzero(as_tuple=True)[0]
        kept.append(positions[torchvision.ops.nms(boxes[positions], scores[positions], iou_threshold)])
    return torch.cat(kept).sort()[0]


def _nms_one_image(boxes: Tensor, scores: Tensor, score_threshold: float, iou_threshold: float,
                   max_output_boxes: int) -> tuple[Tensor, Tensor, Tensor]:
    """Kept candidates of one image, best first.

    Args:
        boxes: ``Tensor[N, 4]`` or ``Tensor[N, C, 4]`` float32 xyxy.
        scores: ``Tensor[N, C]`` float32.

    Returns: ``(boxes Tensor[k, 4], scores Tensor[k], classes Tensor[k] int64)``, ``k <= K``.
    """
    num_classes = scores.shape[1]
    flat_scores = scores.reshape(-1)  # flat index n * C + c
    candidates = (flat_scores > score_threshold).nonzero(as_tuple=True)[0]  # increasing flat index
    order = flat_scores[candidates].sort(descending=True, stable=True)[1]
    candidates = candidates[order]
    cand_scores = flat_scores[candidates]
    cand_classes = candidates % num_classes
    cand_boxes = boxes[candidates // num_classes] if boxes.dim() == 2 else boxes.reshape(-1, 4)[candidates]
    keep = _nms_per_class(cand_boxes, cand_scores, cand_classes, iou_threshold)[:max_output_boxes]
    return cand_boxes[keep], cand_scores[keep], cand_classes[keep]


@torch.library.custom_op("dettool::batched_nms", mutates_args=())
def batched_nms_op(boxes: Tensor, scores: Tensor, score_threshold: float, iou_threshold: float,
                   max_output_boxes: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Reference kernel of ``torch.ops.dettool.batched_nms``; see :func:`batched_nms`."""
    _check_inputs(boxes, scores, max_output_boxes)
    batch, k = scores.shape[0], max_output_boxes
    boxes, scores = boxes.float(), scores.float()
    num_dets = torch.zeros(batch, dtype=torch.int32, device=scores.device)
    det_boxes = scores.new_zeros((batch, k, 4))
    det_scores = scores.new_zeros((batch, k))
    det_classes = torch.full((batch, k), -1, dtype=torch.int32, device=scores.device)
    for i in range(batch):
        kept_boxes, kept_scores, kept_classes = _nms_one_image(boxes[i], scores[i], score_threshold,
                                                               iou_threshold, k)
        n = kept_scores.shape[0]
        num_dets[i] = n
        det_boxes[i, :n] = kept_boxes
        det_scores[i, :n] = kept_scores
        det_classes[i, :n] = kept_classes.int()
    return num_dets, det_boxes, det_scores, det_classes


@batched_nms_op.register_fake
def _batched_nms_fake(boxes: Tensor, scores: Tensor, score_threshold: float, iou_threshold: float,
                      max_output_boxes: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    batch, k = scores.shape[0], max_output_boxes
    return (scores.new_empty((batch,), dtype=torch.int32), scores.new_empty((batch, k, 4), dtype=torch.float32),
            scores.new_empty((batch, k), dtype=torch.float32), scores.new_empty((batch, k), dtype=torch.int32))


def batched_nms(boxes: Tensor, scores: Tensor, score_threshold: float, iou_threshold: float,
                max_output_boxes: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Multi-class NMS per image with fixed-size outputs (``DettoolBatchedNMS``).

    Candidate ``(n, c)`` enters iff ``scores[b, n, c] > score_threshold``; candidates are visited
    by decreasing score, ties by the smaller flat index ``n * C + c``; one is suppressed by a kept
    candidate of the same class with IoU ``> iou_threshold``. Computed in float32 whatever the
    input type (float16 inputs are upcast).

    Args:
        boxes: ``Tensor[B, N, 4]`` (shared by the classes) or ``Tensor[B, N, C, 4]`` xyxy.
        scores: ``Tensor[B, N, C]``, >= 0.
        score_threshold: strict lower bound on a candidate's score.
        iou_threshold: suppression IoU (strict ``>``).
        max_output_boxes: ``K``, detections kept per image.

    Returns:
        num_dets: ``Tensor[B]`` int32, ``<= K``.
        det_boxes: ``Tensor[B, K, 4]`` float32, best first; rows ``>= num_dets`` are 0.
        det_scores: ``Tensor[B, K]`` float32; rows ``>= num_dets`` are 0.
        det_classes: ``Tensor[B, K]`` int32 in ``[0, C)``; rows ``>= num_dets`` are -1.
    """
    return torch.ops.dettool.batched_nms(boxes, scores, float(score_threshold), float(iou_threshold),
                                         int(max_output_boxes))
