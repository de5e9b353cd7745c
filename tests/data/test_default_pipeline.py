"""The default train pipeline (Resize, RandomFlip, Normalize, Pad) and the fixed test pipeline give
exactly the samples of the hard-coded pipeline they replaced (kept here as the oracle)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dettool.config.schema.data import DEFAULT_TRAIN_PIPELINE, DataConfig, SplitConfig
from dettool.data.coco import CocoDetection, load_image
from dettool.data.masks import resize_masks
from dettool.data.scale import ScaleSpec, rescale_size
from dettool.trainer.builder.data import build_pipeline

# ----------------------------------------------------------------------------------- the oracle
# dettool/data/coco.py's CocoDetection.__getitem__ and its helpers as they were before the pipeline
# became configurable (commit ca4ecfe), unchanged but for taking the dataset as an argument.


def _old_resize(img, boxes, long, short):
    w, h = img.size
    new_w, new_h, _ = rescale_size(w, h, long, short)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.BILINEAR)
    sx, sy = new_w / w, new_h / h
    if boxes.numel():
        boxes = boxes * torch.tensor([sx, sy, sx, sy], dtype=boxes.dtype)
    return img, boxes, (sx, sy)


def _old_hflip_boxes(boxes, width):
    if not boxes.numel():
        return boxes
    flipped = boxes.clone()
    flipped[:, 0] = width - boxes[:, 2]
    flipped[:, 2] = width - boxes[:, 0]
    return flipped


def _old_to_normalized_tensor(img, mean, std):
    arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float()
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (arr - m) / s


def old_getitem(ds: CocoDetection, scale: ScaleSpec, flip_prob: float, mean, std, key):
    index, seed = key if isinstance(key, tuple) else (key, 0)
    image_id = ds.image_ids[index]
    info = ds.coco.imgs[image_id]
    img = load_image(ds.img_dir / info["file_name"])
    boxes, labels, ignore = ds.annotations(image_id)
    rng = np.random.default_rng([seed, index])
    long, short = scale.sample(rng)
    ori_w, ori_h = img.size
    n, m = boxes.shape[0], ignore.shape[0]
    masks = ds.instance_masks(image_id, ori_h, ori_w) if ds.with_masks else None
    props = ds._proposals(image_id) if ds.proposals is not None else torch.zeros((0, 5))
    img, both, (sx, sy) = _old_resize(img, torch.cat([boxes, ignore, props[:, :4]]), long, short)
    flip = bool(flip_prob > 0 and rng.random() < flip_prob)
    if flip:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
        both = _old_hflip_boxes(both, img.size[0])
    tensor = _old_to_normalized_tensor(img, mean, std)
    target = {"boxes": both[:n], "labels": labels, "ignore_boxes": both[n:n + m]}
    if masks is not None:
        masks = resize_masks(masks, img.size[1], img.size[0])
        target["masks"] = masks.flip(-1) if flip else masks
    meta = {"image_id": image_id, "file_name": info["file_name"], "ori_shape": (ori_h, ori_w),
            "img_shape": (tensor.shape[1], tensor.shape[2]), "scale_factor": (sx, sy), "flip": flip}
    if ds.proposals is not None:
        meta["proposals"] = torch.cat([both[n + m:], props[:, 4:]], dim=1)
    return tensor, target, meta


# ------------------------------------------------------------------------------------- helpers


def data_config(root, **kw) -> DataConfig:
    split = SplitConfig(str(root / "annotations" / "train.json"), str(root / "train"))
    return DataConfig(train=split, val=split, **kw)


def proposals_for(ds: CocoDetection) -> dict[int, torch.Tensor]:
    """Random proposals (some beyond the image, one image without any) per image id."""
    g = torch.Generator().manual_seed(0)
    out = {}
    for image_id in ds.image_ids[1:]:
        xy = torch.rand(7, 2, generator=g) * 300 - 20
        wh = torch.rand(7, 2, generator=g) * 120 + 1
        out[image_id] = torch.cat([xy, xy + wh, torch.rand(7, 1, generator=g)], dim=1)
    return out


def assert_same_sample(new, old) -> None:
    (img, target, meta), (img0, target0, meta0) = new, old
    assert torch.equal(img, img0)
    assert target.keys() == target0.keys()
    for key in target0:
        assert target[key].dtype == target0[key].dtype and torch.equal(target[key], target0[key]), key
    assert meta.keys() == meta0.keys()
    for key in meta0:
        if key == "proposals":
            assert torch.equal(meta[key], meta0[key])
        else:
            assert meta[key] == meta0[key] and type(meta[key]) is type(meta0[key]), key


@pytest.mark.parametrize("scale,flip_prob", [("320x256", 0.5), ("1333x[160:320:16]", 0.5), ("400x[100:300]", 0.7),
                                             ("200x150", 0.0), ("300x200", 1.0)])
def test_default_train_pipeline_equals_the_old_samples(tiny_synth, scale, flip_prob):
    d = data_config(tiny_synth, train_scale=scale, flip_prob=flip_prob, mean=(120.0, 110.0, 100.0),
                    std=(50.0, 60.0, 70.0))
    assert d.train_pipeline == DEFAULT_TRAIN_PIPELINE
    ds = CocoDetection(d.train.ann_file, d.train.img_dir, build_pipeline(d, train=True), filter_empty_gt=True,
                       with_masks=True)
    ds.proposals = proposals_for(ds)
    flips = set()
    for seed in (0, 7, 100003 * 5 + 3):
        for index in (0, 3, 8, len(ds) - 1):
            new = ds[(index, seed)]
            assert_same_sample(new, old_getitem(ds, ScaleSpec.parse(scale), flip_prob, d.mean, d.std, (index, seed)))
            flips.add(new[2]["flip"])
    assert new[1]["masks"].shape[0] == new[1]["boxes"].shape[0] and "proposals" in new[2]
    if flip_prob == 0.5:
        assert flips == {False, True}  # both branches compared


def test_test_pipeline_equals_the_old_samples(tiny_synth):
    d = data_config(tiny_synth, test_scale="1333x[200:260:20]", flip_prob=0.5)
    ds = CocoDetection(d.train.ann_file, d.train.img_dir, build_pipeline(d, train=False))
    for index in range(len(ds)):
        new = ds[(index, 11)]
        assert new[2]["flip"] is False
        assert_same_sample(new, old_getitem(ds, ScaleSpec.parse(d.test_scale), 0.0, d.mean, d.std, (index, 11)))


def test_without_masks_and_proposals_the_sample_has_neither(tiny_synth):
    d = data_config(tiny_synth, train_scale="320x256")
    ds = CocoDetection(d.train.ann_file, d.train.img_dir, build_pipeline(d, train=True))
    new = ds[(2, 5)]
    assert "masks" not in new[1] and "proposals" not in new[2]
    assert_same_sample(new, old_getitem(ds, ScaleSpec.parse("320x256"), d.flip_prob, d.mean, d.std, (2, 5)))


def test_bgr_order_reaches_normalize_and_the_expand_fill():
    """Caffe-style data: mean / std given in BGR order; Normalize feeds BGR, Expand's canvas (an
    RGB image) is filled with the mean in RGB order."""
    from dettool.config.schema.data import ExpandConfig, NormalizeConfig, PadConfig, ResizeConfig

    split = SplitConfig(ann_file="a.json", img_dir="img")
    d = DataConfig(train=split, val=split, channel_order="bgr", mean=(103.53, 116.28, 123.675), std=(1.0, 1.0, 1.0),
                   train_pipeline=(ExpandConfig(), ResizeConfig(), NormalizeConfig(), PadConfig()))
    expand, _, normalize = build_pipeline(d, train=True).transforms
    assert expand.mean == (123.675, 116.28, 103.53)
    assert (normalize.channel_order, normalize.mean) == ("bgr", (103.53, 116.28, 123.675))
