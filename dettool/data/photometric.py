"""Pixel-value transforms, named as MMDetection's: PhotoMetricDistortion and Normalize.

They change pixel values only (never geometry, boxes or masks). ``rgb_to_hsv`` / ``hsv_to_rgb``
are OpenCV's float conversions written in NumPy (OpenCV is not a dependency).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from dettool.data.sample import Sample
from dettool.data.transforms import to_normalized_tensor


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """float32 RGB ``[..., 3]`` with values in [0, 255] -> HSV ``[..., 3]`` as OpenCV's
    ``COLOR_RGB2HSV`` on float images: H in degrees [0, 360), S in [0, 1], V = max(R, G, B)."""
    r, g, b = np.moveaxis(rgb, -1, 0).astype(np.float32)  # contiguous planes: strided math is slow
    v = np.maximum(np.maximum(r, g), b)
    chroma = v - np.minimum(np.minimum(r, g), b)
    s = chroma / np.where(v > 0, v, 1)
    scale = 60 / np.where(chroma > 0, chroma, 1)
    h = np.where(v == r, (g - b) * scale, np.where(v == g, 120 + (b - r) * scale, 240 + (r - g) * scale))
    h = np.where(chroma > 0, h, 0)  # (np.where and arithmetic: boolean-mask assignment is slow)
    h += np.float32(360) * (h < 0)
    return np.stack([h, s, v], axis=-1)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Inverse of ``rgb_to_hsv`` (OpenCV's ``COLOR_HSV2RGB`` on float images): H in degrees
    (taken modulo 360), S in [0, 1], V in [0, 255] -> float32 RGB ``[..., 3]`` in [0, V].

    Channel ``c`` is ``v - v * s * clip(min(k, 4 - k), 0, 1)`` with ``k = (n_c + h / 60) mod 6``
    and ``n = (5, 3, 1)`` for R, G, B: the six-sector formula without branches.
    """
    h6, s, v = np.moveaxis(hsv, -1, 0).astype(np.float32)
    h6 /= 60
    h6 -= 6 * np.floor(h6 / 6)  # into [0, 6]; np.mod is ten times slower
    vs = v * s
    channels = []
    for n in (5, 3, 1):
        k = n + h6
        k -= np.float32(6) * (k >= 6)
        channels.append(v - vs * np.clip(np.minimum(k, 4 - k), 0, 1))
    return np.stack(channels, axis=-1)


class PhotoMetricDistortion:
    """Random brightness, contrast, saturation, hue and channel order (MMDetection's
    ``PhotoMetricDistortion``, in its order, each step on a fair coin).

    1. brightness: add ``U(-brightness_delta, brightness_delta)``;
    2. contrast, when drawn to come first: multiply by ``U(*contrast_range)``;
    3. in HSV: saturation times ``U(*saturation_range)`` (clipped to [0, 1]), hue plus
       ``U(-hue_delta, hue_delta)`` degrees (wrapped);
    4. contrast, when drawn to come last;
    5. a random permutation of the channels.

    The image becomes float32 ``[H, W, 3]``. MMDetection lets values leave [0, 255] (and feeds
    negative ones to the HSV conversion); dettool clips to [0, 255] after the brightness and
    contrast steps, as a camera would saturate, so every value stays a valid pixel. Draws, always
    and in this order: the contrast position and five coins, then the brightness delta, contrast
    factor, saturation factor, hue shift and the channel permutation.

    Args:
        brightness_delta: largest brightness shift, in pixel values.
        contrast_range: ``(low, high)`` contrast factors.
        saturation_range: ``(low, high)`` saturation factors.
        hue_delta: largest hue shift, in degrees.
    """

    def __init__(self, *, brightness_delta: float, contrast_range: tuple[float, float],
                 saturation_range: tuple[float, float], hue_delta: float) -> None:
        self.brightness_delta = brightness_delta
        self.contrast_range = contrast_range
        self.saturation_range = saturation_range
        self.hue_delta = hue_delta

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        contrast_first, brightness, contrast, saturation, hue, swap = (bool(c) for c in rng.integers(2, size=6))
        delta = rng.uniform(-self.brightness_delta, self.brightness_delta)
        alpha = rng.uniform(*self.contrast_range)
        saturation_factor = rng.uniform(*self.saturation_range)
        hue_shift = rng.uniform(-self.hue_delta, self.hue_delta)
        order = rng.permutation(3)

        img = np.array(sample.img, dtype=np.float32)
        if brightness:
            img = np.clip(img + np.float32(delta), 0, 255)
        if contrast and contrast_first:
            img = np.clip(img * np.float32(alpha), 0, 255)
        if saturation or hue:  # the HSV round trip alone changes nothing (up to rounding): skip it
            hsv = rgb_to_hsv(img)
            if saturation:
                hsv[..., 1] = np.clip(hsv[..., 1] * np.float32(saturation_factor), 0, 1)
            if hue:
                hue_plane = hsv[..., 0]  # a view: updated in place
                hue_plane += np.float32(hue_shift)
                hue_plane -= 360 * np.floor(hue_plane / 360)  # wrap into [0, 360); np.mod is ten times slower
            img = hsv_to_rgb(hsv)
        if contrast and not contrast_first:
            img = np.clip(img * np.float32(alpha), 0, 255)
        if swap:
            img = img[..., order]
        sample.img = img
        return sample


class Normalize:
    """``(pixel - mean) / std`` per channel, and the image becomes float32 ``Tensor[3, H, W]`` in
    ``channel_order`` (MMDetection's ``Normalize``: ``to_rgb`` for 'rgb'; caffe-style models take
    'bgr'; dettool decodes RGB). Draws nothing.

    Args:
        mean, std: per channel, in ``channel_order`` (``data.mean``, ``data.std``).
        channel_order: 'rgb' or 'bgr' (``data.channel_order``).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], channel_order: str = "rgb") -> None:
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.channel_order = channel_order

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        sample.img = to_normalized_tensor(sample.img, self.mean, self.std, self.channel_order)
        return sample
