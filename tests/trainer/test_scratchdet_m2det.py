"""ScratchDet (Root-ResNet + SSD with BatchNorm) and M2Det (VGG16 + MLFPN + SSD head): the shipped
configs' settings and levels, empty ground truth, and batches equal to single images."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from dettool.config import load_config
from dettool.config import schema as S
from dettool.trainer import builder
from dettool.trainer.models.backbones.root_resnet import RootResNet
from dettool.trainer.models.necks.mlfpn import MLFPN

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SYNTH = {"scratchdet": (CONFIGS / "scratchdet_rootres18_synth.yaml", 300),
         "m2det": (CONFIGS / "m2det_vgg16_synth.yaml", 320)}
GT = {"boxes": torch.tensor([[20.0, 30.0, 90.0, 120.0], [150.0, 100.0, 290.0, 280.0]]), "labels": torch.tensor([0, 2])}
EMPTY = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.long)}


def metas(size: int, n: int = 2) -> list[dict]:
    return [{"img_shape": (size, size), "pad_shape": (size, size), "ori_shape": (size, size),
             "scale_factor": (1.0, 1.0)}] * n


def levels_on_meta(cfg, size: int) -> tuple[torch.nn.Module, list[tuple[int, ...]]]:
    with torch.device("meta"):
        model = builder.build_model(cfg).eval()
        feats = model.neck(model.backbone(torch.empty(1, 3, size, size)))
    return model, [tuple(f.shape) for f in feats]


def test_scratchdet_coco_config_has_the_papers_settings():
    cfg = load_config(CONFIGS / "scratchdet300_rootres34_coco.yaml")
    assert cfg.model.backbone == S.RootResNetConfig(depth=34, out_indices=(2, 3), base_channels=64)
    assert cfg.model.neck.norm == "bn" and cfg.model.neck.l2_norm_scale is None
    assert cfg.model.bbox_head.predictor_norm == "bn"
    assert (cfg.train.optimizer.type, cfg.train.optimizer.lr, cfg.train.batch_size * 8) == ("sgd", 0.05, 128)
    assert cfg.train.lr.warmup == "linear"
    model, shapes = levels_on_meta(cfg, 300)
    assert isinstance(model.backbone, RootResNet)
    assert shapes == [(1, c, s, s) for c, s in zip((256, 512, 512, 256, 256, 256), (38, 19, 10, 5, 3, 1))]
    per_location = model.bbox_head.anchor_generator.num_base_anchors_per_level
    assert sum(a * s[-1] ** 2 for a, s in zip(per_location, shapes)) == 8732  # SSD300's


def test_m2det_coco_config_has_the_papers_settings():
    cfg = load_config(CONFIGS / "m2det320_vgg16_coco.yaml")
    assert cfg.model.neck == S.MLFPNConfig()  # M2Det320's MLFPN is the schema's default
    assert cfg.model.backbone.out_feature_indices == (22, 34)  # conv4_3 and conv7
    model, shapes = levels_on_meta(cfg, 320)
    assert isinstance(model.neck, MLFPN) and len(model.neck.tums) == 8
    assert shapes == [(1, 2048, s, s) for s in (40, 20, 10, 5, 3, 1)]
    assert model.bbox_head.anchor_generator.num_base_anchors_per_level == [6] * 6
    assert sum(6 * s[-1] ** 2 for s in shapes) == 12810


@pytest.mark.parametrize("name", sorted(SYNTH))
def test_empty_ground_truth_gives_zero_losses(name):
    """No positive anchor, so hard negative mining keeps no negative either: both losses 0 with a
    graph; with objects in one image of the batch both are positive and finite."""
    path, size = SYNTH[name]
    torch.manual_seed(0)
    model = builder.build_model(load_config(path)).train()
    images = torch.randn(2, 3, size, size)
    empty = model.loss(images, [EMPTY, EMPTY], metas(size))
    assert empty["loss_cls"].item() == 0 and empty["loss_bbox"].item() == 0 and empty["loss_cls"].requires_grad
    one = model.loss(images, [EMPTY, GT], metas(size))
    assert all(v.item() > 0 and math.isfinite(v.item()) for v in one.values())
    sum(one.values()).backward()
    assert all(p.grad is not None for p in model.neck.parameters())


@pytest.mark.parametrize("name", sorted(SYNTH))
def test_predict_of_a_batch_equals_each_image_alone(name):
    path, size = SYNTH[name]
    torch.manual_seed(0)
    model = builder.build_model(load_config(path, ["test.score_thr=0.05"])).eval()
    with torch.no_grad():  # spread-out scores
        for conv in model.bbox_head.cls_convs:
            conv[0].weight.normal_(0.0, 0.05)
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        batched = model.predict(images, metas(size))
        singles = [model.predict(images[i:i + 1], metas(size, 1))[0] for i in range(2)]
    for b, s in zip(batched, singles):  # conv kernels differ by batch size: float noise, relative to the box size
        assert len(b) == len(s) > 0
        torch.testing.assert_close(b.boxes, s.boxes, atol=5e-3, rtol=1e-4)
        torch.testing.assert_close(b.scores, s.scores, atol=1e-5, rtol=0)
        assert torch.equal(b.labels, s.labels)
