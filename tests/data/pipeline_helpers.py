"""Pipelines for the data tests, built without a config."""
from __future__ import annotations

from dettool.data.geometric import RandomFlip, Resize
from dettool.data.photometric import Normalize
from dettool.data.pipeline import Pipeline
from dettool.data.scale import ScaleSpec

IDENTITY = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # mean, std: tensors hold raw pixel values


def standard_pipeline(scale: str = "1333x800", flip_prob: float = 0.0, mean=IDENTITY[0], std=IDENTITY[1],
                      keep_ratio: bool = True) -> Pipeline:
    """Resize, RandomFlip, Normalize: the default train pipeline (Pad comes at batching)."""
    return Pipeline([Resize(ScaleSpec.parse(scale), keep_ratio=keep_ratio), RandomFlip(flip_prob),
                     Normalize(mean, std)])
