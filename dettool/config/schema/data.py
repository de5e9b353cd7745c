"""Config of the data: splits, the synthetic set and the train / test pipelines."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, Optional, Union

from dettool.config.schema.common import (
    Fraction,
    Invalid,
    NonNegFloat,
    NonNegInt,
    PosFloat,
    PosInt,
    Range,
    Section,
    require,
)
from dettool.data import synth
from dettool.data.scale import ScaleSpec


@dataclass(frozen=True)
class SplitConfig(Section):
    """One dataset split in COCO format; ``proposals_file`` feeds Fast R-CNN; ``seg_dir``, the
    folder of semantic label maps (``<image stem>.png``; COCO: ``stuffthingmaps/train2017``), feeds
    Hybrid Task Cascade's semantic branch (read for training only)."""

    ann_file: str
    img_dir: str
    proposals_file: Optional[str] = None
    seg_dir: Optional[str] = None


@dataclass(frozen=True)
class SynthConfig(Section):
    """Synthetic dataset generated into the split folders on first use (``dettool data synth``).

    ``image_width`` / ``image_height`` / ``object_size``: (min, max) in pixels; ``category_ids``:
    the COCO ids of box, disc, triangle and cross. The defaults are the original dataset's
    (``dettool.data.synth``); other values (and another ``seed``) give a held-out set.
    ``semantic``: also write each image's semantic label map (``stuffthingmaps/<split>/``; the
    images stay the same, so it can be switched on for a dataset already there).
    """

    num_train: NonNegInt = 1000
    num_val: NonNegInt = 200
    seed: int = 0
    image_width: tuple[PosInt, PosInt] = synth.IMAGE_W
    image_height: tuple[PosInt, PosInt] = synth.IMAGE_H
    object_size: tuple[PosFloat, PosFloat] = synth.OBJECT_SIZE
    category_ids: tuple[PosInt, PosInt, PosInt, PosInt] = synth.SynthOptions().category_ids
    semantic: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("image_width", "image_height", "object_size"):
            lo, hi = getattr(self, key)
            require(lo <= hi, key, f"min must not exceed max, got {[lo, hi]}")
        for key in ("image_width", "image_height"):
            lo, hi = getattr(self, key)
            require(lo >= 8, key, f"images need at least 8 pixels a side, got {[lo, hi]}")
        require(len(set(self.category_ids)) == len(self.category_ids), "category_ids",
                f"ids must differ, got {list(self.category_ids)}")

    def options(self) -> synth.SynthOptions:
        """The generator's options (everything but the seed and the split sizes)."""
        return synth.SynthOptions(image_width=self.image_width, image_height=self.image_height,
                                  object_size=self.object_size, category_ids=self.category_ids)


# ------------------------------------------------------------------------------ pipeline steps
#
# Named as MMDetection names its transforms. The four standard steps take no keys of their own:
# what they do is set by data.* keys that deployment reads too (one place for each setting).


@dataclass(frozen=True)
class ResizeConfig(Section):
    """Resize to ``data.train_scale`` (``data.test_scale`` at test time), keeping the aspect ratio
    unless ``data.keep_ratio`` is false (then the scale ``WxH`` is the exact output size)."""

    type: Literal["Resize"] = "Resize"


@dataclass(frozen=True)
class RandomFlipConfig(Section):
    """Horizontal flip with probability ``data.flip_prob``."""

    type: Literal["RandomFlip"] = "RandomFlip"


@dataclass(frozen=True)
class NormalizeConfig(Section):
    """``(pixel - data.mean) / data.std`` per channel, channels in ``data.channel_order`` (``bgr``
    for caffe-style models; ``data.mean`` / ``data.std`` are given in that order)."""

    type: Literal["Normalize"] = "Normalize"


@dataclass(frozen=True)
class PadConfig(Section):
    """Zero padding bottom-right to a multiple of ``data.size_divisor`` (done per batch)."""

    type: Literal["Pad"] = "Pad"


FactorRange = tuple[NonNegFloat, NonNegFloat]


@dataclass(frozen=True)
class PhotoMetricDistortionConfig(Section):
    """Random brightness (+- ``brightness_delta``), contrast, saturation (factors drawn from the
    ranges), hue (+- ``hue_delta`` degrees) and channel order, each on a coin flip."""

    type: Literal["PhotoMetricDistortion"] = "PhotoMetricDistortion"
    brightness_delta: Annotated[float, Range(0, 255)] = 32.0
    contrast_range: FactorRange = (0.5, 1.5)
    saturation_range: FactorRange = (0.5, 1.5)
    hue_delta: Annotated[float, Range(0, 180)] = 18.0

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("contrast_range", "saturation_range"):
            lo, hi = getattr(self, key)
            require(lo <= hi, key, f"low must not exceed high, got {[lo, hi]}")


ExpandRatio = Annotated[float, Range(min=1)]


