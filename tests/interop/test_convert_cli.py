"""``dettool convert mmdet`` from the command line: a small MMDetection-style RetinaNet converts
(weights under MMDetection's names land on dettool's), and every bad input gives one line."""
from __future__ import annotations

import fractions
from pathlib import Path

import pytest
import torch
from detector_helpers import run_cli

from dettool.config import load_config
from dettool.trainer import builder
from dettool.trainer.checkpoint import load_checkpoint

CONFIG = """
model = dict(
    type='RetinaNet',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=32),
    backbone=dict(type='ResNet', depth=18, num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=1,
                  norm_cfg=dict(type='BN', requires_grad=True), norm_eval=True, style='pytorch'),
    neck=dict(type='FPN', in_channels=[64, 128, 256, 512], out_channels=64, start_level=1,
              add_extra_convs='on_input', num_outs=5),
    bbox_head=dict(
        type='RetinaHead', num_classes=3, in_channels=64, stacked_convs=1, feat_channels=64,
        anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=3,
                              ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0], target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5),
                  max_per_img=100))
data_root = 'data/tiny/'
train_dataloader = dict(batch_size=2, dataset=dict(data_root=data_root, ann_file='train.json',
                                                   data_prefix=dict(img='train/')))
val_dataloader = dict(dataset=dict(
    data_root=data_root, ann_file='val.json', data_prefix=dict(img='val/'),
    pipeline=[dict(type='LoadImageFromFile'), dict(type='Resize', scale=(1333, 800), keep_ratio=True),
              dict(type='PackDetInputs')]))
"""


def mmdet_name(name: str) -> str:
    """dettool's parameter name -> MMDetection's (the converter's rules, written out by hand)."""
    for old, new in (("neck.fpn.inner_blocks.", "neck.lateral_convs."), ("neck.fpn.layer_blocks.", "neck.fpn_convs.")):
        if name.startswith(old):
            i, rest = name[len(old):].split(".0.", 1)
            return f"{new}{i}.conv.{rest}"
    if name.startswith("neck.fpn.extra_blocks.convs."):
        i, rest = name[len("neck.fpn.extra_blocks.convs."):].split(".", 1)
        return f"neck.fpn_convs.{3 + int(i)}.conv.{rest}"
    for tower in ("cls", "reg"):
        if name.startswith(f"bbox_head.{tower}_convs."):
            i, rest = name[len(f"bbox_head.{tower}_convs."):].split(".", 1)
            return f"bbox_head.{tower}_convs.{int(i) // 2}.conv.{rest}"
    return name


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    config = tmp_path / "retinanet_r18_tiny.py"
    config.write_text(CONFIG)
    out = tmp_path / "converted"
    return {"config": config, "out": out, "tmp": tmp_path}


def mmdet_checkpoint(path: Path, **extra) -> dict[str, torch.Tensor]:
    """A dettool RetinaNet's random weights saved under MMDetection's names, as MMDetection 3.x saves."""
    cfg_path = path.parent / "reference.yaml"
    cfg_path.write_text("model: {type: single_stage, num_classes: 3, backbone: {depth: 18, norm: bn},\n"
                        "        neck: {out_channels: 64}, bbox_head: {feat_channels: 64, stacked_convs: 1}}\n"
                        "data: {train: {ann_file: a, img_dir: b}, val: {ann_file: a, img_dir: b}}\n")
    torch.manual_seed(0)
    state = builder.build_model(load_config(cfg_path)).state_dict()
    torch.save({"meta": {"dataset_meta": {"classes": ("a", "b", "c")}, **extra},
                "state_dict": {mmdet_name(k): v for k, v in state.items()}}, path)
    return state


def test_converts_config_and_weights(files) -> None:
    ckpt = files["tmp"] / "mmdet.pth"
    state = mmdet_checkpoint(ckpt)
    code, out, err = run_cli(["convert", "mmdet", files["config"], ckpt, "--out", files["out"]])
    assert code == 0, err
    cfg = load_config(files["out"] / "retinanet_r18_tiny.yaml")
    assert (cfg.model.num_classes, cfg.model.backbone.out_indices, cfg.test.min_bbox_size) == (3, (1, 2, 3), 0)
    assert (cfg.data.val.ann_file, cfg.data.train_scale, cfg.train.batch_size) == ("data/tiny/val.json", "1333x800", 2)
    converted = load_checkpoint(files["out"] / "retinanet_r18_tiny.pth")
    assert converted["meta"]["class_names"] == ["a", "b", "c"]  # what dettool export reads
    assert converted["model"].keys() == state.keys()
    assert all(torch.equal(converted["model"][k], v) for k, v in state.items())


