"""Deploy graphs run eagerly (reference dettool ops) give exactly ``model.predict``'s detections."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from detector_helpers import CONFIGS, TORCHVISION_OPTIONS, random_detector, tiny_sets

from dettool.config import load_config
from dettool.errors import ExportError
from dettool.exporters.deploy.detector import build_deploy_model
from dettool.structures.detections import DetOutputs, image_shapes_tensor, outputs_to_detections
from dettool.trainer import builder

MODELS = ["retinanet", "ghm_retinanet", "libra_retinanet", "fcos", "fsaf", "faster_rcnn", "dh_faster_rcnn",
          "mask_rcnn", "cascade_rcnn", "cascade_mask_rcnn", "faster_rcnn_r18_fpn_dconv", "ssd300",
          "scratchdet_rootres18", "m2det_vgg16", "ga_retinanet", "faster_rcnn_r18_fpn_gn_ws",
          "faster_rcnn_hrnetv2p_w18"]
# single-shot models whose last levels need their input size (unpadded 3x3 convs down to 1x1)
FIXED_INPUT = {"ssd300": "300x300", "scratchdet": "300x300", "m2det": "320x320"}


def config_path(name: str) -> Path:
    path = CONFIGS / f"{name}_synth.yaml"
    return path if path.exists() else CONFIGS / f"{name}_r18_fpn_synth.yaml"


def tiny_cfg(name: str, root: Path, *extra: str):
    if name == "ghm_retinanet":  # randomly initialised here, not from the RetinaNet synth backbone
        extra = ("model.backbone.weights=null", *extra)
    fixed = [size for prefix, size in FIXED_INPUT.items() if name.startswith(prefix)]
    if fixed:  # SSD300's, ScratchDet's and M2Det's extra levels need their input size
        extra = (f"data.test_scale={fixed[0]}", *extra)
    return load_config(config_path(name), tiny_sets(root, "test.score_thr=0.001", *extra))


def deploy_detections(deploy, images, metas, mask_paste: str = "mmdet"):
    with torch.no_grad():
        out = deploy(images, image_shapes_tensor(metas))
    return outputs_to_detections(DetOutputs(*out[:4], masks=out[4] if len(out) > 4 else None), metas,
                                 mask_paste=mask_paste)


def assert_same(ref, got, box_atol: float = 1e-4, mask_flips: float = 0.0):
    """Same detections; ``mask_flips``: tolerated fraction of mask pixels that differ (float noise
    can move a box edge by 1e-4 px and flip a boundary pixel of its pasted mask)."""
    assert len(ref) == len(got)
    for r, d in zip(ref, got):
        assert len(r) == len(d)
        assert torch.equal(r.labels, d.labels)
        torch.testing.assert_close(d.boxes, r.boxes, atol=box_atol, rtol=0)
        torch.testing.assert_close(d.scores, r.scores, atol=1e-5, rtol=0)
        if r.masks is not None:
            assert (r.masks != d.masks).float().mean() <= mask_flips


@pytest.mark.parametrize("name", MODELS)
def test_deploy_graph_equals_predict(name, tiny_synth):
    cfg = tiny_cfg(name, tiny_synth)
    model = random_detector(cfg)
    deploy = build_deploy_model(model)
    assert deploy.with_masks == ("mask" in name)
    dataset = builder.build_dataset(cfg, "val")
    images, _, metas = next(iter(builder.build_dataloader(cfg, dataset, train=False, batch_size=3)))
    keep_ratio = cfg.data.keep_ratio  # without it (SSD) every image is resized to exactly test_scale
    num_shapes = len({m["img_shape"] for m in metas})
    assert num_shapes > 1 if keep_ratio else num_shapes == 1  # varied sizes, padded into one batch
    ref = model.predict(images, metas)
    assert sum(len(r) for r in ref) > 0
    assert_same(ref, deploy_detections(deploy, images, metas))


@pytest.mark.parametrize("name", sorted(TORCHVISION_OPTIONS))
def test_deploy_graph_equals_predict_with_torchvision_options(name, tiny_synth):
    cfg = tiny_cfg(name, tiny_synth, *TORCHVISION_OPTIONS[name])
    model = random_detector(cfg)
    deploy = build_deploy_model(model)
    dataset = builder.build_dataset(cfg, "val")
    images, _, metas = next(iter(builder.build_dataloader(cfg, dataset, train=False, batch_size=3)))
    ref = model.predict(images, metas)
    assert sum(len(r) for r in ref) > 0
    assert_same(ref, deploy_detections(deploy, images, metas, cfg.test.mask_paste))


def test_batch_of_three_equals_three_batches_of_one(tiny_synth):
    """Per-image results do not depend on the batch (same padded size, different image shapes);
    convolutions pick other kernels for another batch size, hence the float tolerance."""
    cfg = tiny_cfg("mask_rcnn", tiny_synth)
    deploy = build_deploy_model(random_detector(cfg, seed=1))
    dataset = builder.build_dataset(cfg, "val")
    images, _, metas = next(iter(builder.build_dataloader(cfg, dataset, train=False, batch_size=3)))
    batched = deploy_detections(deploy, images, metas)
    singles = [deploy_detections(deploy, images[i:i + 1], metas[i:i + 1])[0] for i in range(3)]
    assert_same(singles, batched, box_atol=1e-3, mask_flips=1e-3)


def test_soft_nms_and_fast_rcnn_are_refused_by_name(tiny_synth):
    cfg = tiny_cfg("retinanet", tiny_synth, "test.nms_type=soft_nms_linear")
    with pytest.raises(ExportError, match="test.nms_type=soft_nms_linear"):
        build_deploy_model(builder.build_model(cfg))
    cfg = tiny_cfg("faster_rcnn", tiny_synth)
    model = builder.build_model(cfg)
    model.rpn_head = None
    with pytest.raises(ExportError, match="Fast R-CNN"):
        build_deploy_model(model)


def test_trained_model_is_not_modified(tiny_synth):
    cfg = tiny_cfg("faster_rcnn_r18_fpn_dconv", tiny_synth)
    model = random_detector(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    build_deploy_model(model)
    from dettool.trainer.models.backbones.deform_conv import DeformConv2dPack

    assert any(isinstance(m, DeformConv2dPack) for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
