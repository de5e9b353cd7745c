"""MMDetection configs read as literals equal what mmengine's executing reader gives."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from dettool.errors import ConfigError
from dettool.interop.mmdet_config import read_mmdet_config

FAMILIES = ("retinanet", "fcos", "rpn", "fast_rcnn", "faster_rcnn", "mask_rcnn", "cascade_rcnn", "dcn", "dcnv2",
            "ghm", "double_heads", "gn", "fsaf", "libra_rcnn", "ssd", "guided_anchoring", "ms_rcnn", "grid_rcnn",
            "htc", "scratch", "hrnet", "gcnet", "empirical_attention")


def shipped_configs() -> list[Path]:
    spec = importlib.util.find_spec("mmdet")
    if spec is None:
        return []
    root = Path(spec.origin).parent / ".mim" / "configs"
    return sorted(p for family in FAMILIES for p in (root / family).glob("*.py"))


CONFIGS = shipped_configs()


@pytest.mark.skipif(not CONFIGS, reason="MMDetection is not installed")
def test_every_shipped_config_of_the_implemented_families_reads_as_mmengine_does() -> None:
    from mmengine.config import Config

    assert len(CONFIGS) > 150
    for path in CONFIGS:
        assert read_mmdet_config(path) == Config.fromfile(str(path)).to_dict(), path.name


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_bases_merge_with_delete_and_references(tmp_path: Path) -> None:
    write(tmp_path, "base.py", "lr = 0.02\nmodel = dict(type='A', head=dict(n=1, m=2), ratios=[0.5, 1.0])\n")
    cfg = write(tmp_path, "child.py", "_base_ = './base.py'\nscales = [(1333, 800)]\n"
                "model = dict(head=dict(n=3), neck=dict(_delete_=True, k=1), ratios=[2.0])\n"
                "lr = {{_base_.lr}} / 2\nhead_n = _base_.model.head.n\n"
                "pipeline = [dict(scale=s) for s in scales] + [dict(t='flip')]\nw = [1.0] * 2\n")
    assert read_mmdet_config(cfg) == {
        "lr": 0.01, "scales": [(1333, 800)], "head_n": 1, "w": [1.0, 1.0],
        "pipeline": [{"scale": (1333, 800)}, {"t": "flip"}],
        "model": {"type": "A", "head": {"n": 3, "m": 2}, "ratios": [2.0], "neck": {"_delete_": True, "k": 1}}}


def test_names_hold_their_own_values_as_in_mmengine(tmp_path: Path) -> None:
    """As mmengine: ``b = a`` then ``_delete_`` in ``a`` replaces both bases (each key is merged as
    a value of its own); ``d = _base_.model; d.t = 2`` changes the base's model itself."""
    write(tmp_path, "base.py", "a = dict(k=1)\nb = dict(k=1)\nmodel = dict(type='M', t=1)\n")
    cfg = write(tmp_path, "child.py", "_base_ = './base.py'\na = dict(_delete_=True, x=1)\nb = a\n"
                "d = _base_.model\nd.t = 2\nwrapper = dict(detector=d)\n")
    out = read_mmdet_config(cfg)
    assert (out["a"], out["b"], out["wrapper"]) == ({"x": 1}, {"x": 1}, {"detector": {"type": "M", "t": 2}})
    assert out["model"] == {"type": "M", "t": 2}


@pytest.mark.parametrize("text, message", [
    ("import os\nx = 1\n", "config.py:1: imports"),
    ("x = open('/etc/passwd')\n", "config.py:1: uses call 'open'"),
    ("x = __import__('os')\n", "config.py:1: uses call '__import__'"),
    ("x = y\n", "name 'y' is not assigned earlier"),
    ("x = 1 if True else 2\n", "IfExp expressions"),
    ("x = [0] * 1000000000\n", "a repetition longer than 100000"),
    ("x = 2 ** 1000\n", "operation '2 ** 1000'"),
    ("x = {{$HOME:/tmp}}\n", "reads an environment variable"),
    ("_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'\n", "inside an installed package"),
    ("_base_ = './missing.py'\n", "_base_ file './missing.py' not found"),
    ("x = dict(\n", "not valid Python"),
    ("for i in []:\n    pass\n", "a For statement"),
])
def test_anything_beyond_literals_is_refused_naming_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        read_mmdet_config(write(tmp_path, "config.py", text))
    assert message in str(err.value) and "config.py" in str(err.value)


def test_base_cycle_and_duplicate_keys_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "a.py", "_base_ = './b.py'\n")
    write(tmp_path, "b.py", "_base_ = './a.py'\n")
    with pytest.raises(ConfigError, match="nest deeper"):
        read_mmdet_config(tmp_path / "a.py")
    write(tmp_path, "c.py", "x = 1\n")
    write(tmp_path, "d.py", "x = 2\n")
    with pytest.raises(ConfigError, match=r"define the same keys \['x'\]"):
        read_mmdet_config(write(tmp_path, "e.py", "_base_ = ['./c.py', './d.py']\n"))


@pytest.mark.skipif(not CONFIGS, reason="MMDetection is not installed")
def test_every_shipped_config_translates_to_a_valid_config_or_is_refused_by_key(tmp_path: Path) -> None:
    """Each config of the families either becomes a dettool config that passes dettool's own
    validation, or is refused naming the MMDetection key dettool lacks (counts as of MMDetection 3.3)."""
    import yaml

    from dettool.config import load_config
    from dettool.interop.mmdet_convert import translate_config

    translated, refused = 0, 0
    for path in CONFIGS:
        try:
            t = translate_config(read_mmdet_config(path), path.name)
        except ConfigError as exc:
            assert f"{path.name}: model" in str(exc), str(exc)
            refused += 1
            continue
        out = tmp_path / f"{path.stem}.yaml"
        out.write_text(yaml.safe_dump(t.config))
        load_config(out)
        translated += 1
    assert translated >= 215 and refused <= 15, (translated, refused)


@pytest.mark.skipif(not CONFIGS, reason="MMDetection is not installed")
def test_htc_reads_its_semantic_label_maps_where_mmdetection_does() -> None:
    """HTC's ``data_prefix.seg`` (COCO-stuff's maps) becomes ``data.train.seg_dir``, its semantic
    head the RoI head's, with MMDetection's settings."""
    from dettool.interop.mmdet_convert import translate_config

    path = next(p for p in CONFIGS if p.name == "htc_r50_fpn_1x_coco.py")
    cfg = translate_config(read_mmdet_config(path), path.name).config
    assert cfg["data"]["train"]["seg_dir"] == "data/coco/stuffthingmaps/train2017/"
    assert cfg["model"]["roi_head"]["semantic_head"] == {"num_ins": 5, "fusion_level": 1, "num_convs": 4,
                                                         "conv_out_channels": 256, "num_classes": 183,
                                                         "loss_weight": 0.2}
    assert cfg["model"]["roi_head"]["interleaved"] and cfg["model"]["roi_head"]["mask_info_flow"]
