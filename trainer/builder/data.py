"""Data configs -> pipelines, datasets (generating the synthetic one on first use) and data loaders."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from dettool.config import schema as S
from dettool.config.schema import data as D
from dettool.data.coco import CocoDetection
from dettool.data.geometric import Expand, MinIoURandomCrop, RandomFlip, Resize
from dettool.data.loader import Collate, EpochSampler
from dettool.data.photometric import Normalize, PhotoMetricDistortion
from dettool.data.pipeline import Pipeline, Transform, test_pipeline
from dettool.data.proposals import load_proposals
from dettool.data.scale import ScaleSpec
from dettool.errors import ConfigError, DataError
from dettool.trainer.builder.table import Table

SYNTH_STAMP = "synth.json"  # beside annotations/: the data.synth settings the folder was generated with


def ensure_synthetic(cfg: S.DataConfig) -> None:
    """Generate the synthetic dataset where the config asks for it and its files are missing.

    The settings are stamped into ``<root>/synth.json``; a dataset already there that was
    generated with other ``data.synth`` settings is refused (it would be reused silently).
    ``data.synth.semantic`` is not one of them: the label maps are written beside the images
    where they are missing (``ensure_semantic_maps``)."""
    if cfg.synth is None:
        return
    from dataclasses import asdict

    from dettool.data.synth import generate
    from dettool.io import atomic_write_bytes

    train_ann, val_ann = Path(cfg.train.ann_file), Path(cfg.val.ann_file)
    root = train_ann.parent.parent
    wanted = json.loads(json.dumps(asdict(cfg.synth)))  # tuples as lists, as the stamp reads back
    wanted.pop("semantic")
    stamp = root / SYNTH_STAMP
    if cfg.synth.semantic:
        for split, sc in (("train", cfg.train), ("val", cfg.val)):
            _check_seg_dir(root, split, sc)
    if train_ann.is_file() and val_ann.is_file():
        if stamp.is_file():
            try:
                made = json.loads(stamp.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise DataError(f"{stamp}: unreadable ({exc}); delete it or the dataset folder") from None
            differ = [k for k in wanted if made.get(k) != wanted[k]]
            if differ:
                k = differ[0]
                raise ConfigError(f"data.synth.{k}: {root} was generated with {k}={made.get(k)}, the config asks for "
                                  f"{wanted[k]}; point data.train / data.val at another folder or delete {root}")
        ensure_semantic_maps(cfg.synth, root)
        return
    expected = {"train": (root / "annotations" / "train.json", root / "train"),
                "val": (root / "annotations" / "val.json", root / "val")}
    for split, sc in (("train", cfg.train), ("val", cfg.val)):
        if (Path(sc.ann_file), Path(sc.img_dir)) != expected[split]:
            raise ConfigError(f"data.{split}: synthetic data lives at {expected[split][0]} and {expected[split][1]}; "
                              f"got {sc.ann_file} and {sc.img_dir}")
    print(f"dettool: generating the synthetic dataset in {root} (first use)", flush=True)
    generate(root, cfg.synth.num_train, cfg.synth.num_val, cfg.synth.seed, cfg.synth.options())
    atomic_write_bytes(json.dumps(wanted, indent=1).encode(), stamp)
    ensure_semantic_maps(cfg.synth, root)


def _check_seg_dir(root: Path, split: str, sc: D.SplitConfig) -> None:
    from dettool.data.synth import semantic_dir

    if sc.seg_dir is not None and Path(sc.seg_dir) != semantic_dir(root, split):
        raise ConfigError(f"data.{split}.seg_dir: the synthetic label maps live at {semantic_dir(root, split)}; "
                          f"got {sc.seg_dir}")


def ensure_semantic_maps(synth: D.SynthConfig, root: Path) -> None:
    """With ``data.synth.semantic``, write each split's label maps where the last one is missing
    (they are written in order, each file atomically)."""
    if not synth.semantic:
        return
    from dettool.data.synth import image_file_name, semantic_dir, write_semantic_maps

    for split, count in (("train", synth.num_train), ("val", synth.num_val)):
        if count and not (semantic_dir(root, split) / f"{Path(image_file_name(count - 1)).stem}.png").is_file():
            print(f"dettool: writing the synthetic semantic label maps of {root}/{split} (first use)", flush=True)
            write_semantic_maps(root, split, count, synth.seed, synth.options())


def has_masks(cfg: S.Config) -> bool:
    """Whether the model predicts instance masks."""
    return isinstance(cfg.model, S.TwoStageConfig) and getattr(cfg.model.roi_head, "mask_head", None) is not None


def has_semantic(cfg: S.Config) -> bool:
    """Whether the model trains a semantic segmentation branch (Hybrid Task Cascade's)."""
    return isinstance(cfg.model, S.TwoStageConfig) and getattr(cfg.model.roi_head, "semantic_head", None) is not None


def _resize(cfg: D.ResizeConfig, d: D.DataConfig, scale: ScaleSpec) -> Resize:
    return Resize(scale, keep_ratio=d.keep_ratio)


def _random_flip(cfg: D.RandomFlipConfig, d: D.DataConfig, scale: ScaleSpec) -> RandomFlip:
    return RandomFlip(d.flip_prob)


def _photo_metric_distortion(cfg: D.PhotoMetricDistortionConfig, d: D.DataConfig,
                             scale: ScaleSpec) -> PhotoMetricDistortion:
    return PhotoMetricDistortion(brightness_delta=cfg.brightness_delta, contrast_range=cfg.contrast_range,
                                 saturation_range=cfg.saturation_range, hue_delta=cfg.hue_delta)


def _expand(cfg: D.ExpandConfig, d: D.DataConfig, scale: ScaleSpec) -> Expand:
    fill = d.mean if d.channel_order == "rgb" else d.mean[::-1]  # the canvas is an RGB image
    return Expand(mean=fill, ratio_range=cfg.ratio_range, prob=cfg.prob)


def _min_iou_random_crop(cfg: D.MinIoURandomCropConfig, d: D.DataConfig, scale: ScaleSpec) -> MinIoURandomCrop:
    return MinIoURandomCrop(min_ious=cfg.min_ious, min_crop_size=cfg.min_crop_size,
                            bbox_clip_border=cfg.bbox_clip_border)


def _normalize(cfg: D.NormalizeConfig, d: D.DataConfig, scale: ScaleSpec) -> Normalize:
    return Normalize(d.mean, d.std, d.channel_order)


# Per-sample steps. Pad is the batch step: build_dataloader's Collate pads to data.size_divisor.
TRANSFORMS = Table("data pipeline step", {
    D.ResizeConfig: _resize, D.RandomFlipConfig: _random_flip, D.PhotoMetricDistortionConfig: _photo_metric_distortion,
    D.ExpandConfig: _expand, D.MinIoURandomCropConfig: _min_iou_random_crop, D.NormalizeConfig: _normalize})


def build_pipeline(d: D.DataConfig, train: bool) -> Pipeline:
    """The per-sample transforms of ``data.train_pipeline`` (``train``) or the fixed test pipeline
    (``dettool.data.pipeline.test_pipeline``: Resize to ``data.test_scale``, Normalize), Pad left to batching."""
    if not train:
        return test_pipeline(d.test_scale, keep_ratio=d.keep_ratio, mean=d.mean, std=d.std,
                             channel_order=d.channel_order, key="data.test_scale")
    scale, steps, key = ScaleSpec.parse(d.train_scale, "data.train_scale"), d.train_pipeline, "data.train_pipeline"
    transforms: list[Transform] = [TRANSFORMS.build(step, d, scale, key=f"{key}[{i}]")
                                   for i, step in enumerate(steps) if not isinstance(step, D.PadConfig)]
    return Pipeline(transforms)


def build_dataset(cfg: S.Config, split: str, augment: bool | None = None) -> CocoDetection:
    """``split`` is 'train' (augmented, empty images filtered, masks loaded for mask models) or
    'val'; ``augment=False`` reads the train split as a test set (no augmentation, no filtering)."""
    d = cfg.data
    ensure_synthetic(d)
    sc = d.train if split == "train" else d.val
    augment = split == "train" if augment is None else augment
    pipeline = build_pipeline(d, train=augment)
    if not Path(sc.img_dir).is_dir():
        raise DataError(f"{sc.img_dir}: image folder not found (data.{split}.img_dir)")
    fast_rcnn = isinstance(cfg.model, S.TwoStageConfig) and cfg.model.rpn_head is None
    proposals = load_proposals(sc.proposals_file) if sc.proposals_file and fast_rcnn else None
    if fast_rcnn and proposals is None:
        raise ConfigError(f"data.{split}.proposals_file: required when model.rpn_head is null (Fast R-CNN)")
    semantic = augment and has_semantic(cfg)
    if semantic and sc.seg_dir is None:
        raise ConfigError(f"data.{split}.seg_dir: required to train the semantic head (model.roi_head.semantic_head)")
    ds = CocoDetection(sc.ann_file, sc.img_dir, pipeline, filter_empty_gt=augment and d.filter_empty_gt,
                       with_masks=augment and has_masks(cfg), proposals=proposals, category_ids=d.category_ids,
                       semantic_dir=sc.seg_dir if semantic else None)
    if len(ds.cat_ids) != cfg.model.num_classes:
        raise ConfigError(f"model.num_classes: {cfg.model.num_classes} but "
                          + (f"data.category_ids has {len(ds.cat_ids)}" if d.category_ids is not None
                             else f"{sc.ann_file} has {len(ds.cat_ids)} categories"))
    if len(ds) == 0:
        raise DataError(f"{sc.ann_file}: no usable images")
    return ds


def build_dataloader(cfg: S.Config, dataset: CocoDetection, train: bool, rank: int = 0, world_size: int = 1,
                     batch_size: int | None = None) -> torch.utils.data.DataLoader:
    sampler = EpochSampler(len(dataset), shuffle=train, seed=cfg.train.seed, rank=rank, world_size=world_size)
    workers = cfg.data.num_workers
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size or (cfg.train.batch_size if train else 1), sampler=sampler,
        num_workers=workers, collate_fn=Collate(cfg.data.size_divisor), drop_last=False,
        persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None)
