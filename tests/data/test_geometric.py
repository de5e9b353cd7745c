"""Resize (exact size), RandomFlip, Expand and MinIoURandomCrop against hand-computed expectations:
every transform moves the image, boxes, crowd boxes, masks and proposals together."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_iou

from dettool.data.geometric import Expand, MinIoURandomCrop, RandomFlip, Resize, centres_inside
from dettool.data.sample import Sample
from dettool.data.scale import ScaleSpec

MEAN = (123.675, 116.28, 103.53)


def coded_image(h: int, w: int) -> np.ndarray:
    """uint8 ``[h, w, 3]`` whose pixel (y, x) is (x % 256, y % 256, 1 + (x // 256) * 16 + y // 256): a
    pixel says where it came from (and is never the Expand fill)."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx % 256, yy % 256, 1 + (xx // 256) * 16 + yy // 256], axis=-1).astype(np.uint8)


def origin_of(img: np.ndarray, y: int, x: int) -> tuple[int, int]:
    """(y, x) in the coded image of pixel (y, x) of ``img``."""
    r, g, b = (int(v) for v in img[y, x])
    return g + ((b - 1) % 16) * 256, r + ((b - 1) // 16) * 256


def box_mask(h: int, w: int, box) -> torch.Tensor:
    m = torch.zeros((h, w), dtype=torch.uint8)
    x1, y1, x2, y2 = (int(v) for v in box)
    m[y1:y2, x1:x2] = 1
    return m


def make_sample(h: int = 120, w: int = 160, boxes=((10, 20, 50, 60), (100, 30, 150, 110), (60, 70, 90, 100)),
                ignore=((0, 0, 30, 30),), proposals: bool = True) -> Sample:
    b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    props = torch.tensor([[5, 5, 40, 40, 0.9], [70, 10, 155, 100, 0.4], [140, 100, 158, 118, 0.2]])
    masks = torch.stack([box_mask(h, w, bb) for bb in b]) if len(b) else torch.zeros((0, h, w), dtype=torch.uint8)
    return Sample(img=coded_image(h, w), boxes=b, labels=torch.arange(len(b), dtype=torch.int64),
                  ignore_boxes=torch.tensor(ignore, dtype=torch.float32).reshape(-1, 4), masks=masks,
                  proposals=props if proposals else None)


def copy_of(s: Sample) -> Sample:
    return Sample(img=np.array(s.img), boxes=s.boxes.clone(), labels=s.labels.clone(),
                  ignore_boxes=s.ignore_boxes.clone(), masks=None if s.masks is None else s.masks.clone(),
                  proposals=None if s.proposals is None else s.proposals.clone(), scale_factor=s.scale_factor,
                  flip=s.flip)


# ------------------------------------------------------------------------------------- Resize


def test_resize_without_keep_ratio_gives_the_exact_size():
    s = Resize(ScaleSpec.parse("300x200"), keep_ratio=False)(make_sample(), np.random.default_rng(0))
    assert s.img_shape == (200, 300) and np.asarray(s.img).shape == (200, 300, 3)
    sx, sy = 300 / 160, 200 / 120
    assert s.scale_factor == (sx, sy)
    expected = torch.tensor([[10 * sx, 20 * sy, 50 * sx, 60 * sy]])
    torch.testing.assert_close(s.boxes[:1], expected)
    torch.testing.assert_close(s.ignore_boxes, torch.tensor([[0.0, 0.0, 30 * sx, 30 * sy]]))
    torch.testing.assert_close(s.proposals[:, 4], torch.tensor([0.9, 0.4, 0.2]))  # scores untouched
    torch.testing.assert_close(s.proposals[0, :4], torch.tensor([5 * sx, 5 * sy, 40 * sx, 40 * sy]))
    assert s.masks.shape == (3, 200, 300)
    rows, cols = torch.nonzero(s.masks[0], as_tuple=True)  # the mask follows its box
    assert abs(int(cols.min()) - 10 * sx) <= 1 and abs(int(cols.max()) + 1 - 50 * sx) <= 1
    assert abs(int(rows.min()) - 20 * sy) <= 1 and abs(int(rows.max()) + 1 - 60 * sy) <= 1


def test_resize_refuses_a_multi_scale_without_keep_ratio():
    with pytest.raises(ValueError, match="needs keep-ratio"):
        Resize(ScaleSpec.parse("300x[200:300]"), keep_ratio=False)


def test_resize_of_a_float_image_keeps_float_values():
    s = make_sample(proposals=False)
    s.img = np.full((120, 160, 3), 100.25, dtype=np.float32)
    out = Resize(ScaleSpec.parse("80x60"), keep_ratio=True)(s, np.random.default_rng(0))
    assert out.img.dtype == np.float32 and out.img.shape == (60, 80, 3)
    np.testing.assert_allclose(out.img, 100.25, atol=1e-4)


def test_flip_of_an_array_mirrors_everything_and_twice_is_identity():
    s = make_sample()
    before = copy_of(s)
    flip = RandomFlip(1.0)
    flip(s, np.random.default_rng(0))
    assert s.flip is True
    np.testing.assert_array_equal(s.img, before.img[:, ::-1])
    torch.testing.assert_close(s.boxes[0], torch.tensor([160 - 50, 20, 160 - 10, 60.0]))
    assert torch.equal(s.masks, before.masks.flip(-1))
    torch.testing.assert_close(s.proposals[0], torch.tensor([120, 5, 155, 40, 0.9]))
    flip(s, np.random.default_rng(0))
    assert s.flip is False
    np.testing.assert_array_equal(s.img, before.img)
    assert torch.equal(s.boxes, before.boxes) and torch.equal(s.masks, before.masks)


# ------------------------------------------------------------------------------------- Expand


def test_expand_shifts_boxes_and_masks_and_fills_with_the_mean():
    expand = Expand(mean=MEAN, ratio_range=(2.0, 2.0), prob=1.0)
    s = expand(make_sample(), np.random.default_rng(4))
    img = s.img
    assert img.shape == (240, 320, 3) and img.dtype == np.uint8
    filled = np.all(img == np.array([123, 116, 103], dtype=np.uint8), axis=-1)  # the mean rounded down, RGB
    ys, xs = np.nonzero(~filled)
    top, left = int(ys.min()), int(xs.min())
    assert (ys.max() - top + 1, xs.max() - left + 1) == (120, 160)  # the image, whole
    assert filled.sum() == 240 * 320 - 120 * 160
    assert origin_of(img, top + 7, left + 9) == (7, 9)
    shift = torch.tensor([left, top, left, top], dtype=torch.float32)
    base = make_sample()
    torch.testing.assert_close(s.boxes, base.boxes + shift)
    torch.testing.assert_close(s.ignore_boxes, base.ignore_boxes + shift)
    torch.testing.assert_close(s.proposals, torch.cat([base.proposals[:, :4] + shift, base.proposals[:, 4:]], 1))
    assert s.masks.shape == (3, 240, 320)
    assert torch.equal(s.masks[:, top:top + 120, left:left + 160], base.masks) and s.masks.sum() == base.masks.sum()
    assert s.labels.tolist() == [0, 1, 2] and s.scale_factor == (1.0, 1.0)


def test_expand_fills_a_float_image_with_the_exact_mean():
    s = make_sample()
    s.img = s.img.astype(np.float32)
    out = Expand(mean=MEAN, ratio_range=(3.0, 3.0), prob=1.0)(s, np.random.default_rng(1))
    assert out.img.shape == (360, 480, 3) and out.img.dtype == np.float32
    left, top = (int(v) for v in out.boxes[0, :2] - torch.tensor([10.0, 20.0]))
    pasted = np.zeros((360, 480), dtype=bool)
    pasted[top:top + 120, left:left + 160] = True
    np.testing.assert_array_equal(out.img[~pasted], np.broadcast_to(np.float32(MEAN), ((~pasted).sum(), 3)))
    np.testing.assert_array_equal(out.img[pasted].reshape(120, 160, 3), coded_image(120, 160).astype(np.float32))


def test_expand_happens_with_its_probability_and_stays_inside_the_ratio_range():
    expand = Expand(mean=MEAN, ratio_range=(1.0, 4.0), prob=0.3)
    shapes = [expand(make_sample(h=40, w=50), np.random.default_rng(seed)).img_shape for seed in range(300)]
    expanded = [sh for sh in shapes if sh != (40, 50)]
    assert 60 <= len(expanded) <= 120  # 90 expected
    assert all(40 <= h <= 160 and 50 <= w <= 200 for h, w in shapes)
    never = Expand(mean=MEAN, ratio_range=(1.0, 4.0), prob=0.0)
    assert all(never(make_sample(), np.random.default_rng(seed)).img_shape == (120, 160) for seed in range(20))


# --------------------------------------------------------------------------- MinIoURandomCrop

CROP = MinIoURandomCrop(min_ious=(0.1, 0.3, 0.5, 0.7, 0.9), min_crop_size=0.3, bbox_clip_border=True)


def test_every_patch_meets_its_drawn_iou_threshold():
    # a cluster of boxes (one a crowd region: it counts too), so that high thresholds can be met
    s = make_sample(boxes=((40, 30, 100, 90), (50, 40, 110, 100)), ignore=((45, 35, 95, 85),))
    boxes = torch.cat([s.boxes, s.ignore_boxes])
    thresholds = []
    for seed in range(200):
        chosen = CROP.sample_patch(np.random.default_rng(seed), (120, 160), boxes)
        if chosen is None:
            thresholds.append(None)
            continue
        (x1, y1, x2, y2), min_iou = chosen
        thresholds.append(min_iou)
        assert 0 <= x1 < x2 <= 160 and 0 <= y1 < y2 <= 120
        assert x2 - x1 >= 0.3 * 160 - 1 and y2 - y1 >= 0.3 * 120 - 1
        patch = torch.tensor([[x1, y1, x2, y2]], dtype=torch.float32)
        assert box_iou(patch, boxes).min() >= min_iou
        assert centres_inside(boxes, (x1, y1, x2, y2)).any()
    assert thresholds.count(None) > 10 and {0.0, 0.1, 0.3, 0.5} <= set(thresholds)  # no crop, and several modes


def test_crop_drops_shifts_and_clips_boxes_and_crops_masks_and_image():
    s = make_sample()
    before = copy_of(s)
    patch = (40, 10, 130, 100)  # centres: box 0 (30, 40) out, box 1 (125, 70) in, box 2 (75, 85) in
    CROP.crop(s, patch)
    np.testing.assert_array_equal(s.img, before.img[10:100, 40:130])
    assert s.labels.tolist() == [1, 2]  # box 0 dropped with its label ...
    torch.testing.assert_close(s.boxes, torch.tensor([[60.0, 20, 90, 90], [20, 60, 50, 90]]))  # box 1 clipped at x=90
    assert s.masks.shape == (2, 90, 90)  # ... and its mask
    assert torch.equal(s.masks, before.masks[1:, 10:100, 40:130])
    assert s.ignore_boxes.shape == (0, 4)  # crowd box centre (15, 15) is outside
    # proposals: (22.5, 22.5) out; (112.5, 55) in, clipped; (149, 109) out
    torch.testing.assert_close(s.proposals, torch.tensor([[30.0, 0, 90, 90, 0.4]]))


def test_crop_without_clipping_keeps_boxes_beyond_the_patch():
    s = make_sample()
    MinIoURandomCrop(min_ious=(0.5,), min_crop_size=0.3, bbox_clip_border=False).crop(s, (40, 10, 130, 100))
    torch.testing.assert_close(s.boxes[0], torch.tensor([60.0, 20, 110, 100]))


def test_no_crop_mode_leaves_the_sample_as_it_is():
    crop = MinIoURandomCrop(min_ious=(), min_crop_size=0.3, bbox_clip_border=True)  # modes: no crop, 0
    untouched = 0
    for seed in range(40):
        s = make_sample()
        if crop.sample_patch(np.random.default_rng(seed), s.img_shape, torch.cat([s.boxes, s.ignore_boxes])) is None:
            out = crop(s, np.random.default_rng(seed))
            base = make_sample()
            np.testing.assert_array_equal(out.img, base.img)
            assert torch.equal(out.boxes, base.boxes) and torch.equal(out.masks, base.masks)
            assert torch.equal(out.proposals, base.proposals) and torch.equal(out.ignore_boxes, base.ignore_boxes)
            untouched += 1
    assert 10 <= untouched <= 30


def test_an_image_without_boxes_is_cropped_anyway():
    cropped = 0
    for seed in range(20):
        s = make_sample(boxes=(), ignore=(), proposals=False)
        out = CROP(s, np.random.default_rng(seed))
        assert out.boxes.shape == (0, 4) and out.labels.shape == (0,) and out.ignore_boxes.shape == (0, 4)
        assert out.masks.shape == (0, *out.img_shape)
        if out.img_shape != (120, 160):
            cropped += 1
            y0, x0 = origin_of(out.img, 0, 0)
            h, w = out.img_shape
            np.testing.assert_array_equal(out.img, coded_image(120, 160)[y0:y0 + h, x0:x0 + w])
    assert cropped >= 10  # "no crop" is one mode in seven


def test_crop_through_call_matches_its_patch():
    for seed in range(30):
        s = make_sample()
        chosen = CROP.sample_patch(np.random.default_rng(seed), s.img_shape, torch.cat([s.boxes, s.ignore_boxes]))
        out = CROP(s, np.random.default_rng(seed))
        if chosen is None:
            continue
        x1, y1, x2, y2 = chosen[0]
        assert out.img_shape == (y2 - y1, x2 - x1) and origin_of(out.img, 0, 0) == (y1, x1)
        assert out.masks.shape == (len(out.labels), y2 - y1, x2 - x1) and len(out.boxes) == len(out.labels) >= 0
        assert (out.boxes[:, 0::2] >= 0).all() and (out.boxes[:, 0::2] <= x2 - x1).all()
        assert (out.boxes[:, 1::2] >= 0).all() and (out.boxes[:, 1::2] <= y2 - y1).all()


def test_transforms_on_a_pil_image_equal_those_on_its_array():
    arr = coded_image(120, 160)
    for transform in (Resize(ScaleSpec.parse("100x75"), keep_ratio=True), RandomFlip(1.0),
                      Expand(mean=MEAN, ratio_range=(1.5, 2.5), prob=1.0), CROP):
        for seed in range(3):
            a = make_sample()
            p = make_sample()
            p.img = Image.fromarray(arr)
            a, p = transform(a, np.random.default_rng(seed)), transform(p, np.random.default_rng(seed))
            np.testing.assert_array_equal(np.asarray(a.img), np.asarray(p.img))
            assert torch.equal(a.boxes, p.boxes) and torch.equal(a.masks, p.masks)