@dataclass(frozen=True)
class ExpandConfig(Section):
    """With probability ``prob``, paste the image on a ``data.mean``-filled canvas ``ratio`` times
    its size, ``ratio`` drawn from ``ratio_range``."""

    type: Literal["Expand"] = "Expand"
    ratio_range: tuple[ExpandRatio, ExpandRatio] = (1.0, 4.0)
    prob: Fraction = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.ratio_range[0] <= self.ratio_range[1], "ratio_range",
                f"min must not exceed max, got {list(self.ratio_range)}")


@dataclass(frozen=True)
class MinIoURandomCropConfig(Section):
    """SSD's random crop: a patch whose IoU with every box reaches a threshold drawn from
    ``min_ious`` (or no crop, or any patch), sides at least ``min_crop_size`` of the image's."""

    type: Literal["MinIoURandomCrop"] = "MinIoURandomCrop"
    min_ious: tuple[Fraction, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
    min_crop_size: Annotated[float, Range(0, 1, min_inclusive=False)] = 0.3
    bbox_clip_border: bool = True


TransformConfig = Union[ResizeConfig, RandomFlipConfig, PhotoMetricDistortionConfig, ExpandConfig,
                        MinIoURandomCropConfig, NormalizeConfig, PadConfig]

DEFAULT_TRAIN_PIPELINE: tuple[TransformConfig, ...] = (ResizeConfig(), RandomFlipConfig(), NormalizeConfig(),
                                                       PadConfig())
# The test (val / eval) pipeline is fixed: the preprocessing deployed graphs expect (runtime.metadata.Preprocess).
TEST_PIPELINE: tuple[TransformConfig, ...] = (ResizeConfig(), NormalizeConfig(), PadConfig())


@dataclass(frozen=True)
class DataConfig(Section):
    """Data sources and the train / test pipelines.

    ``train_scale`` uses the MMDetection paper's notation: ``1333x800`` (single scale, keep ratio),
    ``1333x[640:800:32]`` (value mode: short side drawn from {640, 672, ..., 800}) or
    ``1333x[640:800]`` (range mode: short side drawn uniformly from the interval). With
    ``keep_ratio: false`` (SSD) a scale is the exact output size ``WxH`` (``300x300``) and the
    multi-scale modes are refused.

    ``train_pipeline``: the training transforms in order, MMDetection's names (``{type: Resize}``,
    ...); ``Resize``, ``Normalize`` and ``Pad`` once each, ``Normalize`` then ``Pad`` last, no
    step twice. The test pipeline is fixed (``TEST_PIPELINE``: Resize to ``test_scale``,
    Normalize, Pad), the preprocessing deployed graphs expect.

    ``category_ids``: the dataset category id of each class index (default: the annotation
    file's ids, sorted); a torchvision COCO model's 90 or 91 classes name COCO's ids 1-90 with
    gaps (``dettool convert torchvision`` writes them).
    """

    train: SplitConfig
    val: SplitConfig
    synth: Optional[SynthConfig] = None
    train_scale: str = "1333x800"
    test_scale: str = "1333x800"
    keep_ratio: bool = True
    train_pipeline: tuple[TransformConfig, ...] = DEFAULT_TRAIN_PIPELINE
    flip_prob: Fraction = 0.5
    channel_order: Literal["rgb", "bgr"] = "rgb"
    mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    size_divisor: PosInt = 32
    category_ids: Optional[tuple[int, ...]] = None
    num_workers: NonNegInt = 2
    filter_empty_gt: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("train_scale", "test_scale"):
            _check_scale(key, getattr(self, key), self.keep_ratio)
        _check_pipeline("train_pipeline", self.train_pipeline)


def _check_scale(key: str, text: str, keep_ratio: bool) -> None:
    try:
        scale = ScaleSpec.from_text(text)
    except ValueError as exc:
        raise Invalid(key, str(exc)) from None
    require(keep_ratio or scale.mode == "none", key,
            f"{text!r} is a {scale.mode}-mode multi-scale, which needs keep_ratio: true (with keep_ratio: false "
            f"the scale is the exact output size WxH, e.g. 300x300)")


def _check_pipeline(key: str, steps: tuple[TransformConfig, ...]) -> None:
    """Each step at most once; Resize, Normalize and Pad present; Normalize then Pad last."""
    names = [step.type for step in steps]
    for i, name in enumerate(names):
        require(name not in names[:i], f"{key}[{i}]",
                f"{name} is already step [{names.index(name)}]; each step may appear once")
    for name in ("Resize", "Normalize", "Pad"):
        require(name in names, key, f"has no {name} step (got {names}); a pipeline needs Resize, Normalize "
                                    f"and Pad, ending with Normalize, Pad")
    require(names[-1] == "Pad", f"{key}[{names.index('Pad')}]", f"Pad must be the last step (got {names})")
    require(names[-2] == "Normalize", f"{key}[{names.index('Normalize')}]",
            f"Normalize must come right before Pad, at the end (got {names})")
