"""Deterministic synthetic COCO dataset: coloured shapes on textured backgrounds.

Each image holds 0-6 objects of four categories (non-contiguous COCO ids, to exercise the id
mapping). Each shape is painted through the mask pycocotools decodes from the polygon written
to the JSON, so the annotation's mask, area and box are exactly the painted pixels. Boxes may
overlap (IoU up to ``MAX_BOX_IOU``) while shapes stay pixel-disjoint, so the
polygon masks are exact. Every 40th file name has a space and non-ASCII letters.

``SynthOptions`` (the ``data.synth`` keys) give a held-out set from the same generator: other
image and object size ranges and other category ids; their defaults write the original dataset
byte for byte.

Semantic label maps (Hybrid Task Cascade's semantic branch; ``write_semantic_maps``, opt-in) are
PNGs beside the images in ``stuffthingmaps/<split>/``, one per image with its stem: the
background's stuff is split by the sign of its stripes (``STUFF_LABELS``: 0 where the stripe
wave is positive, 1 elsewhere) and each object's pixels carry ``2 + its shape index`` (box,
disc, triangle, cross: 2-5); they are derived from the same draws, so the images do not change.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

CATEGORIES = [
    {"id": 1, "name": "box", "supercategory": "shape"},
    {"id": 3, "name": "disc", "supercategory": "shape"},
    {"id": 7, "name": "triangle", "supercategory": "shape"},
    {"id": 12, "name": "cross", "supercategory": "shape"},
]
# Class-specific hue centres (degrees) keep colour a cue but not a perfect one: ranges overlap.
_HUES = {1: 0.0, 3: 110.0, 7: 220.0, 12: 300.0}
MAX_BOX_IOU = 0.35
STUFF_LABELS = ("stripe crest", "stripe trough")  # semantic labels 0 and 1; the shapes follow
NUM_SEMANTIC_CLASSES = len(STUFF_LABELS) + len(CATEGORIES)
IMAGE_W = (224, 320)
IMAGE_H = (176, 256)
OBJECT_SIZE = (20, 110)


@dataclass(frozen=True)
class SynthOptions:
    """What a synthetic dataset looks like, apart from its seed and split sizes.

    Args:
        image_width, image_height: (min, max) image size in pixels, both inclusive.
        object_size: (min, max) of an object's size in pixels (drawn log-uniformly, then split
            by an aspect ratio in [e^-0.5, e^0.5]).
        category_ids: the COCO ids of box, disc, triangle and cross, in that order.
    """

    image_width: tuple[int, int] = IMAGE_W
    image_height: tuple[int, int] = IMAGE_H
    object_size: tuple[float, float] = OBJECT_SIZE
    category_ids: tuple[int, int, int, int] = tuple(c["id"] for c in CATEGORIES)

    def categories(self) -> list[dict]:
        """The COCO ``categories`` entries, ids from ``category_ids``."""
        return [{**c, "id": i} for c, i in zip(CATEGORIES, self.category_ids)]


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    h = (h % 360.0) / 60.0
    c = v * s
    x = c * (1 - abs(h % 2 - 1))
    r, g, b = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(h) % 6]
    m = v - c
    return tuple(int(round(255 * (t + m))) for t in (r, g, b))


def _background(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Low-saturation texture: gradient + stripes + blotchy noise, uint8 [h, w, 3]; and the
    stripe wave's sign, the stuff labels (uint8 [h, w]: 0 crest, 1 trough)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(60, 190, size=3).astype(np.float32)
    grad = rng.uniform(-0.25, 0.25, size=(2, 3)).astype(np.float32)
    img = base + xx[..., None] * grad[0] + yy[..., None] * grad[1]
    angle = rng.uniform(0, math.pi)
    period = rng.uniform(6, 30)
    stripes = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period)
    img += stripes[..., None] * rng.uniform(5, 25)
    coarse = rng.normal(0, 18, size=(h // 16 + 2, w // 16 + 2, 3)).astype(np.float32)
    coarse = np.kron(coarse, np.ones((16, 16, 1), dtype=np.float32))[:h, :w]
    img += coarse + rng.normal(0, 6, size=(h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8), (stripes < 0).astype(np.uint8)


def _shape_polygon(rng: np.random.Generator, cat_id: int, cx: float, cy: float, w: float,
                   h: float) -> list[tuple[float, float]]:
    if cat_id == 1:  # box, slightly rotated
        a = rng.uniform(-0.3, 0.3)
        pts = [(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)]
        return [(cx + x * math.cos(a) - y * math.sin(a), cy + x * math.sin(a) + y * math.cos(a)) for x, y in pts]
    if cat_id == 3:  # disc (ellipse as a 32-gon)
        return [(cx + w / 2 * math.cos(t), cy + h / 2 * math.sin(t))
                for t in np.linspace(0, 2 * math.pi, 32, endpoint=False)]
    if cat_id == 7:  # triangle, apex up or down
        s = 1 if rng.random() < 0.5 else -1
        return [(cx, cy - s * h / 2), (cx + w / 2, cy + s * h / 2), (cx - w / 2, cy + s * h / 2)]
    t = rng.uniform(0.28, 0.4)  # cross: arm thickness as a fraction of the size
    hw, hh, tw, th = w / 2, h / 2, w * t / 2, h * t / 2
    return [(cx - tw, cy - hh), (cx + tw, cy - hh), (cx + tw, cy - th), (cx + hw, cy - th),
            (cx + hw, cy + th), (cx + tw, cy + th), (cx + tw, cy + hh), (cx - tw, cy + hh),
            (cx - tw, cy + th), (cx - hw, cy + th), (cx - hw, cy - th), (cx - tw, cy - th)]


def _raster(poly: list[tuple[float, float]], h: int, w: int) -> np.ndarray:
    """The polygon rasterised exactly as pycocotools decodes it from the JSON: bool [h, w]."""
    flat = [round(c, 2) for p in poly for c in p]
    rle = mask_utils.merge(mask_utils.frPyObjects([flat], h, w))
    return mask_utils.decode(rle).astype(bool)


def _box_iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def make_image(rng: np.random.Generator, options: SynthOptions = SynthOptions()) -> tuple[np.ndarray, list[dict]]:
    """One synthetic image uint8 [H, W, 3] and its objects (category_id, polygon, bbox xyxy)."""
    pixels, objects, _ = make_image_and_semantic(rng, options)
    return pixels, objects


def make_image_and_semantic(rng: np.random.Generator, options: SynthOptions = SynthOptions()
                            ) -> tuple[np.ndarray, list[dict], np.ndarray]:
    """``make_image`` plus its semantic label map uint8 [H, W] (see the module's docstring)."""
    w = int(rng.integers(options.image_width[0], options.image_width[1] + 1))
    h = int(rng.integers(options.image_height[0], options.image_height[1] + 1))
    min_size, max_size = options.object_size
    pixels, semantic = _background(rng, h, w)
    occupied = np.zeros((h, w), dtype=bool)
    objects: list[dict] = []
    target = 0 if rng.random() < 0.03 else int(rng.integers(1, 7))
    for _ in range(target * 12):
        if len(objects) >= target:
            break
        shape = int(rng.integers(len(CATEGORIES)))
        cat = CATEGORIES[shape]["id"]  # the shape; the written id is options.category_ids[shape]
        size = float(np.exp(rng.uniform(math.log(min_size), math.log(max_size))))
        aspect = float(np.exp(rng.uniform(-0.5, 0.5)))
        ow, oh = min(size * aspect, w - 4), min(size / aspect, h - 4)
        cx = rng.uniform(ow / 2 + 1, w - ow / 2 - 1)
        cy = rng.uniform(oh / 2 + 1, h - oh / 2 - 1)
        poly = _shape_polygon(rng, cat, cx, cy, ow, oh)
        xs, ys = [p[0] for p in poly], [p[1] for p in poly]
        box = [max(0.0, min(xs)), max(0.0, min(ys)), min(float(w), max(xs) + 1), min(float(h), max(ys) + 1)]
        if any(_box_iou(box, o["box"]) > MAX_BOX_IOU for o in objects):
            continue
        mask = _raster(poly, h, w)
        grown = mask.copy()  # one pixel of margin keeps shapes visually separate
        grown[1:] |= mask[:-1]
        grown[:-1] |= mask[1:]
        grown[:, 1:] |= mask[:, :-1]
        grown[:, :-1] |= mask[:, 1:]
        if (grown & occupied).any() or mask.sum() < 30:
            continue
        occupied |= mask
        hue = _HUES[cat] + rng.uniform(-35, 35)
        color = _hsv_to_rgb(hue, rng.uniform(0.55, 1.0), rng.uniform(0.45, 1.0))
        pixels[mask] = color  # paint exactly the mask pycocotools will decode from the polygon
        semantic[mask] = len(STUFF_LABELS) + shape
        rows, cols = np.nonzero(mask)
        box = [float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)]
        objects.append({"category_id": options.category_ids[shape], "polygon": poly, "box": box,
                        "area": float(mask.sum())})
    return pixels, objects, semantic


