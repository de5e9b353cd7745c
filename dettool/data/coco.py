"""COCO-format detection dataset read through pycocotools.

Category ids (possibly non-contiguous) map to contiguous labels ``0..C-1`` and back; ``iscrowd``
annotations are kept apart as ignore boxes (MMDetection drops them from training targets);
images without annotations are kept for evaluation and skipped in training when
``filter_empty_gt``; images are decoded with EXIF orientation applied and converted to RGB.
With ``with_masks`` each non-crowd box also gets its instance mask (``dettool.data.masks``).
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from pycocotools.coco import COCO

from dettool.data.masks import check_segmentation, segmentation_to_mask
from dettool.data.pipeline import Pipeline
from dettool.data.sample import Sample
from dettool.errors import DataError


def image_to_rgb(img: Image.Image) -> Image.Image:
    """A decoded image as dettool sees it: EXIF orientation applied, then RGB (grayscale
    replicated, palette expanded, transparency composited on black)."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (0, 0, 0))
        canvas.paste(rgba, mask=rgba.split()[3])
        return canvas
    return img.convert("RGB")


def load_image(path: Path) -> Image.Image:
    """Decode an image file as RGB (``image_to_rgb``); ``DataError`` names the file."""
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        with Image.open(path) as img:
            return image_to_rgb(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot decode image ({exc})") from None


def _check_annotation_file(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: top level must be an object with images, annotations, categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: missing or malformed '{key}' list")
    image_ids = set()
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or "id" not in img or not isinstance(img.get("file_name"), str):
            raise DataError(f"{path}: images[{i}] needs 'id' and 'file_name'")
        image_ids.add(img["id"])
    cat_ids = set()
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or "id" not in cat:
            raise DataError(f"{path}: categories[{i}] needs 'id'")
        cat_ids.add(cat["id"])
    if not cat_ids:
        raise DataError(f"{path}: 'categories' is empty")
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise DataError(f"{path}: annotations[{i}] is not an object")
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            raise DataError(f"{path}: annotations[{i}] (id {ann.get('id')}): 'bbox' must be [x, y, w, h]")
        if ann.get("image_id") not in image_ids:
            raise DataError(f"{path}: annotations[{i}] (id {ann.get('id')}): unknown image_id {ann.get('image_id')!r}")
        if ann.get("category_id") not in cat_ids:
            raise DataError(f"{path}: annotations[{i}] (id {ann.get('id')}): "
                            f"unknown category_id {ann.get('category_id')!r}")
        if "id" not in ann:
            ann["id"] = i + 1  # pycocotools indexes annotations by id
    return data


def load_coco(ann_file: str | Path) -> COCO:
    """Validate and index a COCO annotation file (pycocotools' chatter silenced)."""
    path = Path(ann_file)
    data = _check_annotation_file(path)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = data
        coco.createIndex()
    return coco


class CocoDetection(torch.utils.data.Dataset):
    """COCO detection dataset yielding ``(image Tensor[3, H, W], target, meta)`` through a pipeline.

    Each image is decoded (RGB), its annotations read in original pixels, and the ``pipeline``
    (``dettool.data.pipeline``; it ends with ``Normalize``) transforms them together.
    ``target``: ``boxes`` Tensor[N, 4] xyxy in output pixels, ``labels`` Tensor[N] int64 in
    ``[0, C)``, ``ignore_boxes`` Tensor[M, 4] (crowd regions) and, with ``with_masks``,
    ``masks`` uint8 Tensor[N, H, W] in {0, 1}: one per box, same order, at the unpadded output
    size (decoded at the original size and moved with the image: resized bilinearly and
    thresholded at 0.5, flipped, expanded, cropped). ``meta``: ``image_id``, ``file_name``,
    ``ori_shape`` (h, w), ``img_shape`` (h, w) of the output, ``scale_factor`` (sx, sy) of the
    resize (see ``Sample``), ``flip`` and, with a proposals file (Fast R-CNN), ``proposals``
    Tensor[K, 5] in output pixels. With ``semantic_dir`` (Hybrid Task Cascade's semantic
    branch) ``target`` also has ``semantic``: uint8 Tensor[H, W], the image's label map
    ``<semantic_dir>/<file stem>.png`` (COCO-stuff's layout; 255 unknown) moved with the image.
    Indexing takes an int or ``(index, seed)``; the sample's generator is
    ``np.random.default_rng([seed, index])``, so augmentation is reproducible under any number
    of workers and on resume.
    """

    def __init__(self, ann_file: str | Path, img_dir: str | Path, pipeline: Pipeline,
                 filter_empty_gt: bool = False, with_masks: bool = False,
                 proposals: dict[int, torch.Tensor] | None = None,
                 category_ids: tuple[int, ...] | None = None, semantic_dir: str | Path | None = None) -> None:
        self.ann_file = Path(ann_file)
        self.semantic_dir = Path(semantic_dir) if semantic_dir is not None else None
        if self.semantic_dir is not None and not self.semantic_dir.is_dir():
            raise DataError(f"{self.semantic_dir}: semantic label map folder not found")
        self.proposals = proposals
        self.img_dir = Path(img_dir)
        self.pipeline = pipeline
        self.with_masks = with_masks
        self.coco = load_coco(self.ann_file)
        file_ids = sorted(self.coco.getCatIds())
        self.cat_ids = list(category_ids) if category_ids is not None else file_ids
        missing = sorted(set(file_ids) - set(self.cat_ids))
        if missing:
            raise DataError(f"{self.ann_file}: categories {missing} are not in data.category_ids")
        self.cat_id_to_label = {cat_id: i for i, cat_id in enumerate(self.cat_ids)}
        self.class_names = [self.coco.cats[c].get("name", str(c)) if c in self.coco.cats else "N/A"
                            for c in self.cat_ids]
        # COCOeval's category order (per-class AP): the file's categories, by id
        self.eval_class_names = [self.coco.cats[c].get("name", str(c)) for c in file_ids]
        ids = sorted(self.coco.imgs)
        if filter_empty_gt:
            ids = [i for i in ids if any(not a.get("iscrowd", 0) for a in self.coco.imgToAnns.get(i, []))]
        self.image_ids = ids
        if with_masks:
            self._check_segmentations()

    def __len__(self) -> int:
        return len(self.image_ids)

    def label_to_cat_id(self, label: int) -> int:
        return self.cat_ids[label]

    def _kept_annotations(self, image_id: int) -> list[dict]:
        """The image's annotations with a usable box (crowd included), in file order."""
        kept = []
        for ann in self.coco.imgToAnns.get(image_id, []):
            x, y, w, h = ann["bbox"]
            if w < 1 or h < 1 or ann.get("area", w * h) <= 0:
                continue
            kept.append(ann)
        return kept

    def _check_segmentations(self) -> None:
        """Fail early on a box without a usable-looking segmentation (details checked on decode)."""
        for image_id in self.image_ids:
            for ann in self._kept_annotations(image_id):
                if not ann.get("iscrowd", 0):
                    reason = check_segmentation(ann.get("segmentation"))
                    if reason is not None:
                        raise DataError(f"{self.ann_file}: annotation id {ann['id']}: {reason}")

    def annotations(self, image_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Boxes ``[N, 4]`` xyxy, labels ``[N]`` and crowd boxes ``[M, 4]`` in original pixels."""
        boxes, labels, ignore = [], [], []
        for ann in self._kept_annotations(image_id):
            x, y, w, h = ann["bbox"]
            box = [x, y, x + w, y + h]
            if ann.get("iscrowd", 0):
                ignore.append(box)
            else:
                boxes.append(box)
                labels.append(self.cat_id_to_label[ann["category_id"]])
        return (torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                torch.tensor(labels, dtype=torch.int64),
                torch.tensor(ignore, dtype=torch.float32).reshape(-1, 4))

    def instance_masks(self, image_id: int, height: int, width: int) -> torch.Tensor:
        """uint8 ``[N, height, width]`` masks of the non-crowd boxes of ``annotations``, same order.

        ``height`` and ``width`` are the decoded image's size; a missing or malformed
        segmentation is a ``DataError`` naming the annotation file and id.
        """
        masks = []
        for ann in self._kept_annotations(image_id):
            if ann.get("iscrowd", 0):
                continue
            try:
                masks.append(segmentation_to_mask(ann.get("segmentation"), height, width))
            except (ValueError, TypeError, OverflowError) as exc:
                raise DataError(f"{self.ann_file}: annotation id {ann['id']}: {exc}") from None
        if not masks:
            return torch.zeros((0, height, width), dtype=torch.uint8)
        return torch.from_numpy(np.stack(masks))

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, dict, dict]:
        index, seed = key if isinstance(key, tuple) else (key, 0)
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        img = load_image(self.img_dir / info["file_name"])
        ori_w, ori_h = img.size
        boxes, labels, ignore = self.annotations(image_id)
        sample = Sample(img=img, boxes=boxes, labels=labels, ignore_boxes=ignore,
                        masks=self.instance_masks(image_id, ori_h, ori_w) if self.with_masks else None,
                        semantic=self.semantic_map(info["file_name"], ori_h, ori_w) if self.semantic_dir else None,
                        proposals=self._proposals(image_id) if self.proposals is not None else None)
        sample = self.pipeline(sample, np.random.default_rng([seed, index]))
        if not isinstance(sample.img, torch.Tensor):
            raise TypeError(f"{self.pipeline}: a pipeline must end with Normalize (it makes the image tensor)")
        target = {"boxes": sample.boxes, "labels": sample.labels, "ignore_boxes": sample.ignore_boxes}
        if sample.masks is not None:
            target["masks"] = sample.masks
        if sample.semantic is not None:
            target["semantic"] = sample.semantic
        meta = {"image_id": image_id, "file_name": info["file_name"], "ori_shape": (ori_h, ori_w),
                "img_shape": sample.img_shape, "scale_factor": sample.scale_factor, "flip": sample.flip}
        if sample.proposals is not None:
            meta["proposals"] = sample.proposals
        return sample.img, target, meta

    def semantic_map(self, file_name: str, height: int, width: int) -> torch.Tensor:
        """The label map of image ``file_name`` (uint8 ``[height, width]``); ``DataError`` names
        a missing, undecodable or wrongly sized file."""
        path = self.semantic_dir / f"{Path(file_name).stem}.png"
        if not path.is_file():
            raise DataError(f"{path}: semantic label map not found")
        try:
            with Image.open(path) as img:
                if img.mode not in ("L", "P"):
                    raise DataError(f"{path}: a label map must be an 8-bit single-channel PNG, got mode {img.mode}")
                labels = np.asarray(img).copy()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise DataError(f"{path}: cannot decode label map ({exc})") from None
        if labels.shape != (height, width):
            raise DataError(f"{path}: label map is {labels.shape[1]}x{labels.shape[0]}, its image {width}x{height}")
        return torch.from_numpy(labels)

    def _proposals(self, image_id: int) -> torch.Tensor:
        """This image's proposals ``[K, 5]`` (original pixels + score); empty when the file has none."""
        return self.proposals.get(image_id, torch.zeros((0, 5))).float()
