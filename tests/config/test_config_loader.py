"""YAML -> typed Config: base inheritance, --set overrides and the errors a user sees."""
from __future__ import annotations

from pathlib import Path

import pytest

from dettool.config import load_config
from dettool.config.loader import parse_overrides
from dettool.config.schema import Config, FCOSHeadConfig, RetinaHeadConfig
from dettool.data.transforms import ScaleSpec
from dettool.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SHIPPED_CONFIGS = sorted((REPO / "configs").glob("*.yaml"))

MINIMAL = """\
model:
  num_classes: 3
  backbone: {depth: 18, norm: bn}
  bbox_head:
    type: retina
    feat_channels: 64
    anchor: {strides: [8, 16, 32, 64, 128], ratios: [0.5, 1.0, 2.0]}
data:
  train: {ann_file: a/train.json, img_dir: a/train}
  val: {ann_file: a/val.json, img_dir: a/val}
train:
  max_epochs: 12
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def base_file(tmp_path) -> Path:
    return write(tmp_path / "base.yaml", MINIMAL)


def load_error(path: Path, overrides=()) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return str(info.value)


# ----------------------------------------------------------------------------------- inheritance


def test_base_relative_path_inherits_and_overrides_nested_keys(tmp_path, base_file):
    child = write(tmp_path / "sub" / "child.yaml", """\
base: ../base.yaml
model:
  backbone: {depth: 34}
  bbox_head: {feat_channels: 32}
train: {batch_size: 4}
""")
    cfg = load_config(child)
    assert isinstance(cfg, Config)
    assert cfg.model.backbone.depth == 34
    assert cfg.model.backbone.norm == "bn"  # sibling key from the base survives
    assert cfg.model.bbox_head.feat_channels == 32
    assert cfg.model.bbox_head.anchor.ratios == (0.5, 1.0, 2.0)
    assert cfg.train.batch_size == 4 and cfg.train.max_epochs == 12
    assert cfg.data.train.ann_file == "a/train.json"
    assert cfg.source == str(child)
    assert cfg.work_dir == str(Path("work_dirs") / "child")


def test_base_chain_of_two_levels(tmp_path, base_file):
    write(tmp_path / "mid.yaml", "base: base.yaml\ntrain: {max_epochs: 24, seed: 5}\n")
    top = write(tmp_path / "top" / "top.yaml", "base: ../mid.yaml\ntrain: {seed: 7}\n")
    cfg = load_config(top)
    assert (cfg.train.max_epochs, cfg.train.seed) == (24, 7)


def test_list_values_are_replaced_not_merged(tmp_path, base_file):
    child = write(tmp_path / "child.yaml", """\
base: base.yaml
model:
  neck: {num_outs: 3}
  bbox_head: {anchor: {strides: [8, 16, 32]}}
""")
    cfg = load_config(child)
    assert cfg.model.bbox_head.anchor.strides == (8, 16, 32)


def test_base_cycle_is_reported(tmp_path):
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    a = tmp_path / "a.yaml"
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    assert "cycle" in load_error(a)


# ----------------------------------------------------------------------------------- overrides


def test_parse_overrides_builds_nested_dict_with_yaml_values():
    out = parse_overrides(["train.max_epochs=3", "data.train_scale=1333x[640:800:32]",
                           "train.optimizer.lr=0.02", "data.synth=null", "train.amp=bf16"])
    assert out == {"train": {"max_epochs": 3, "optimizer": {"lr": 0.02}, "amp": "bf16"},
                   "data": {"train_scale": "1333x[640:800:32]", "synth": None}}


@pytest.mark.parametrize("item", ["train.max_epochs", "train..max_epochs=3"])
def test_parse_overrides_rejects_malformed_items(item):
    with pytest.raises(ConfigError, match="--set"):
        parse_overrides([item])


def test_load_config_applies_overrides(base_file):
    cfg = load_config(base_file, ["train.max_epochs=3", "data.train_scale=1333x[640:800:32]"])
    assert cfg.train.max_epochs == 3
    assert cfg.data.train_scale == "1333x[640:800:32]"
    spec = ScaleSpec.parse(cfg.data.train_scale)
    assert spec.mode == "value" and spec.long == 1333
    assert spec.shorts == tuple(range(640, 801, 32))


def test_head_type_switch_drops_retina_only_keys(tmp_path, base_file):
    child = write(tmp_path / "fcos.yaml", """\
base: base.yaml
model:
  bbox_head: {type: fcos, norm: gn, stacked_convs: 2}
