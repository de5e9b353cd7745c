"""References for the four dettool operators, built on torchvision.ops (docs/custom_ops.md).

Every reference computes in float32 and returns the input's type, as the spec states for float16
features. Shared by the CPU tests (tests/plugins), the GPU check (tests/gpu) and the TensorRT
tests (tests/trt_engines).
"""
from __future__ import annotations

import torch
import torchvision


def candidates_of(scores: torch.Tensor, score_threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices ``n * C + c`` (ascending) and scores of one image's candidates, ``score > thr``."""
    flat = scores.reshape(-1)
    index = torch.nonzero(flat > score_threshold).flatten()
    return index, flat[index]


def _pad_detections(boxes, scores, classes, k):
    n = boxes.shape[0]
    out_boxes = torch.zeros((k, 4), dtype=torch.float32)
    out_scores = torch.zeros((k,), dtype=torch.float32)
    out_classes = torch.full((k,), -1, dtype=torch.int32)
    out_boxes[:n], out_scores[:n], out_classes[:n] = boxes, scores, classes.to(torch.int32)
    return n, out_boxes, out_scores, out_classes


def _stack_images(per_image, k):
    if not per_image:  # no images
        return (torch.zeros((0,), dtype=torch.int32), torch.zeros((0, k, 4)), torch.zeros((0, k)),
                torch.zeros((0, k), dtype=torch.int32))
    nums, boxes, scores, classes = zip(*per_image)
    return (torch.tensor(nums, dtype=torch.int32), torch.stack(boxes), torch.stack(scores), torch.stack(classes))


def _image_boxes(boxes_b: torch.Tensor, index: torch.Tensor, num_classes: int) -> torch.Tensor:
    if boxes_b.dim() == 2:  # [N, 4] shared by the classes
        return boxes_b[index // num_classes]
    return boxes_b.reshape(-1, 4)[index]  # [N, C, 4]


def _image_candidates(boxes: torch.Tensor, scores: torch.Tensor, score_threshold: float):
    """Per image: flat indices, scores, boxes ``[M, 4]`` and classes of the candidates above the
    threshold (rounded to float32 first, as the ONNX attribute is)."""
    score_threshold = float(torch.tensor(score_threshold, dtype=torch.float32))
    num_classes = scores.shape[2]
    for b in range(scores.shape[0]):
        index, cand_scores = candidates_of(scores[b], score_threshold)
        yield index, cand_scores, _image_boxes(boxes[b], index, num_classes), index % num_classes


def reference_batched_nms(boxes: torch.Tensor, scores: torch.Tensor, score_threshold: float,
                          iou_threshold: float, max_output_boxes: int) -> tuple[torch.Tensor, ...]:
    """DettoolBatchedNMS by its definition: per class ``torchvision.ops.nms`` on the original
    coordinates, kept candidates merged by (score desc, flat index asc), first K, padded.

    The thresholds are rounded to float32 first, as the ONNX attributes are.

    Returns: ``num_dets [B]`` int32, ``det_boxes [B, K, 4]``, ``det_scores [B, K]``, ``det_classes [B, K]`` int32.
    """
    iou_threshold = float(torch.tensor(iou_threshold, dtype=torch.float32))
    per_image = []
    for index, cand_scores, cand_boxes, cand_classes in _image_candidates(boxes, scores, score_threshold):
        kept = []
        for c in torch.unique(cand_classes):
            members = torch.nonzero(cand_classes == c).flatten()
            # nms sorts stably by score: ties keep the ascending flat-index order of `members`.
            kept.append(members[torchvision.ops.nms(cand_boxes[members], cand_scores[members], iou_threshold)])
        kept = torch.cat(kept) if kept else torch.zeros((0,), dtype=torch.int64)
        kept = kept[torch.argsort(index[kept])]  # by flat index, then stably by score
        kept = kept[torch.sort(cand_scores[kept], descending=True, stable=True).indices][:max_output_boxes]
        per_image.append(_pad_detections(cand_boxes[kept], cand_scores[kept], cand_classes[kept], max_output_boxes))
    return _stack_images(per_image, max_output_boxes)


def torchvision_batched_nms(boxes: torch.Tensor, scores: torch.Tensor, score_threshold: float,
                            iou_threshold: float, max_output_boxes: int) -> tuple[torch.Tensor, ...]:
    """The spec's one-line statement: ``torchvision.ops.batched_nms(...)[:K]`` over the thresholded
    candidates (what dettool's PyTorch models run). It offsets boxes by class, so its IoUs can
    differ from the exact ones in the last bits; tests use it on inputs far from ties."""
    iou_threshold = float(torch.tensor(iou_threshold, dtype=torch.float32))
    per_image = []
    for index, cand_scores, cand_boxes, cand_classes in _image_candidates(boxes, scores, score_threshold):
        keep = torchvision.ops.batched_nms(cand_boxes, cand_scores, cand_classes, iou_threshold)[:max_output_boxes]
        per_image.append(_pad_detections(cand_boxes[keep], cand_scores[keep], cand_classes[keep], max_output_boxes))
    return _stack_images(per_image, max_output_boxes)


def map_roi_levels(rois: torch.Tensor, num_levels: int, finest_scale: int) -> torch.Tensor:
    """``clamp(floor(log2(sqrt(w * h) / finest_scale + 1e-6)), 0, L - 1)``; -1 for a negative area
    (NaN scale: no level, the RoI's output is 0)."""
    scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
    levels = torch.floor(torch.log2(scale / finest_scale + 1e-6))
    no_level = torch.isnan(levels)
    levels = levels.nan_to_num(0.0).clamp(min=0, max=num_levels - 1).long()
    return torch.where(no_level, -1, levels)


def rescale_rois(rois: torch.Tensor, scale_factor: float) -> torch.Tensor:
    """MMDetection's ``roi_rescale``: each box scaled about its centre, in float32 (the factor is
    rounded to float32 first, as the ONNX attribute is)."""
    factor = float(torch.tensor(scale_factor, dtype=torch.float32))
    cx = (rois[:, 1] + rois[:, 3]) * 0.5
    cy = (rois[:, 2] + rois[:, 4]) * 0.5
    new_w = (rois[:, 3] - rois[:, 1]) * factor
    new_h = (rois[:, 4] - rois[:, 2]) * factor
    return torch.stack((rois[:, 0], cx - new_w * 0.5, cy - new_h * 0.5, cx + new_w * 0.5, cy + new_h * 0.5), dim=-1)


def reference_multi_level_roi_align(rois: torch.Tensor, feats: list[torch.Tensor], featmap_strides: list[int],
                                    output_size: tuple[int, int], sampling_ratio: int, finest_scale: int,
                                    aligned: bool, roi_scale_factor: float = 1.0) -> torch.Tensor:
    """DettoolMultiLevelRoIAlign: level mapping of the RoIs as given, their rescaling (unless
    ``roi_scale_factor`` is 1), then ``torchvision.ops.roi_align`` per level in float32. RoIs of
    negative area, or whose batch index is outside ``(-1, B)``, give zeros (torchvision would read
    out of bounds for the latter)."""
    rois = rois.float()
    batch, channels = feats[0].shape[:2]
    out = torch.zeros((rois.shape[0], channels, *output_size), dtype=torch.float32, device=rois.device)
    valid = (rois[:, 0] > -1) & (rois[:, 0] < batch)
    levels = map_roi_levels(rois, len(feats), finest_scale)
    if roi_scale_factor != 1.0:
        rois = rescale_rois(rois, roi_scale_factor)
    for level, (feat, stride) in enumerate(zip(feats, featmap_strides)):
        inds = torch.nonzero((levels == level) & valid).flatten()
        if inds.numel():
            out[inds] = torchvision.ops.roi_align(feat.float(), rois[inds], output_size, spatial_scale=1.0 / stride,
                                                  sampling_ratio=sampling_ratio, aligned=aligned)
    return out.to(feats[0].dtype)


def reference_modulated_deform_conv(input: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                                    weight: torch.Tensor, bias: torch.Tensor, stride: tuple[int, int],
                                    padding: tuple[int, int], dilation: tuple[int, int]) -> torch.Tensor:
    """DettoolModulatedDeformConv: ``torchvision.ops.deform_conv2d`` in float32 (groups and
    deform_groups follow from the shapes)."""
    out = torchvision.ops.deform_conv2d(input.float(), offset.float(), weight.float(), bias.float(), stride=stride,
                                        padding=padding, dilation=dilation, mask=mask.float())
    return out.to(input.dtype)


def reference_ps_roi_align(features: torch.Tensor, rois: torch.Tensor, output_size: int, spatial_scale: float,
                           sampling_ratio: int) -> torch.Tensor:
    """DettoolPSRoIAlign: ``torchvision.ops.ps_roi_align`` in float32 (``spatial_scale`` rounded to
    float32, as the attribute is). A RoI whose batch index is outside ``(-1, B)`` gives zeros
    (torchvision would read outside the batch), and so does one with an empty adaptive sampling
    grid, where torchvision divides 0 by 0 (its NaN rows, nothing else, become 0)."""
    scale = float(torch.tensor(spatial_scale, dtype=torch.float32))
    rois = rois.float()
    valid = (rois[:, 0] > -1) & (rois[:, 0] < features.shape[0])
    in_batch = torch.cat([torch.where(valid, rois[:, 0], 0.0)[:, None], rois[:, 1:]], dim=1)
    out = torchvision.ops.ps_roi_align(features.float(), in_batch, output_size, scale, sampling_ratio)
    # 0 / 0 of an empty adaptive grid makes every output of the RoI NaN (the tests feed no NaN features).
    empty_grid = torch.isnan(out).flatten(1).all(dim=1) & (out.shape[1] > 0)
    return torch.where((valid & ~empty_grid)[:, None, None, None], out, 0.0).to(features.dtype)