def image_file_name(index: int) -> str:
    """The file name of image ``index`` of a split (every 40th with a space and non-ASCII letters)."""
    return f"bild ü {index:06d}.jpg" if index % 40 == 7 else f"{index:06d}.jpg"


def _split_seed(seed: int, split: str) -> int:
    return seed * 1000 + (0 if split == "train" else 1)


def semantic_dir(out_dir: Path, split: str) -> Path:
    """Where ``write_semantic_maps`` puts a split's label maps (COCO-stuff's layout)."""
    return Path(out_dir) / "stuffthingmaps" / split


def write_semantic_maps(out_dir: Path, split: str, num_images: int, seed: int,
                        options: SynthOptions = SynthOptions()) -> Path:
    """Write the label map of each image of a split (``<stem>.png``, 8-bit grey) under
    ``semantic_dir``; the images themselves are not touched. Returns the folder."""
    folder = semantic_dir(out_dir, split)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(num_images):
        _, _, semantic = make_image_and_semantic(np.random.default_rng([_split_seed(seed, split), i]), options)
        target = folder / f"{Path(image_file_name(i)).stem}.png"
        tmp = target.with_name(target.name + ".tmp")
        Image.fromarray(semantic, mode="L").save(tmp, format="PNG")
        os.replace(tmp, target)
    return folder


