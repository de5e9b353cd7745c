"""MMDetection's from-scratch, mixed-precision and SyncBN configs translate to dettool's settings."""
from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest
import yaml

from dettool.config import load_config
from dettool.interop.mmdet_config import read_mmdet_config
from dettool.interop.mmdet_convert import translate_config

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mmdet") is None, reason="MMDetection is not installed")


def mmdet_config(name: str) -> dict:
    return read_mmdet_config(Path(importlib.util.find_spec("mmdet").origin).parent / ".mim" / "configs" / name)


def translated(cfg: dict, tmp_path: Path) -> tuple[dict, list[str]]:
    """The translation, checked by dettool's own loader, and what it drops."""
    t = translate_config(cfg, "test.py")
    path = tmp_path / "translated.yaml"
    path.write_text(yaml.safe_dump(t.config))
    load_config(path)
    return t.config, t.dropped


@pytest.mark.parametrize("name", ["scratch/faster-rcnn_r50-scratch_fpn_gn-all_6x_coco.py",
                                  "scratch/mask-rcnn_r50-scratch_fpn_gn-all_6x_coco.py"])
def test_scratch_configs_keep_gn_everywhere_and_no_norm_decay(name, tmp_path):
    cfg, dropped = translated(mmdet_config(name), tmp_path)
    assert dropped == []
    m = cfg["model"]
    assert (m["backbone"]["norm"], m["backbone"]["gn_groups"], m["backbone"]["frozen_stages"]) == ("gn", 32, -1)
    assert m["backbone"]["weights"] is None and m["neck"]["norm"] == "gn"
    box = m["roi_head"]["bbox_head"]
    assert (box["num_shared_convs"], box["num_shared_fcs"], box["norm"]) == (4, 1, "gn")
    assert ("mask_head" in m["roi_head"]) == ("mask-rcnn" in name)
    if "mask-rcnn" in name:
        assert m["roi_head"]["mask_head"]["norm"] == "gn"
    train = cfg["train"]
    assert train["optimizer"]["norm_decay_mult"] == 0.0 and train["optimizer"]["decay_norm_and_bias"]
    assert (train["max_epochs"], train["lr"]["steps"]) == (73, [65, 71])
    assert "amp" not in train


@pytest.mark.parametrize("name", ["faster_rcnn/faster-rcnn_r50_fpn_amp-1x_coco.py",
                                  "retinanet/retinanet_r50_fpn_amp-1x_coco.py"])
def test_amp_optim_wrapper_becomes_fp16_training(name, tmp_path):
    cfg, dropped = translated(mmdet_config(name), tmp_path)
    assert cfg["train"]["amp"] == "fp16" and dropped == []


def test_amp_dtype_loss_scale_and_other_paramwise_settings(tmp_path):
    base = mmdet_config("retinanet/retinanet_r50_fpn_amp-1x_coco.py")
    cfg = copy.deepcopy(base)
    cfg["optim_wrapper"].update(dtype="bfloat16", loss_scale=512.0,
                                paramwise_cfg={"norm_decay_mult": 0.5, "bias_lr_mult": 2.0})
    out, dropped = translated(cfg, tmp_path)
    assert out["train"]["amp"] == "bf16" and out["train"]["optimizer"]["norm_decay_mult"] == 0.5
    assert dropped == ["optim_wrapper.loss_scale (512.0: dettool's GradScaler is dynamic)",
                       "optim_wrapper.paramwise_cfg.bias_lr_mult"]
    cfg = copy.deepcopy(base)
    cfg["optim_wrapper"]["dtype"] = "float64"
    out, dropped = translated(cfg, tmp_path)
    assert "amp" not in out["train"]
    assert dropped == ["optim_wrapper.dtype (float64: dettool's mixed precision is fp16 or bf16)"]
    cfg = copy.deepcopy(base)
    cfg["optim_wrapper"]["type"] = "ApexOptimWrapper"
    assert translated(cfg, tmp_path)[1] == ["optim_wrapper.type (ApexOptimWrapper: dettool's mixed precision is "
                                            "train.amp)"]


def test_syncbn_backbone_config_becomes_norm_syncbn(tmp_path):
    cfg, dropped = translated(mmdet_config("gcnet/mask-rcnn_r50-syncbn_fpn_1x_coco.py"), tmp_path)
    assert dropped == []
    assert (cfg["model"]["backbone"]["norm"], cfg["model"]["backbone"]["norm_eval"]) == ("syncbn", False)


CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SHIPPED = {"faster_rcnn_r50_fpn_gn-all_scratch_6x_coco": "scratch/faster-rcnn_r50-scratch_fpn_gn-all_6x_coco.py",
           "mask_rcnn_r50_fpn_gn-all_scratch_6x_coco": "scratch/mask-rcnn_r50-scratch_fpn_gn-all_6x_coco.py",
           "mask_rcnn_r50_fpn_syncbn_1x_coco": "gcnet/mask-rcnn_r50-syncbn_fpn_1x_coco.py",
           "faster_rcnn_r50_fpn_fp16_1x_coco": "faster_rcnn/faster-rcnn_r50_fpn_amp-1x_coco.py",
           "retinanet_r50_fpn_fp16_1x_coco": "retinanet/retinanet_r50_fpn_amp-1x_coco.py"}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_zoo_config_has_the_settings_of_the_mmdetection_config_it_follows(name, tmp_path):
    """Norms, frozen stages, heads, precision, norm decay and schedule as the translated MMDetection config."""
    t = translate_config(mmdet_config(SHIPPED[name]), "test.py")
    path = tmp_path / "translated.yaml"
    path.write_text(yaml.safe_dump(t.config))
    ref, ours = load_config(path), load_config(CONFIGS / f"{name}.yaml")
    for part in ("model.backbone.norm", "model.backbone.gn_groups", "model.backbone.norm_eval",
                 "model.backbone.frozen_stages", "model.backbone.weights", "model.neck", "train.amp",
                 "train.optimizer", "train.lr", "train.max_epochs", "train.batch_size"):
        a, b = ref, ours
        for key in part.split("."):
            a, b = getattr(a, key), getattr(b, key)
        assert a == b, f"{part}: MMDetection's {a}, ours {b}"
    if hasattr(ours.model, "roi_head"):
        for key in ("bbox_head", "mask_head"):
            a, b = getattr(ref.model.roi_head, key, None), getattr(ours.model.roi_head, key, None)
            assert a == b, f"roi_head.{key}: MMDetection's {a}, ours {b}"
