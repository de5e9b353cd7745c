"""The data pipeline: per-sample transforms applied in order with the sample's own generator.

MMDetection's transform names and semantics (``data.train_pipeline``):

| transform | what it does | config |
|---|---|---|
| ``Resize`` | keep-ratio (or exact ``WxH``) resize | ``data.train_scale`` / ``test_scale``, ``keep_ratio`` |
| ``RandomFlip`` | horizontal flip | ``data.flip_prob`` |
| ``PhotoMetricDistortion`` | brightness, contrast, saturation, hue, channel swap | its own keys |
| ``Expand`` | paste on a larger mean-filled canvas | its own keys, ``data.mean`` |
| ``MinIoURandomCrop`` | SSD's IoU-constrained random crop | its own keys |
| ``Normalize`` | ``(pixel - mean) / std``, to ``Tensor[3, H, W]`` | ``data.mean``, ``data.std`` |
| ``Pad`` | zero padding to a multiple of the divisor | ``data.size_divisor`` |

The test (val / eval) pipeline is fixed, Resize (``data.test_scale``), Normalize, Pad: the
preprocessing a deployed graph expects (``runtime.metadata.Preprocess``).

``Pad`` is the last step and a batch step: ``dettool.data.loader.Collate`` pads each batch
bottom-right to a common size that is a multiple of ``data.size_divisor`` (what MMDetection 3's
data preprocessor does), so a sample stays unpadded and its ``img_shape`` is its image's size.

Determinism: ``CocoDetection`` makes one ``np.random.default_rng([seed, index])`` per sample
(``seed`` is a function of the run's seed and the epoch) and every transform draws from it in
pipeline order, so a sample depends only on (seed, epoch, index), whatever the worker count.
"""
from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from dettool.data.sample import Sample
from dettool.data.scale import ScaleSpec


class Transform(Protocol):
    """One pipeline step: modifies ``sample`` (in place) drawing from ``rng``, and returns it."""

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample: ...


class Pipeline:
    """Per-sample transforms in order; the last is ``Normalize`` (batch padding comes in ``Collate``).

    Args:
        transforms: the steps, each called as ``step(sample, rng)``.
    """

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = tuple(transforms)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        for transform in self.transforms:
            sample = transform(sample, rng)
        return sample

    def __repr__(self) -> str:
        return f"Pipeline({', '.join(type(t).__name__ for t in self.transforms)})"



def test_pipeline(test_scale: str, *, keep_ratio: bool, mean: Sequence[float], std: Sequence[float],
                  channel_order: str = "rgb", key: str = "test_scale") -> Pipeline:
    """The fixed test pipeline, Resize to ``test_scale`` then Normalize (Pad is ``Collate``'s):
    what ``dettool eval`` feeds a model and what a deployed model's runtime must do again.

    Args:
        test_scale: ``data.test_scale`` (``1333x800``; an exact ``WxH`` without ``keep_ratio``).
        keep_ratio, mean, std, channel_order: ``data.keep_ratio`` ... as the model was trained.
        key: how errors name ``test_scale``.
    """
    from dettool.data.geometric import Resize
    from dettool.data.photometric import Normalize

    return Pipeline([Resize(ScaleSpec.parse(test_scale, key), keep_ratio=keep_ratio),
                     Normalize(mean, std, channel_order)])
