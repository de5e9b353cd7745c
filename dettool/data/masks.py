"""Instance masks from COCO ``segmentation`` fields: decode, check, resize.

A segmentation is a list of polygons ``[[x1, y1, x2, y2, ...], ...]``, an uncompressed RLE
``{"counts": [int, ...], "size": [h, w]}`` or a compressed RLE ``{"counts": str, "size": [h, w]}``.
All three decode through pycocotools (as ``COCO.annToMask`` does) at the original image size.
pycocotools trusts an RLE's counts (counts summing to less than ``h * w`` leave pixels
uninitialised), so RLEs are checked here first and a bad one is a ``ValueError`` with the reason;
``CocoDetection`` turns it into a ``DataError`` naming the file and annotation id.

Resizing follows the image exactly: PIL bilinear (antialiased when shrinking) on the 0/255 mask,
then a 0.5 threshold, so mask edges land on the same pixels as the image's edges.
"""
from __future__ import annotations

import math
from numbers import Real

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils


def check_segmentation(segm: object) -> str | None:
    """Cheap structural check of a ``segmentation`` field: ``None`` when usable, else the reason."""
    if segm is None:
        return "no 'segmentation' (needed for instance masks)"
    if isinstance(segm, list):
        if not segm:
            return "'segmentation' is an empty list"
        if not all(isinstance(p, list) for p in segm):
            return "'segmentation' must be a list of polygons [[x1, y1, x2, y2, ...], ...] or an RLE dict"
        return None
    if isinstance(segm, dict):
        if "counts" not in segm or "size" not in segm:
            return "'segmentation' RLE needs 'counts' and 'size'"
        if not isinstance(segm["counts"], (list, str, bytes)):
            return "'segmentation' RLE 'counts' must be a list of ints or a string"
        return None
    return f"'segmentation' must be a list of polygons or an RLE dict, not {type(segm).__name__}"


def _rle_string_counts(s: str) -> list[int]:
    """Run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString`` in Python)."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            if p >= len(s):
                raise ValueError("'segmentation' RLE string is truncated")
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"'segmentation' RLE string has an invalid character {s[p]!r}")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]  # counts after the second are coded as differences
        counts.append(x)
    return counts


def _rle_from_dict(segm: dict, height: int, width: int) -> dict:
    size = segm["size"]
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) for v in size)):
        raise ValueError(f"'segmentation' RLE 'size' must be [h, w], got {size!r}")
    if list(size) != [height, width]:
        raise ValueError(f"'segmentation' RLE size {list(size)} does not match the image ({height} x {width})")
    raw = segm["counts"]
    if isinstance(raw, list):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in raw):
            raise ValueError("'segmentation' RLE 'counts' must be integers")
        counts = raw
    else:
        text = raw.decode("ascii", errors="replace") if isinstance(raw, bytes) else raw
        counts = _rle_string_counts(text)
    if any(v < 0 for v in counts) or sum(counts) != height * width:
        raise ValueError(f"'segmentation' RLE counts must be non-negative and sum to h * w = {height * width}, "
                         f"got sum {sum(counts)}")
    if isinstance(raw, list):
        return mask_utils.frPyObjects({"counts": raw, "size": [height, width]}, height, width)
    return {"counts": raw.encode("ascii") if isinstance(raw, str) else raw, "size": [height, width]}


def _rle_from_polygons(polygons: list, height: int, width: int) -> dict | None:
    kept = []
    for poly in polygons:
        if not all(isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v) for v in poly):
            raise ValueError("'segmentation' polygon coordinates must be finite numbers")
        if len(poly) % 2:
            raise ValueError(f"'segmentation' polygon has an odd number of coordinates ({len(poly)})")
        if len(poly) >= 6:  # fewer than 3 points has no area; pycocotools would read 4 values as a box
            kept.append([float(v) for v in poly])
    if not kept:
        return None
    return mask_utils.merge(mask_utils.frPyObjects(kept, height, width))


def segmentation_to_mask(segm: object, height: int, width: int) -> np.ndarray:
    """Decode one annotation's ``segmentation`` at the original image size.

    Args:
        segm: polygons, uncompressed RLE or compressed RLE (see the module docstring).
        height, width: the decoded image's size; an RLE must have exactly this ``size``.

    Returns:
        ``uint8 [height, width]`` in {0, 1}. Polygons with fewer than 3 points are skipped (as
        MMDetection does); an annotation holding only such polygons gives an all-zero mask.

    Raises:
        ValueError: the segmentation is missing or malformed (the message says how).
    """
    reason = check_segmentation(segm)
    if reason is not None:
        raise ValueError(reason)
    rle = _rle_from_dict(segm, height, width) if isinstance(segm, dict) else _rle_from_polygons(segm, height, width)
    if rle is None:
        return np.zeros((height, width), dtype=np.uint8)
    return np.ascontiguousarray(mask_utils.decode(rle), dtype=np.uint8)


def resize_masks(masks: torch.Tensor, new_h: int, new_w: int) -> torch.Tensor:
    """Resize ``uint8 [N, H, W]`` {0, 1} masks to ``[N, new_h, new_w]``: PIL bilinear, then >= 0.5."""
    if masks.shape[1:] == (new_h, new_w):
        return masks
    if masks.shape[0] == 0:
        return masks.new_zeros((0, new_h, new_w))
    out = []
    for m in masks.numpy():
        img = Image.fromarray(m * np.uint8(255)).resize((new_w, new_h), Image.BILINEAR)
        out.append(np.asarray(img) >= 128)
    return torch.from_numpy(np.stack(out).astype(np.uint8))


def resize_label_map(labels: torch.Tensor, new_h: int, new_w: int) -> torch.Tensor:
    """Resize a uint8 ``[H, W]`` label map to ``[new_h, new_w]`` by nearest neighbour (PIL's)."""
    if labels.shape == (new_h, new_w):
        return labels
    img = Image.fromarray(labels.numpy()).resize((new_w, new_h), Image.NEAREST)
    return torch.from_numpy(np.asarray(img).copy())