@pytest.mark.parametrize("edit, message", [
    (("type='RetinaNet'", "type='YOLOX'"), "model.type: model type 'YOLOX' is not implemented by dettool convert"),
    (("num_outs=5)", "num_outs=5, norm_cfg=dict(type='GN', num_groups=32))"), "model.neck.norm_cfg"),
    (("style='pytorch'", "style='pytorch', deep_stem=True"), "model.backbone.deep_stem: True is not implemented"),
    (("style='pytorch'", "style='pytorch', conv_cfg=dict(type='ConvAWS')"),
     "model.backbone.conv_cfg.type: 'ConvAWS' is not implemented"),  # ConvWS is; DetectoRS's adaptive one is not
    (("model = dict(", "import os\nmodel = dict("), "retinanet_r18_tiny.py:2: imports"),
])
def test_what_dettool_lacks_is_refused_by_name(files, edit: tuple[str, str], message: str) -> None:
    files["config"].write_text(CONFIG.replace(*edit, 1))
    ckpt = files["tmp"] / "mmdet.pth"
    mmdet_checkpoint(ckpt)
    code, out, err = run_cli(["convert", "mmdet", files["config"], ckpt, "--out", files["out"]])
    assert code == 1 and err.count("\n") == 1 and err.startswith("dettool: error:"), err
    assert message in err, err
    assert not (files["out"] / "retinanet_r18_tiny.pth").exists()


def test_bad_checkpoints_are_refused_in_one_line(files) -> None:
    tmp = files["tmp"]
    other = tmp / "other.pth"
    torch.save({"state_dict": {"backbone.conv1.weight": torch.zeros(64, 3, 7, 7)}}, other)
    foreign = tmp / "foreign.pth"
    mmdet_checkpoint(foreign, note=fractions.Fraction(1, 3))
    truncated = tmp / "truncated.pth"
    truncated.write_bytes((tmp / "foreign.pth").read_bytes()[:5000])
    for path, message in ((other, "does not match the config's architecture: it lacks"),
                          (foreign, "holds a pickled fractions.Fraction, which dettool does not unpickle"),
                          (truncated, "not a readable PyTorch checkpoint"),
                          (tmp / "absent.pth", "checkpoint not found")):
        code, out, err = run_cli(["convert", "mmdet", files["config"], path, "--out", files["out"]])
        assert code == 1 and err.count("\n") == 1 and message in err, (path.name, err)
        assert not (files["out"] / "retinanet_r18_tiny.pth").exists()


def test_torchvision_bad_inputs_are_refused_in_one_line(tmp_path: Path) -> None:
    import torchvision

    fcos = tmp_path / "fcos.pth"
    state = torchvision.models.detection.fcos_resnet50_fpn(weights=None, weights_backbone=None).state_dict()
    torch.save(state, fcos)
    foreign = tmp_path / "foreign.pth"
    torch.save({**state, "note": fractions.Fraction(1, 3)}, foreign)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(fcos.read_bytes()[:5000])
    out = tmp_path / "out"
    for name, path, message in (
            ("yolov8n", fcos, "yolov8n: not a torchvision model dettool converts (one of: retinanet_resnet50_fpn"),
            ("retinanet_resnet50_fpn", fcos, "not the weights of torchvision's retinanet_resnet50_fpn ("),
            ("fcos_resnet50_fpn", foreign, "holds a pickled fractions.Fraction, which dettool does not unpickle"),
            ("fcos_resnet50_fpn", truncated, "not a readable PyTorch checkpoint")):
        code, _, err = run_cli(["convert", "torchvision", name, path, "--out", out])
        assert code == 1 and err.count("\n") == 1 and message in err, (name, path.name, err)
        assert not out.exists() or not any(out.glob("*.pth"))
