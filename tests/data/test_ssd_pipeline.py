"""An SSD-like pipeline end to end through CocoDetection on the tiny synthetic set, and resume
determinism: a sample is a function of (seed, epoch, index), whatever the number of workers."""
from __future__ import annotations

import math

import pytest
import torch

from dettool.config.schema.data import (
    DataConfig,
    ExpandConfig,
    MinIoURandomCropConfig,
    NormalizeConfig,
    PadConfig,
    PhotoMetricDistortionConfig,
    RandomFlipConfig,
    ResizeConfig,
    SplitConfig,
)
from dettool.data.coco import CocoDetection
from dettool.data.loader import Collate, EpochSampler
from dettool.trainer.builder.data import build_pipeline

SSD_PIPELINE = (PhotoMetricDistortionConfig(), ExpandConfig(), MinIoURandomCropConfig(), ResizeConfig(),
                RandomFlipConfig(), NormalizeConfig(), PadConfig())


def ssd_dataset(root, with_masks: bool = True) -> CocoDetection:
    split = SplitConfig(str(root / "annotations" / "train.json"), str(root / "train"))
    d = DataConfig(train=split, val=split, train_scale="300x300", test_scale="300x300", keep_ratio=False,
                   size_divisor=1, train_pipeline=SSD_PIPELINE)
    ds = CocoDetection(split.ann_file, split.img_dir, build_pipeline(d, train=True), filter_empty_gt=True,
                       with_masks=with_masks)
    g = torch.Generator().manual_seed(1)
    ds.proposals = {i: torch.cat([torch.rand(6, 2, generator=g) * 150, torch.rand(6, 2, generator=g) * 150 + 150,
                                  torch.rand(6, 1, generator=g)], dim=1) for i in ds.image_ids}
    return ds


def test_ssd_pipeline_gives_300x300_images_with_consistent_boxes_and_masks(tiny_synth):
    ds = ssd_dataset(tiny_synth)
    sizes, kept = set(), 0
    for seed in range(3):
        for index in range(len(ds)):
            image, target, meta = ds[(index, seed)]
            assert image.shape == (3, 300, 300) and image.dtype == torch.float32 and meta["img_shape"] == (300, 300)
            boxes, masks = target["boxes"], target["masks"]
            assert len(boxes) == len(target["labels"]) == len(masks) and masks.shape[1:] == (300, 300)
            assert ((boxes >= 0) & (boxes <= 300)).all() and (boxes[:, 2:] > boxes[:, :2]).all()
            for mask, (x1, y1, x2, y2) in zip(masks, boxes.tolist()):  # each mask lies in its box
                rows, cols = torch.nonzero(mask, as_tuple=True)
                if len(rows):
                    assert cols.min() >= math.floor(x1) - 2 and cols.max() + 1 <= math.ceil(x2) + 2
                    assert rows.min() >= math.floor(y1) - 2 and rows.max() + 1 <= math.ceil(y2) + 2
            assert meta["proposals"].shape[1] == 5 and len(meta["proposals"]) <= 6
            sizes.add(meta["scale_factor"])
            kept += len(boxes)
    assert len(sizes) > 5 and kept > 0  # Expand and the crop change the scale from sample to sample
    batch = Collate(1)([ds[(0, 0)], ds[(1, 0)]])
    assert batch[0].shape == (2, 3, 300, 300) and batch[2][0]["pad_shape"] == (300, 300)


def test_the_same_seed_epoch_and_index_give_the_same_sample(tiny_synth):
    ds = ssd_dataset(tiny_synth)
    for index in (0, 5):
        a, b = ds[(index, 17)], ds[(index, 17)]
        assert torch.equal(a[0], b[0])
        for key in a[1]:
            assert torch.equal(a[1][key], b[1][key])
        assert torch.equal(a[2].pop("proposals"), b[2].pop("proposals")) and a[2] == b[2]


def epoch_batches(ds: CocoDetection, epoch: int, num_workers: int) -> list:
    sampler = EpochSampler(len(ds), shuffle=True, seed=3)
    sampler.set_epoch(epoch)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, sampler=sampler, num_workers=num_workers,
                                         collate_fn=Collate(1))
    return list(loader)


def same_batches(xs: list, ys: list) -> bool:
    for (img_a, tgt_a, meta_a), (img_b, tgt_b, meta_b) in zip(xs, ys, strict=True):
        if not torch.equal(img_a, img_b):
            return False
        for ta, tb in zip(tgt_a, tgt_b, strict=True):
            if any(not torch.equal(ta[k], tb[k]) for k in ta):
                return False
        for ma, mb in zip(meta_a, meta_b, strict=True):
            if ma.keys() != mb.keys() or not torch.equal(ma["proposals"], mb["proposals"]):
                return False
            if any(ma[k] != mb[k] for k in ma if k != "proposals"):
                return False
    return True


@pytest.mark.timeout(300)
def test_resume_sees_the_same_augmented_batches_under_0_and_2_workers(tiny_synth):
    ds = ssd_dataset(tiny_synth)
    serial = epoch_batches(ds, epoch=2, num_workers=0)
    assert same_batches(serial, epoch_batches(ds, epoch=2, num_workers=2))
    assert same_batches(serial, epoch_batches(ds, epoch=2, num_workers=0))
    assert not same_batches(serial, epoch_batches(ds, epoch=3, num_workers=0))  # the epoch reseeds the augmentation
