"""Hybrid Task Cascade: the semantic head and its loss (by hand and against MMDetection's), the
mask information flow, interleaved training, and the config's checks."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from dettool.config import load_config
from dettool.data.sample import IGNORE_LABEL
from dettool.errors import ConfigError
from dettool.trainer import builder
from dettool.trainer.builder.data import build_dataset
from dettool.trainer.models.roi_heads import htc_roi_head
from dettool.trainer.models.roi_heads.fused_semantic_head import FusedSemanticHead
from dettool.trainer.models.roi_heads.htc_mask_head import HTCMaskHead

ROOT = Path(__file__).resolve().parents[3]
CONFIG = ROOT / "configs/htc_r18_fpn_synth.yaml"


def semantic_head(**kw) -> FusedSemanticHead:
    args = dict(num_ins=3, fusion_level=1, in_channels=8, conv_out_channels=6, num_convs=2, num_classes=5,
                loss_weight=0.2, seg_stride=8)
    return FusedSemanticHead(**{**args, **kw})


def test_semantic_head_fuses_every_level_at_the_fusion_level():
    head = semantic_head()
    feats = [torch.randn(2, 8, 32 // 2 ** i, 40 // 2 ** i) for i in range(3)]
    logits, embedding = head(feats)
    assert logits.shape == (2, 5, 16, 20) and embedding.shape == (2, 6, 16, 20)
    # a level's change reaches the fused map
    changed = [f.clone() for f in feats]
    changed[2] += 1.0
    assert not torch.allclose(head(changed)[1], embedding)


def test_semantic_loss_by_hand():
    """Logits of 0: each labelled pixel costs log K; the ignored pixels (the padding too) count in
    the mean as 0 (MMDetection's avg_non_ignore=False)."""
    head = semantic_head()
    logits = torch.zeros(2, 5, 4, 5)  # stride 8: label maps padded to 32 x 40
    full = torch.randint(0, 5, (32, 40), dtype=torch.uint8)
    half = torch.randint(0, 5, (16, 40), dtype=torch.uint8)  # the bottom half is padding
    loss = head.loss(logits, [full, half])
    assert math.isclose(float(loss), 0.2 * math.log(5) * (20 + 10) / 40, rel_tol=1e-6)
    ignored = torch.full((32, 40), IGNORE_LABEL, dtype=torch.uint8)
    empty = torch.zeros(2, 5, 4, 5, requires_grad=True)
    zero = head.loss(empty, [ignored, ignored])
    assert float(zero) == 0
    zero.backward()


@pytest.mark.skipif(importlib.util.find_spec("mmdet") is None, reason="MMDetection is not installed")
def test_semantic_loss_equals_mmdetections():
    from mmdet_reference import import_mmdet

    import_mmdet()
    from mmdet.models.roi_heads.mask_heads.fused_semantic_head import FusedSemanticHead as MMHead

    ref = MMHead(num_ins=3, fusion_level=1, in_channels=8, conv_out_channels=6, num_convs=2, num_classes=5)
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 4, 5) * 3
    maps = [torch.randint(0, 5, (32, 40), dtype=torch.uint8), torch.randint(0, 5, (20, 33), dtype=torch.uint8)]
    maps[0][:5] = IGNORE_LABEL
    padded = torch.full((2, 1, 32, 40), IGNORE_LABEL, dtype=torch.long)
    for i, m in enumerate(maps):
        padded[i, 0, : m.shape[0], : m.shape[1]] = m.long()
    expected = ref.loss(logits, padded)
    torch.testing.assert_close(semantic_head().loss(logits, maps), expected)


def test_htc_mask_head_adds_the_previous_stages_features():
    args = dict(num_classes=3, in_channels=8, conv_out_channels=8, num_convs=2, norm="none", roi_feat_size=14,
                class_agnostic=False, loss_weight=1.0)
    first, second = HTCMaskHead(with_conv_res=False, **args), HTCMaskHead(with_conv_res=True, **args)
    x = torch.randn(4, 8, 14, 14)
    previous = first.features(x)
    torch.testing.assert_close(second.features(x, previous), second.convs(x + second.conv_res(previous)))
    assert second.logits(second.features(x, previous)).shape == (4, 3, 28, 28)
    with pytest.raises(ValueError, match="with_conv_res"):
        first.features(x, previous)