def write_split(out_dir: Path, split: str, num_images: int, seed: int,
                options: SynthOptions = SynthOptions()) -> Path:
    """Write ``out_dir/split/*.jpg`` and ``out_dir/annotations/split.json``; returns the JSON path."""
    img_dir = out_dir / split
    ann_dir = out_dir / "annotations"
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    split_seed = _split_seed(seed, split)
    images, annotations = [], []
    for i in range(num_images):
        rng = np.random.default_rng([split_seed, i])
        pixels, objects = make_image(rng, options)
        name = image_file_name(i)
        Image.fromarray(pixels).save(img_dir / name, quality=92)
        images.append({"id": i + 1, "file_name": name, "height": int(pixels.shape[0]), "width": int(pixels.shape[1])})
        for obj in objects:
            x1, y1, x2, y2 = obj["box"]
            annotations.append({
                "id": len(annotations) + 1, "image_id": i + 1, "category_id": obj["category_id"],
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": obj["area"], "iscrowd": 0,
                "segmentation": [[round(c, 2) for p in obj["polygon"] for c in p]],
            })
    ann_path = ann_dir / f"{split}.json"
    tmp = ann_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"info": {"description": f"dettool synthetic {split}", "seed": seed},
                               "images": images, "annotations": annotations,
                               "categories": options.categories()}))
    os.replace(tmp, ann_path)  # the JSON appears last, so its presence means the split is complete
    return ann_path


def generate(out_dir: str | Path, num_train: int, num_val: int, seed: int = 0,
             options: SynthOptions = SynthOptions()) -> dict[str, Path]:
    """Generate train and val splits under ``out_dir``; deterministic in ``seed`` and ``options``."""
    out_dir = Path(out_dir)
    return {"train": write_split(out_dir, "train", num_train, seed, options),
            "val": write_split(out_dir, "val", num_val, seed, options)}
