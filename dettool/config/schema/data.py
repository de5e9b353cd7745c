"""Config of the data: splits, the synthetic set and the train / test pipelines."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from dettool.config.schema.common import Fraction, NonNegInt, PosInt, Section


@dataclass(frozen=True)
class SplitConfig(Section):
    """One dataset split in COCO format; ``proposals_file`` feeds Fast R-CNN."""

    ann_file: str
    img_dir: str
    proposals_file: Optional[str] = None


@dataclass(frozen=True)
class SynthConfig(Section):
    """Synthetic dataset generated into the split folders on first use (``dettool data synth``)."""

    num_train: NonNegInt = 1000
    num_val: NonNegInt = 200
    seed: int = 0


@dataclass(frozen=True)
class DataConfig(Section):
    """Data sources and the train / test pipelines.

    ``train_scale`` uses the MMDetection paper's notation: ``1333x800`` (single scale, keep ratio),
    ``1333x[640:800:32]`` (value mode: short side drawn from {640, 672, ..., 800}) or
    ``1333x[640:800]`` (range mode: short side drawn uniformly from the interval).
    """

    train: SplitConfig
    val: SplitConfig
    synth: Optional[SynthConfig] = None
    train_scale: str = "1333x800"
    test_scale: str = "1333x800"
    flip_prob: Fraction = 0.5
    mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    size_divisor: PosInt = 32
    num_workers: NonNegInt = 2
    filter_empty_gt: bool = True
