"""ScaleSpec parsing and sampling (single, value and range multi-scale), keep-ratio sizes, flips."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dettool.data.geometric import Resize
from dettool.data.sample import Sample
from dettool.data.transforms import ScaleSpec, hflip_boxes, rescale_size
from dettool.errors import ConfigError


def test_parse_single_scale():
    spec = ScaleSpec.parse("1333x800")
    assert spec == ScaleSpec(1333, (800,), "none")
    assert spec.sample(np.random.default_rng(0)) == (1333, 800)
    assert ScaleSpec.parse(" 512 x 320 ") == ScaleSpec(512, (320,), "none")


def test_parse_value_mode():
    spec = ScaleSpec.parse("1333x[640:800:32]")
    assert spec.mode == "value" and spec.long == 1333
    assert spec.shorts == (640, 672, 704, 736, 768, 800)


def test_value_mode_samples_only_and_all_members():
    spec = ScaleSpec.parse("1333x[640:800:32]")
    rng = np.random.default_rng(0)
    draws = [spec.sample(rng) for _ in range(300)]
    assert {long for long, _ in draws} == {1333}
    assert {short for _, short in draws} == {640, 672, 704, 736, 768, 800}
    assert all(isinstance(short, int) for _, short in draws)


def test_value_mode_step_not_dividing_the_interval():
    assert ScaleSpec.parse("1000x[600:700:40]").shorts == (600, 640, 680)


def test_parse_range_mode_and_samples_within_bounds():
    spec = ScaleSpec.parse("1333x[640:800]")
    assert spec == ScaleSpec(1333, (640, 800), "range")
    rng = np.random.default_rng(0)
    shorts = [spec.sample(rng)[1] for _ in range(500)]
    assert min(shorts) >= 640 and max(shorts) <= 800
    assert len(set(shorts)) > 20
    assert all(isinstance(s, int) for s in shorts)


def test_range_mode_degenerate_interval():
    spec = ScaleSpec.parse("1333x[700:700]")
    rng = np.random.default_rng(0)
    assert {spec.sample(rng) for _ in range(10)} == {(1333, 700)}


def test_sampling_is_reproducible_with_the_same_seed():
    spec = ScaleSpec.parse("1333x[640:800]")
    a = [spec.sample(np.random.default_rng(42)) for _ in range(5)]
    b = [spec.sample(np.random.default_rng(42)) for _ in range(5)]
    assert a == b


@pytest.mark.parametrize("text", [
    "1333", "1333x", "x800", "1333*800", "1333x800x600", "abc", "", "1333x[640]", "1333x[640:800:32:1]",
    "1333x(640:800)", "-1333x800", "1333x[800:640]", "1333x[640:800:0]", "1333.5x800", "1333x[640:]",
])
def test_malformed_scales_raise_config_error(text):
    with pytest.raises(ConfigError):
        ScaleSpec.parse(text)


def test_config_error_names_the_key():
    with pytest.raises(ConfigError, match="data.train_scale"):
        ScaleSpec.parse("1333by800", "data.train_scale")


@pytest.mark.parametrize("w, h, long, short, expected", [
    (640, 480, 1333, 800, (1067, 800)),    # short side limited: factor 800 / 480
    (480, 640, 1333, 800, (800, 1067)),    # portrait: same factor
    (2000, 500, 1333, 800, (1333, 333)),   # long side limited: factor 1333 / 2000
    (1333, 800, 1333, 800, (1333, 800)),   # already at the limit
    (1000, 1000, 1333, 800, (800, 800)),   # square: the short limit wins
    (1280, 960, 640, 480, (640, 480)),     # downscaling by 2
])
def test_rescale_size_keep_ratio(w, h, long, short, expected):
    new_w, new_h, factor = rescale_size(w, h, long, short)
    assert (new_w, new_h) == expected
    assert factor == pytest.approx(min(long / max(w, h), short / min(w, h)))
    assert max(new_w, new_h) <= long and min(new_w, new_h) <= short


def test_resize_scales_image_and_boxes_with_actual_factors():
    boxes = torch.tensor([[0.0, 0.0, 64.0, 48.0], [10.0, 12.0, 20.0, 24.0]])
    sample = Sample(img=Image.new("RGB", (64, 48)), boxes=boxes, labels=torch.zeros(2, dtype=torch.int64),
                    ignore_boxes=torch.zeros((0, 4)))
    out = Resize(ScaleSpec.parse("133x80"), keep_ratio=True)(sample, np.random.default_rng(0))
    assert out.img_shape == (80, 107)  # factor 80 / 48 = 1.667: 64 -> 106.7 -> 107
    sx, sy = out.scale_factor
    assert (sx, sy) == (107 / 64, 80 / 48)
    torch.testing.assert_close(out.boxes, boxes * torch.tensor([sx, sy, sx, sy]))
    torch.testing.assert_close(out.boxes[0], torch.tensor([0.0, 0.0, 107.0, 80.0]))
    assert out.ignore_boxes.shape == (0, 4)


def test_hflip_boxes():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 40.0], [0.0, 0.0, 100.0, 5.0]])
    flipped = hflip_boxes(boxes, 100)
    torch.testing.assert_close(flipped, torch.tensor([[70.0, 20.0, 90.0, 40.0], [0.0, 0.0, 100.0, 5.0]]))
    assert (flipped[:, 2] >= flipped[:, 0]).all()
    torch.testing.assert_close(hflip_boxes(flipped, 100), boxes)  # an involution
    assert torch.equal(boxes[0], torch.tensor([10.0, 20.0, 30.0, 40.0]))  # input untouched
    assert hflip_boxes(torch.zeros((0, 4)), 100).shape == (0, 4)
