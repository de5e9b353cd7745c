"""PhotoMetricDistortion and its NumPy HSV conversions: pixels change, nothing else does; values
stay valid pixels; the draws are a function of the sample's generator."""
from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch

from dettool.data.photometric import Normalize, PhotoMetricDistortion, hsv_to_rgb, rgb_to_hsv
from dettool.data.sample import Sample

MMDET_DEFAULTS = dict(brightness_delta=32.0, contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5), hue_delta=18.0)


def sample_of(img: np.ndarray) -> Sample:
    h, w = img.shape[:2]
    return Sample(img=img, boxes=torch.tensor([[1.0, 2.0, 10.0, 12.0]]), labels=torch.tensor([3]),
                  ignore_boxes=torch.tensor([[0.0, 0.0, 4.0, 4.0]]), masks=torch.ones((1, h, w), dtype=torch.uint8),
                  proposals=torch.tensor([[1.0, 1.0, 5.0, 5.0, 0.5]]), scale_factor=(1.5, 2.0), flip=True)


def random_image(seed: int, h: int = 24, w: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_rgb_to_hsv_matches_colorsys():
    rgb = np.random.default_rng(0).uniform(0, 255, size=(500, 3)).astype(np.float32)
    rgb[:8] = [[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [9, 9, 9],
               [0, 255, 255]]
    hsv = rgb_to_hsv(rgb)
    expected = np.array([colorsys.rgb_to_hsv(*(px / 255)) for px in rgb.astype(np.float64)])
    hue_error = (hsv[:, 0] / 360 - expected[:, 0] + 0.5) % 1 - 0.5  # hue is circular
    assert np.abs(hue_error).max() < 1e-5
    np.testing.assert_allclose(hsv[:, 1], expected[:, 1], atol=1e-5)
    np.testing.assert_allclose(hsv[:, 2], expected[:, 2] * 255, atol=1e-3)
    assert hsv.dtype == np.float32 and (hsv[:, 0] >= 0).all() and (hsv[:, 0] < 360).all()


def test_hsv_round_trip_and_hue_rotation():
    rgb = np.random.default_rng(1).uniform(0, 255, size=(20, 30, 3)).astype(np.float32)
    np.testing.assert_allclose(hsv_to_rgb(rgb_to_hsv(rgb)), rgb, atol=1e-3)
    red = rgb_to_hsv(np.array([[255.0, 0.0, 0.0]], dtype=np.float32))
    for shift, expected in ((120, [0, 255, 0]), (240, [0, 0, 255]), (-120, [0, 0, 255]), (480, [0, 255, 0])):
        np.testing.assert_allclose(hsv_to_rgb(red + np.float32([shift, 0, 0]))[0], expected, atol=1e-3)


@pytest.mark.parametrize("seed", range(12))
def test_only_pixels_change_and_they_stay_valid(seed):
    img = random_image(seed)
    s = PhotoMetricDistortion(**MMDET_DEFAULTS)(sample_of(img), np.random.default_rng(seed))
    assert s.img.dtype == np.float32 and s.img.shape == img.shape
    assert s.img.min() >= 0 and s.img.max() <= 255
    ref = sample_of(img)
    for key in ("boxes", "labels", "ignore_boxes", "masks", "proposals"):
        assert torch.equal(getattr(s, key), getattr(ref, key)), key
    assert (s.scale_factor, s.flip) == ((1.5, 2.0), True)


def test_the_same_generator_gives_the_same_distortion():
    transform = PhotoMetricDistortion(**MMDET_DEFAULTS)
    img = random_image(0)
    outs = [transform(sample_of(img), np.random.default_rng([7, 3])).img for _ in range(2)]
    np.testing.assert_array_equal(outs[0], outs[1])
    others = [transform(sample_of(img), np.random.default_rng([7, k])).img for k in range(4, 10)]
    assert any(not np.array_equal(outs[0], o) for o in others)


def test_a_gray_image_gets_brightness_and_contrast_as_hand_computed():
    # gray has no saturation, so saturation, hue and channel order leave it gray: the output is
    # clip(clip(100 + delta) * alpha) with the steps the coins pick, whatever their order
    transform = PhotoMetricDistortion(**MMDET_DEFAULTS)
    seen = set()
    for seed in range(40):
        rng = np.random.default_rng(seed)
        _, brightness, contrast, *_ = rng.integers(2, size=6)  # the draws, in their documented order
        delta, alpha = rng.uniform(-32, 32), rng.uniform(0.5, 1.5)
        expected = np.float32(100)
        if brightness:
            expected = np.clip(expected + np.float32(delta), 0, 255)
        if contrast:
            expected = np.clip(expected * np.float32(alpha), 0, 255)
        out = transform(sample_of(np.full((8, 8, 3), 100, dtype=np.uint8)), np.random.default_rng(seed)).img
        np.testing.assert_allclose(out, expected, rtol=1e-5)
        seen.add((bool(brightness), bool(contrast)))
    assert len(seen) == 4


def test_contrast_saturates_at_white():
    transform = PhotoMetricDistortion(brightness_delta=0.0, contrast_range=(1.5, 1.5), saturation_range=(1.0, 1.0),
                                      hue_delta=0.0)
    light = np.full((4, 4, 3), 250, dtype=np.uint8)
    outs = [transform(sample_of(light), np.random.default_rng(seed)).img for seed in range(8)]
    assert {float(o.max()) for o in outs} == {250.0, 255.0}  # contrast off or on, never above 255


def test_normalize_makes_the_chw_tensor():
    img = random_image(3)
    s = Normalize((10.0, 20.0, 30.0), (2.0, 4.0, 8.0))(sample_of(img), np.random.default_rng(0))
    assert isinstance(s.img, torch.Tensor) and s.img.shape == (3, 24, 32) and s.img_shape == (24, 32)
    pixels = torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)
    expected = (pixels - torch.tensor([10.0, 20, 30]).view(3, 1, 1)) / torch.tensor([2.0, 4, 8]).view(3, 1, 1)
    torch.testing.assert_close(s.img, expected)


def test_normalize_in_bgr_order_reverses_the_channels_first():
    img = random_image(4)
    s = Normalize((30.0, 20.0, 10.0), (8.0, 4.0, 2.0), "bgr")(sample_of(img), np.random.default_rng(0))
    pixels = torch.from_numpy(img[..., ::-1].astype(np.float32)).permute(2, 0, 1)  # B, G, R
    expected = (pixels - torch.tensor([30.0, 20, 10]).view(3, 1, 1)) / torch.tensor([8.0, 4, 2]).view(3, 1, 1)
    torch.testing.assert_close(s.img, expected)
