"""Geometric transforms, named and behaving as MMDetection's: Resize, RandomFlip, Expand, MinIoURandomCrop.

Each is a small class called as ``transform(sample, rng)``: it moves the image, the boxes, the
crowd boxes, the masks, the semantic map and the proposals together (``dettool.data.sample.Sample``) and draws its
randomness from ``rng``, the one generator of this sample, in a fixed order, so that a sample is
a function of (seed, epoch, index).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torchvision.ops import box_iou

from dettool.data.masks import resize_label_map, resize_masks
from dettool.data.sample import IGNORE_LABEL, Sample
from dettool.data.scale import ScaleSpec, rescale_size
from dettool.data.transforms import hflip_boxes, hflip_image, resize_image
from dettool.structures.boxes import clip_boxes


class Resize:
    """Resize to a scale, keeping the aspect ratio or to an exact size (MMDetection's ``Resize``).

    With ``keep_ratio`` the image gets the largest size whose long side is at most ``scale.long``
    and short side at most the (drawn, for multi-scale) short limit; without, ``scale`` read as
    ``WxH`` is the output size (``scale.exact_size()``). Boxes scale by the actual factors
    ``(new_w / w, new_h / h)``, which multiply ``scale_factor``; masks are resized like the image
    (``resize_masks``), a semantic map by nearest neighbour. Draws the short limit (value / range mode only).

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
        if sample.semantic is not None:
            sample.semantic = resize_label_map(sample.semantic, new_h, new_w)
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
        if sample.semantic is not None:
            sample.semantic = sample.semantic.flip(-1)
        sample.flip = not sample.flip
        return sample


class Expand:
    """Place the image at a random spot of a canvas ``ratio`` times its size filled with the mean
    (MMDetection's ``Expand``, as SSD uses it: ``mean`` fill, RGB order).

    With probability ``prob``: draw ``ratio`` uniformly from ``ratio_range``, make an
    ``int(h * ratio) x int(w * ratio)`` canvas of the image's dtype filled with ``mean`` (cast as
    NumPy casts, so a uint8 image gets the mean rounded down), and paste the image with its
    top-left corner at ``(int(U(0, w * ratio - w)), int(U(0, h * ratio - h)))``. Boxes, crowd
    boxes and proposals shift by that offset; masks are pasted into zero canvases, a semantic map
into one of ``IGNORE_LABEL``. The scale is
    unchanged (``scale_factor`` stays). Draws whether to apply, then (if so) ratio, left, top.

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
        if sample.semantic is not None:
            semantic = sample.semantic.new_full(canvas.shape[:2], IGNORE_LABEL)
            semantic[top:top + h, left:left + w] = sample.semantic
            sample.semantic = semantic
        return sample


class MinIoURandomCrop:
    """Crop a random patch whose IoU with every box reaches a drawn threshold (MMDetection's
    ``MinIoURandomCrop``, SSD's sampler).

    Each attempt draws a mode uniformly from ``("no crop", *min_ious, 0)``: "no crop" returns the
    sample as it is; otherwise, with ``min_iou`` the mode, 50 tries draw a patch
    ``new_w ~ U(min_crop_size * w, w)``, ``new_h ~ U(min_crop_size * h, h)``,
    ``left ~ U(0, w - new_w)``, ``top ~ U(0, h - new_h)``, truncated to integers. A try qualifies
    when ``0.5 <= new_h / new_w <= 2``, the patch is not empty, its IoU with every box (targets and
    crowd regions together, as MMDetection 3 keeps crowd boxes among its ``gt_bboxes``) is at
    least ``min_iou`` and at least one box has its centre strictly inside it (an image without
    boxes needs neither). The first qualifying try is the crop; with none a new mode is drawn.
    The 50 tries are drawn at once (MMDetection loops over them: the first qualifying patch has
    the same distribution, and each attempt draws a fixed count of numbers).

    Cropping drops boxes, crowd boxes and proposals whose centres lie outside the patch (targets
    with their labels and masks), shifts the rest to the patch and, with ``bbox_clip_border``,
    clips them to it; masks and the image are cropped. The scale is unchanged (``scale_factor``
    stays).

    MMDetection draws the patch offset with ``np.random.uniform(w - new_w)``, whose ``high``
    defaults to 1 (offsets from [1, w - new_w] rather than [0, w - new_w]); dettool draws from the
    interval meant.

    Args:
        min_ious: the IoU thresholds to draw from, each in [0, 1].
        min_crop_size: smallest patch side as a fraction of the image side, in (0, 1].
        bbox_clip_border: clip kept boxes to the patch.
    """

    NUM_TRIES = 50

    def __init__(self, *, min_ious: Sequence[float], min_crop_size: float, bbox_clip_border: bool) -> None:
        if not 0 < min_crop_size <= 1:
            raise ValueError(f"MinIoURandomCrop: min_crop_size must be in (0, 1], got {min_crop_size}")
        self.min_ious = tuple(float(t) for t in min_ious)
        self.min_crop_size = min_crop_size
        self.bbox_clip_border = bbox_clip_border

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        chosen = self.sample_patch(rng, sample.img_shape, torch.cat([sample.boxes, sample.ignore_boxes]))
        if chosen is not None:
            self.crop(sample, chosen[0])
        return sample

    def sample_patch(self, rng: np.random.Generator, img_shape: tuple[int, int],
                     boxes: torch.Tensor) -> tuple[tuple[int, int, int, int], float] | None:
        """Draw the patch to crop from an image of ``img_shape`` (h, w) holding ``boxes``
        ``Tensor[N, 4]`` (targets and crowd regions).

        Returns: ``((x1, y1, x2, y2), min_iou)``, the patch and the threshold it met, or None
        when the "no crop" mode is drawn.
        """
        h, w = img_shape
        thresholds = (None, *self.min_ious, 0.0)  # None: leave the image uncropped
        while True:
            min_iou = thresholds[int(rng.integers(len(thresholds)))]
            if min_iou is None:
                return None
            patches, ok = self._tries(rng, h, w)
            if len(boxes):
                ok &= (box_iou(patches.float(), boxes).min(dim=1).values >= min_iou).numpy()
                ok &= centres_inside(boxes, patches).any(dim=1).numpy()
            if ok.any():
                return tuple(int(v) for v in patches[int(np.argmax(ok))]), min_iou

    def _tries(self, rng: np.random.Generator, h: int, w: int) -> tuple[torch.Tensor, np.ndarray]:
        """``NUM_TRIES`` integer patches ``Tensor[T, 4]`` (x1, y1, x2, y2) and whether each has an
        allowed aspect ratio and is not empty (bool ``[T]``)."""
        new_w = rng.uniform(self.min_crop_size * w, w, size=self.NUM_TRIES)
        new_h = rng.uniform(self.min_crop_size * h, h, size=self.NUM_TRIES)
        left = rng.uniform(0, w - new_w)
        top = rng.uniform(0, h - new_h)
        patches = np.stack([left, top, left + new_w, top + new_h], axis=1).astype(np.int64)  # truncates (all >= 0)
        ok = (new_h / new_w >= 0.5) & (new_h / new_w <= 2)
        ok &= (patches[:, 2] > patches[:, 0]) & (patches[:, 3] > patches[:, 1])
        return torch.from_numpy(patches), ok

    def crop(self, sample: Sample, patch: tuple[int, int, int, int]) -> None:
        """Crop ``sample`` in place to ``patch`` (x1, y1, x2, y2), integers inside the image."""
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
        if sample.semantic is not None:
            sample.semantic = sample.semantic[y1:y2, x1:x2].contiguous()
        sample.ignore_boxes = kept(sample.ignore_boxes, centres_inside(sample.ignore_boxes, patch))
        if sample.proposals is not None:
            p = sample.proposals
            keep = centres_inside(p[:, :4], patch)
            sample.proposals = torch.cat([kept(p[:, :4], keep), p[keep, 4:]], dim=1)
        sample.img = np.asarray(sample.img)[y1:y2, x1:x2]


def centres_inside(boxes: torch.Tensor, patches: torch.Tensor | tuple[int, int, int, int]) -> torch.Tensor:
    """Whether each xyxy box's centre lies strictly inside each patch (x1, y1, x2, y2).

    Args:
        boxes: ``Tensor[N, 4]``.
        patches: one patch (a 4-tuple) or ``Tensor[T, 4]``.

    Returns: bool ``Tensor[N]`` for one patch, ``Tensor[T, N]`` for several.
    """
    p = torch.as_tensor(patches, dtype=boxes.dtype)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    px1, py1, px2, py2 = (p[..., k, None] for k in range(4))
    return (cx > px1) & (cy > py1) & (cx < px2) & (cy < py2)
