"""Geometric transforms, named and behaving as MMDetection's: Resize, RandomFlip, Expand, MinIoURandomCrop.

Each is a small class called as ``transform(sample, rng)``: it moves the image, the boxes, the
crowd boxes, the masks and the proposals together (``dettool.data.sample.Sample``) and draws its
randomness from ``rng``, the one generator of this sample, in a fixed order, so that a sample is
a function of (seed, epoch, index).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torchvision.ops import box_iou

from dettool.data.masks import resize_masks
from dettool.data.sample import Sample
from dettool.data.scale import ScaleSpec, rescale_size
from dettool.data.transforms import hflip_boxes, hflip_image, resize_image
from dettool.structures.boxes import clip_boxes


class Resize:
    """Resize to a scale, keeping the aspect ratio or to an exact size (MMDetection's ``Resize``).

    With ``keep_ratio`` the image gets the largest size whose long side is at most ``scale.long``
    and short side at most the (drawn, for multi-scale) short limit; without, ``scale`` read as
    ``WxH`` is the output size (``scale.exact_size()``). Boxes scale by the actual factors
    ``(new_w / w, new_h / h)``, which multiply ``scale_factor``; masks are resized like the image
    (``resize_masks``). Draws the short limit (value / range mode only).

    Args:
        scale: the parsed ``data.train_scale`` / ``data.test_scale``.
        keep_ratio: ``data.keep_ratio``; False needs a single scale.
    """

    def __init__(self, scale: ScaleSpec, *, keep_ratio: bool) -> None:
        if not keep_ratio:
            scale.exact_size()  # a multi-scale cannot be an exact size: fail here, not per sample
        self.scale = scale
        self.keep_ratio = keep_ratio

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        h, w = sample.img_shape
        if self.keep_ratio:
            long, short = self.scale.sample(rng)
            new_w, new_h, _ = rescale_size(w, h, long, short)
        else:
            new_w, new_h = self.scale.exact_size()
        sx, sy = new_w / w, new_h / h
        sample.img = resize_image(sample.img, new_w, new_h)
        factors = torch.tensor([sx, sy, sx, sy], dtype=torch.float32)
        sample.map_boxes(lambda b: b * factors)
        if sample.masks is not None:
            sample.masks = resize_masks(sample.masks, new_h, new_w)
        sample.scale_factor = (sample.scale_factor[0] * sx, sample.scale_factor[1] * sy)
        return sample


class RandomFlip:
    """Mirror horizontally with probability ``prob`` (MMDetection's ``RandomFlip``, horizontal).

    Draws one uniform number when ``prob > 0`` and nothing otherwise.
    """

    def __init__(self, prob: float) -> None:
        self.prob = prob

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if not (self.prob > 0 and rng.random() < self.prob):
            return sample
        width = sample.img_shape[1]
        sample.img = hflip_image(sample.img)
        sample.map_boxes(lambda b: hflip_boxes(b, width))
        if sample.masks is not None:
            sample.masks = sample.masks.flip(-1)
        sample.flip = not sample.flip
        return sample


class Expand:
    """Place the image at a random spot of a canvas ``ratio`` times its size filled with the mean
    (MMDetection's ``Expand``, as SSD uses it: ``mean`` fill, RGB order).

    With probability ``prob``: draw ``ratio`` uniformly from ``ratio_range``, make an
    ``int(h * ratio) x int(w * ratio)`` canvas of the image's dtype filled with ``mean`` (cast as
    NumPy casts, so a uint8 image gets the mean rounded down), and paste the image with its
    top-left corner at ``(int(U(0, w * ratio - w)), int(U(0, h * ratio - h)))``. Boxes, crowd
    boxes and proposals shift by that offset; masks are pasted into zero canvases. The scale is
    unchanged (``scale_factor`` stays). Draws: apply?, ratio, left, top (all four only if applied).

    Args:
        mean: the fill colour, RGB (``data.mean``).
        ratio_range: ``(min, max)`` canvas / image size, ``1 <= min <= max``.
        prob: probability of expanding.
    """

    def __init__(self, *, mean: Sequence[float], ratio_range: tuple[float, float], prob: float) -> None:
        if not 1 <= ratio_range[0] <= ratio_range[1]:
            raise ValueError(f"Expand: ratio_range must satisfy 1 <= min <= max, got {ratio_range}")
        self.mean = tuple(float(m) for m in mean)
        self.ratio_range = ratio_range
        self.prob = prob

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.prob:
            return sample
        ratio = rng.uniform(*self.ratio_range)
        h, w = sample.img_shape
        left = int(rng.uniform(0, w * ratio - w))
        top = int(rng.uniform(0, h * ratio - h))
        img = np.asarray(sample.img)
        canvas = np.full((int(h * ratio), int(w * ratio), 3), self.mean, dtype=img.dtype)
        canvas[top:top + h, left:left + w] = img
        sample.img = canvas
        shift = torch.tensor([left, top, left, top], dtype=torch.float32)
        sample.map_boxes(lambda b: b + shift)
        if sample.masks is not None:
            masks = sample.masks.new_zeros((sample.masks.shape[0], canvas.shape[0], canvas.shape[1]))
            masks[:, top:top + h, left:left + w] = sample.masks
            sample.masks = masks
        return sample


class MinIoURandomCrop:
    """Crop a random patch whose IoU with every box reaches a drawn threshold (MMDetection's
    ``MinIoURandomCrop``, SSD's sampler).

    Each attempt draws a mode uniformly from ``("no crop", *min_ious, 0)``: "no crop" returns the
    sample as it is; otherwise, with ``min_iou`` the mode, up to 50 tries draw a patch
    ``new_w ~ U(min_crop_size * w, w)``, ``new_h ~ U(min_crop_size * h, h)`` (rejected unless
    ``0.5 <= new_h / new_w <= 2``), ``left ~ U(0, w - new_w)``, ``top ~ U(0, h - new_h)``, truncated
    to integers (rejected if empty). A patch is taken when its IoU with every box (targets and
    crowd regions together, as MMDetection 3 keeps crowd boxes among its ``gt_bboxes``) is at
    least ``min_iou`` and at least one box has its centre strictly inside it. Then boxes, crowd
    boxes and proposals whose centres lie outside are dropped (targets with their labels and
    masks), the rest shift to the patch and, with ``bbox_clip_border``, are clipped to it; masks
    and the image are cropped. An image without boxes takes the first valid patch. After 50
    failed tries a new mode is drawn. The scale is unchanged (``scale_factor`` stays).

    MMDetection draws the patch offset with ``np.random.uniform(w - new_w)``, whose ``high``
    defaults to 1 (offsets from [1, w - new_w] rather than [0, w - new_w]); dettool draws from the
    interval meant.

    Args:
        min_ious: the IoU thresholds to draw from, each in [0, 1].
        min_crop_size: smallest patch side as a fraction of the image side, in (0, 1].
        bbox_clip_border: clip kept boxes to the patch.
    """

    MAX_TRIES = 50

    def __init__(self, *, min_ious: Sequence[float], min_crop_size: float, bbox_clip_border: bool) -> None:
        if not 0 < min_crop_size <= 1:
            raise ValueError(f"MinIoURandomCrop: min_crop_size must be in (0, 1], got {min_crop_size}")
        self.min_ious = tuple(float(t) for t in min_ious)
        self.min_crop_size = min_crop_size
        self.bbox_clip_border = bbox_clip_border

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        h, w = sample.img_shape
        all_boxes = torch.cat([sample.boxes, sample.ignore_boxes])
        thresholds = (None, *self.min_ious, 0.0)  # None: leave the image uncropped
        while True:
            min_iou = thresholds[int(rng.integers(len(thresholds)))]
            if min_iou is None:
                return sample
            for _ in range(self.MAX_TRIES):
                patch = self._draw_patch(rng, h, w)
                if patch is None:
                    continue
                if len(all_boxes):
                    patch_box = torch.tensor([patch], dtype=torch.float32)
                    if box_iou(patch_box, all_boxes).min() < min_iou:
                        continue
                    if not centres_inside(all_boxes, patch).any():
                        continue
                self._crop(sample, patch)
                return sample

    def _draw_patch(self, rng: np.random.Generator, h: int, w: int) -> tuple[int, int, int, int] | None:
        """``(x1, y1, x2, y2)`` integer patch, or None when this try is rejected (aspect, empty)."""
        new_w = rng.uniform(self.min_crop_size * w, w)
        new_h = rng.uniform(self.min_crop_size * h, h)
        if not 0.5 <= new_h / new_w <= 2:
            return None
        left = rng.uniform(0, w - new_w)
        top = rng.uniform(0, h - new_h)
        patch = (int(left), int(top), int(left + new_w), int(top + new_h))
        if patch[2] == patch[0] or patch[3] == patch[1]:
            return None
        return patch

    def _crop(self, sample: Sample, patch: tuple[int, int, int, int]) -> None:
        x1, y1, x2, y2 = patch
        shift = torch.tensor([x1, y1, x1, y1], dtype=torch.float32)
        size = (y2 - y1, x2 - x1)

        def kept(boxes: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
            boxes = boxes[keep] - shift
            return clip_boxes(boxes, size) if self.bbox_clip_border else boxes

        keep = centres_inside(sample.boxes, patch)
        sample.boxes = kept(sample.boxes, keep)
        sample.labels = sample.labels[keep]
        if sample.masks is not None:
            sample.masks = sample.masks[keep][:, y1:y2, x1:x2].contiguous()
        sample.ignore_boxes = kept(sample.ignore_boxes, centres_inside(sample.ignore_boxes, patch))
        if sample.proposals is not None:
            p = sample.proposals
            keep = centres_inside(p[:, :4], patch)
            sample.proposals = torch.cat([kept(p[:, :4], keep), p[keep, 4:]], dim=1)
        sample.img = np.asarray(sample.img)[y1:y2, x1:x2]


def centres_inside(boxes: torch.Tensor, patch: tuple[int, int, int, int]) -> torch.Tensor:
    """bool ``Tensor[N]``: whether each xyxy box's centre lies strictly inside ``patch`` (x1, y1, x2, y2)."""
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    return (cx > patch[0]) & (cy > patch[1]) & (cx < patch[2]) & (cy < patch[3])