""")
    cfg = load_config(child)
    head = cfg.model.bbox_head
    assert isinstance(head, FCOSHeadConfig)
    assert head.stacked_convs == 2 and head.feat_channels == 256  # retina's 64 is not carried over
    assert not hasattr(head, "anchor")


def test_head_type_switch_through_set(base_file):
    cfg = load_config(base_file, ["model.bbox_head.type=fcos"])
    assert isinstance(cfg.model.bbox_head, FCOSHeadConfig)
    same = load_config(base_file, ["model.bbox_head.type=retina"])
    assert isinstance(same.model.bbox_head, RetinaHeadConfig)
    assert same.model.bbox_head.feat_channels == 64  # same type: keys merge


# ----------------------------------------------------------------------------------- errors


def test_unknown_key_in_file_names_file_key_and_suggestion(tmp_path, base_file):
    bad = write(tmp_path / "bad.yaml", "base: base.yaml\ntrain: {max_epoch: 3}\n")
    msg = load_error(bad)
    assert str(bad) in msg
    assert "train.max_epoch" in msg
    assert "'max_epochs'" in msg


def test_unknown_key_in_set_names_key_and_suggestion(base_file):
    msg = load_error(base_file, ["train.max_epoch=3"])
    assert str(base_file) in msg
    assert "train.max_epoch:" in msg and "'max_epochs'" in msg


def test_unknown_top_level_section_lists_valid_keys(tmp_path, base_file):
    msg = load_error(base_file, ["zzzz.q=1"])
    assert "zzzz" in msg and "unknown key" in msg


@pytest.mark.parametrize("override, key, words", [
    ("train.max_epochs=three", "train.max_epochs", "expected an integer"),
    ("train.max_epochs=true", "train.max_epochs", "expected an integer"),
    ("train.max_epochs=2.5", "train.max_epochs", "expected an integer"),
    ("data.flip_prob=yes", "data.flip_prob", "expected a number"),
    ("data.filter_empty_gt=1", "data.filter_empty_gt", "expected true or false"),
    ("data.mean=[1, 2]", "data.mean", "3 items"),
    ("model.bbox_head.anchor.strides=8", "model.bbox_head.anchor.strides", "expected a list"),
    ("model.backbone=5", "model.backbone", "expected a mapping or one of the type names 'resnet', 'ssd_vgg'"),
])
def test_wrong_types_name_the_key(base_file, override, key, words):
    msg = load_error(base_file, [override])
    assert f"{key}:" in msg
    assert words in msg
    assert str(base_file) in msg


def test_bad_literal_suggests_closest(base_file):
    msg = load_error(base_file, ["model.backbone.norm=bnn"])
    assert "model.backbone.norm" in msg
    assert "'bnn'" in msg and "did you mean 'bn'" in msg


def test_bad_head_type_suggests_closest(base_file):
    msg = load_error(base_file, ["model.bbox_head.type=fcoss"])
    assert "model.bbox_head.type" in msg and "did you mean 'fcos'" in msg


def test_missing_required_key_is_named(tmp_path):
    cfg_file = write(tmp_path / "nocls.yaml", MINIMAL.replace("  num_classes: 3\n", ""))
    msg = load_error(cfg_file)
    assert "model.num_classes" in msg and "required key is missing" in msg


def test_missing_data_section_is_named(tmp_path):
    cfg_file = write(tmp_path / "nodata.yaml", "model: {num_classes: 2}\n")
    assert "data: required key is missing" in load_error(cfg_file)


def test_invalid_yaml_names_file_and_line(tmp_path):
    bad = write(tmp_path / "broken.yaml", "model:\n  num_classes: 3\n  backbone:\n depth: 18\n")
    msg = load_error(bad)
    assert str(bad) in msg and "invalid YAML" in msg
    assert "line 4" in msg


def test_invalid_yaml_in_base_names_the_base(tmp_path):
    write(tmp_path / "base.yaml", "a: [1, 2\n")
    child = write(tmp_path / "child.yaml", "base: base.yaml\n")
    msg = load_error(child)
    assert str(tmp_path / "base.yaml") in msg and "invalid YAML" in msg


def test_top_level_list_is_rejected(tmp_path):
    bad = write(tmp_path / "list.yaml", "- 1\n- 2\n")
    assert "top level must be a mapping" in load_error(bad)


def test_missing_file(tmp_path):
    msg = load_error(tmp_path / "nope.yaml")
    assert str(tmp_path / "nope.yaml") in msg and "not found" in msg


def test_missing_base_file_is_named(tmp_path):
    child = write(tmp_path / "child.yaml", "base: missing_base.yaml\n")
    msg = load_error(child)
    assert "missing_base.yaml" in msg and "not found" in msg


def test_config_is_frozen(base_file):
    cfg = load_config(base_file)
    with pytest.raises(Exception):
        cfg.train.max_epochs = 1  # type: ignore[misc]


# ----------------------------------------------------------------------------------- shipped configs


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=[p.name for p in SHIPPED_CONFIGS])
def test_shipped_config_loads_and_builds(path):
    from dettool.trainer.builder import build_model

    cfg = load_config(path)
    assert cfg.source == str(path)
    assert cfg.model.num_classes > 0
    ScaleSpec.parse(cfg.data.train_scale)
    ScaleSpec.parse(cfg.data.test_scale)
    # backbone weights are local files a run writes (GHM starts from the RetinaNet synth backbone)
    model = build_model(load_config(path, ["model.backbone.weights=null"]))  # strides vs. neck levels etc.
    assert sum(p.numel() for p in model.parameters()) > 0


def test_at_least_one_shipped_config():
    assert any(p.name == "retinanet_r18_fpn_synth.yaml" for p in SHIPPED_CONFIGS)
