"""data.train_pipeline, data.keep_ratio and the scales in the config: what loads, what the builder
makes of it, and the one-line errors (file and dotted key) for what does not fit."""
from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest

from dettool.config import load_config
from dettool.config.schema.data import (
    DEFAULT_TRAIN_PIPELINE,
    ExpandConfig,
    MinIoURandomCropConfig,
    PadConfig,
    PhotoMetricDistortionConfig,
    TransformConfig,
)
from dettool.data.geometric import Expand, MinIoURandomCrop, RandomFlip, Resize
from dettool.data.photometric import Normalize, PhotoMetricDistortion
from dettool.errors import ConfigError
from dettool.trainer.builder.data import TRANSFORMS, build_pipeline

REPO = Path(__file__).resolve().parents[2]
SHIPPED_CONFIGS = sorted((REPO / "configs").glob("*.yaml"))

SSD_LIKE = """\
base: {base}
data:
  train_scale: 300x300
  test_scale: 300x300
  keep_ratio: false
  size_divisor: 1
  train_pipeline:
    - {{type: PhotoMetricDistortion}}
    - {{type: Expand, ratio_range: [1, 4]}}
    - {{type: MinIoURandomCrop, min_ious: [0.1, 0.3, 0.5, 0.7, 0.9], min_crop_size: 0.3}}
    - {{type: Resize}}
    - {{type: RandomFlip}}
    - {{type: Normalize}}
    - {{type: Pad}}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text.format(base=REPO / "configs" / "retinanet_r18_fpn_synth.yaml"), encoding="utf-8")
    return path


def load_error(path: Path, overrides=()) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return str(info.value)


SSD_STYLE = ("ssd", "scratchdet", "m2det")  # fixed-size input and SSD's augmentation


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_use_their_family_pipeline(path):
    """RetinaNet / R-CNN-style configs keep the default pipeline and the ratio; the SSD-style ones
    resize to an exact square and train with Expand and MinIoURandomCrop among their steps."""
    d = load_config(path).data
    steps = [type(t) for t in build_pipeline(d, train=True).transforms]
    assert [type(t) for t in build_pipeline(d, train=False).transforms] == [Resize, Normalize]
    if path.name.startswith(SSD_STYLE):
        w, h = d.test_scale.split("x")
        assert d.keep_ratio is False and w == h and d.train_scale == d.test_scale
        assert {"Expand", "MinIoURandomCrop"} <= {s.type for s in d.train_pipeline}
        return
    assert d.train_pipeline == DEFAULT_TRAIN_PIPELINE and d.keep_ratio is True
    assert steps == [Resize, RandomFlip, Normalize]


def test_an_ssd_like_pipeline_loads_with_mmdetection_defaults_and_builds(tmp_path):
    d = load_config(write(tmp_path, SSD_LIKE)).data
    assert [s.type for s in d.train_pipeline] == ["PhotoMetricDistortion", "Expand", "MinIoURandomCrop", "Resize",
                                                  "RandomFlip", "Normalize", "Pad"]
    assert d.train_pipeline[0] == PhotoMetricDistortionConfig(brightness_delta=32, contrast_range=(0.5, 1.5),
                                                              saturation_range=(0.5, 1.5), hue_delta=18)
    assert d.train_pipeline[1] == ExpandConfig(ratio_range=(1.0, 4.0), prob=0.5)
    assert d.train_pipeline[2] == MinIoURandomCropConfig()
    steps = build_pipeline(d, train=True).transforms
    assert [type(t) for t in steps] == [PhotoMetricDistortion, Expand, MinIoURandomCrop, Resize, RandomFlip, Normalize]
    assert steps[1].mean == d.mean and steps[3].keep_ratio is False and steps[4].prob == d.flip_prob
    test_steps = build_pipeline(d, train=False).transforms
    assert [type(t) for t in test_steps] == [Resize, Normalize] and test_steps[0].keep_ratio is False


def test_every_pipeline_step_has_one_builder():
    # Pad is the batch step (Collate), every other step a per-sample transform from the table
    assert set(TRANSFORMS.entries) == set(typing.get_args(TransformConfig)) - {PadConfig}


def test_train_scale_set_from_the_command_line_still_drives_resize():
    d = load_config(REPO / "configs" / "retinanet_r18_fpn_synth.yaml", ["data.train_scale=400x[200:300:50]"]).data
    resize = build_pipeline(d, train=True).transforms[0]
    assert resize.scale.shorts == (200, 250, 300) and resize.keep_ratio


def test_pipeline_set_from_the_command_line():
    d = load_config(REPO / "configs" / "retinanet_r18_fpn_synth.yaml",
                    ["data.train_pipeline=[{type: Resize}, {type: PhotoMetricDistortion, hue_delta: 9},"
                     " {type: Normalize}, {type: Pad}]"]).data
    assert d.train_pipeline[1] == PhotoMetricDistortionConfig(hue_delta=9.0)


BAD_PIPELINES = [
    ("[{type: Resize}, {type: RandomFlip}, {type: Pad}]", r"data\.train_pipeline: has no Normalize step"),
    ("[{type: RandomFlip}, {type: Normalize}, {type: Pad}]", r"data\.train_pipeline: has no Resize step"),
    ("[{type: Resize}, {type: Normalize}]", r"data\.train_pipeline: has no Pad step"),
    ("[]", r"data\.train_pipeline: has no Resize step"),
    ("[{type: Resize}, {type: Normalize}, {type: Pad}, {type: RandomFlip}]",
     r"data\.train_pipeline\[2\]: Pad must be the last step"),
    ("[{type: Normalize}, {type: Resize}, {type: Pad}]",
     r"data\.train_pipeline\[0\]: Normalize must come right before Pad"),
    ("[{type: Resize}, {type: Normalize}, {type: RandomFlip}, {type: Pad}]",
     r"data\.train_pipeline\[1\]: Normalize must come right before Pad"),
    ("[{type: Resize}, {type: RandomFlip}, {type: RandomFlip}, {type: Normalize}, {type: Pad}]",
     r"data\.train_pipeline\[2\]: RandomFlip is already step \[1\]"),
    ("[{type: Resize}, {type: Resize}, {type: Normalize}, {type: Pad}]",
     r"data\.train_pipeline\[1\]: Resize is already step \[0\]"),
    ("[{type: Resize}, {type: RandomFlipp}, {type: Normalize}, {type: Pad}]",
     r"data\.train_pipeline\[1\]\.type: 'RandomFlipp' is not one of .*did you mean 'RandomFlip'"),
    ("[{type: Resize}, {type: Expand, ratio: 2}, {type: Normalize}, {type: Pad}]",
     r"data\.train_pipeline\[1\]\.ratio: unknown key \(did you mean 'ratio_range'\?\)"),
    ("[{type: Resize}, {type: Expand, prob: 1.5}, {type: Normalize}, {type: Pad}]",
     r"data\.train_pipeline\[1\]\.prob: must be >= 0 and <= 1"),
    ("[{type: Resize}, {type: Expand, ratio_range: [4, 2]}, {type: Normalize}, {type: Pad}]",
     r"data\.train_pipeline\[1\]\.ratio_range: min must not exceed max"),
    ("[{type: Resize}, {type: Expand, ratio_range: [0.5, 2]}, {type: Normalize}, {type: Pad}]",
     r"data\.train_pipeline\[1\]\.ratio_range\[0\]: must be >= 1"),
    ("[{type: MinIoURandomCrop, min_ious: [0.5, 1.2]}, {type: Resize}, {type: Normalize}, {type: Pad}]",
     r"data\.train_pipeline\[0\]\.min_ious\[1\]: must be >= 0 and <= 1"),
    ("[{type: MinIoURandomCrop, min_crop_size: 0}, {type: Resize}, {type: Normalize}, {type: Pad}]",
     r"data\.train_pipeline\[0\]\.min_crop_size: must be > 0 and <= 1"),
    ("[{type: PhotoMetricDistortion, contrast_range: [1.5, 0.5]}, {type: Resize}, {type: Normalize}, {type: Pad}]",
     r"data\.train_pipeline\[0\]\.contrast_range: low must not exceed high"),
    ("[{type: Resize, scale: 300x300}, {type: Normalize}, {type: Pad}]",
     r"data\.train_pipeline\[0\]\.scale: unknown key"),
]


@pytest.mark.parametrize("pipeline,match", BAD_PIPELINES)
def test_a_bad_pipeline_is_one_error_naming_file_and_key(tmp_path, pipeline, match):
    escaped = pipeline.replace("{", "{{").replace("}", "}}")  # write() formats the text
    path = write(tmp_path, "base: {base}\ndata:\n  train_pipeline: " + escaped + "\n")
    message = load_error(path)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert re.search(match, message), message


@pytest.mark.parametrize("overrides,match", [
    (["data.keep_ratio=false", "data.train_scale=1333x[640:800:32]"],
     r"data\.train_scale: '1333x\[640:800:32\]' is a value-mode multi-scale, which needs keep_ratio: true"),
    (["data.keep_ratio=false", "data.train_scale=300x300", "data.test_scale=1333x[640:800]"],
     r"data\.test_scale: '1333x\[640:800\]' is a range-mode multi-scale, which needs keep_ratio: true"),
    (["data.train_scale=1333by800"], r"data\.train_scale: '1333by800' is not a scale like 1333x800"),
    (["data.test_scale=1333x0"], r"data\.test_scale: .1333x0.: sizes must be positive"),
])
def test_scale_errors_are_read_with_the_config(overrides, match):
    path = REPO / "configs" / "retinanet_r18_fpn_synth.yaml"
    message = load_error(path, overrides)
    assert message.startswith(f"{path}: ")
    assert re.search(match, message), message


def test_multi_scale_with_keep_ratio_still_loads():
    d = load_config(REPO / "configs" / "retinanet_r18_fpn_synth.yaml", ["data.train_scale=1333x[640:800]"]).data
    assert d.keep_ratio and d.train_scale == "1333x[640:800]"