def test_the_last_stage_masks_depend_on_every_stage_with_the_flow():
    cfg = load_config(CONFIG)
    torch.manual_seed(0)
    head = builder.build_model(cfg).roi_head.eval()
    feats = [torch.randn(1, 96, 64 // 2 ** i, 64 // 2 ** i) for i in range(5)]
    rois = torch.tensor([[0.0, 4.0, 4.0, 60.0, 50.0], [0.0, 20.0, 10.0, 40.0, 30.0]])
    with torch.no_grad():
        sem = head.semantic_head(feats)[1]
        before = head.mask_logits(2, feats, rois, sem)
        head.mask_branches[0].mask_head.convs[0].weight.mul_(2)
        after = head.mask_logits(2, feats, rois, sem)
        assert not torch.allclose(before, after)  # stage 0's head is in stage 2's chain
        head.mask_info_flow = False
        alone = head.mask_logits(2, feats, rois, sem)
        head.mask_branches[0].mask_head.convs[0].weight.mul_(2)
        torch.testing.assert_close(head.mask_logits(2, feats, rois, sem), alone)


def batch(with_semantic: bool = True):
    images = torch.randn(2, 3, 96, 128)
    boxes = torch.tensor([[10.0, 12.0, 60.0, 70.0], [70.0, 20.0, 120.0, 60.0]])
    masks = torch.zeros(2, 96, 128, dtype=torch.uint8)
    for m, b in zip(masks, boxes.int()):
        m[b[1]:b[3], b[0]:b[2]] = 1
    target = {"boxes": boxes, "labels": torch.tensor([0, 2]), "ignore_boxes": torch.zeros((0, 4)), "masks": masks}
    if with_semantic:
        target["semantic"] = torch.randint(0, 6, (96, 128), dtype=torch.uint8)
    meta = {"img_shape": (96, 128), "pad_shape": (96, 128), "ori_shape": (96, 128), "scale_factor": (1.0, 1.0)}
    return images, [dict(target), dict(target)], [dict(meta), dict(meta)]


@pytest.mark.parametrize("interleaved", [True, False])
def test_interleaved_mask_heads_learn_on_resampled_regressed_boxes(interleaved, monkeypatch):
    cfg = load_config(CONFIG, [f"model.roi_head.interleaved={str(interleaved).lower()}"])
    torch.manual_seed(0)
    model = builder.build_model(cfg)
    calls = []
    original = htc_roi_head.assign_and_sample

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(htc_roi_head, "assign_and_sample", counting)
    losses = model.loss(*batch())
    # the box stages sample through the cascade's own call; the interleaved mask heads resample here
    assert len(calls) == (3 * 2 if interleaved else 0)
    assert {f"loss_mask_s{s}" for s in range(3)} <= set(losses) and "loss_semantic_seg" in losses
    sum(v for k, v in losses.items() if k.startswith("loss_")).backward()
    assert model.roi_head.semantic_head.conv_logits.weight.grad.abs().sum() > 0
    assert model.roi_head.mask_branches[2].mask_head.conv_res.conv.weight.grad.abs().sum() > 0


def test_training_without_label_maps_is_refused():
    model = builder.build_model(load_config(CONFIG))
    with pytest.raises(ValueError, match=r"target\['semantic'\]"):
        model.loss(*batch(with_semantic=False))


def test_config_checks():
    with pytest.raises(ConfigError, match="mask_head.conv_out_channels: the mask information flow"):
        builder.build_model(load_config(CONFIG, ["model.roi_head.mask_head.conv_out_channels=64"]))
    with pytest.raises(ConfigError, match="semantic_roi_extractor.strides"):
        load_config(CONFIG, ["model.roi_head.semantic_roi_extractor.strides=[16]"])
    with pytest.raises(ConfigError, match="mask_head"):
        load_config(CONFIG, ["model.roi_head.mask_head=null"])


def test_a_semantic_model_needs_label_maps_to_train(tiny_synth, tmp_path):
    sets = [f"data.train.ann_file={tiny_synth / 'annotations/train.json'}",
            f"data.train.img_dir={tiny_synth / 'train'}",
            f"data.val.ann_file={tiny_synth / 'annotations/val.json'}",
            f"data.val.img_dir={tiny_synth / 'val'}", "data.synth=null"]
    with pytest.raises(ConfigError, match="data.train.seg_dir: required to train the semantic head"):
        build_dataset(load_config(CONFIG, [*sets, "data.train.seg_dir=null"]), "train")
    ds = build_dataset(load_config(CONFIG, [*sets, f"data.train.seg_dir={tiny_synth / 'stuffthingmaps/train'}"]),
                       "train")
    _, target, _ = ds[0]
    assert target["semantic"].shape == target["masks"].shape[1:]
