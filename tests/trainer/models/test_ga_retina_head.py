"""GARetinaHead: outputs, targets and losses equal MMDetection's GARetinaHead on the same weights
and inputs (its location labels swapped back, see ``GuidedAnchorHead.location_loss``), empty
ground truth, batches, and the test-time location filter."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch

from dettool.config import schema as S
from dettool.trainer.builder.dense_heads import build_dense_head
from dettool.trainer.models.postprocess.batched import levels_to_rows
from dettool.trainer.models.task_modules.guided_anchors import location_targets

STRIDES = (8, 16, 32, 64, 128)
H, W = 128, 160
CHANNELS = 32


def dettool_head(num_classes: int = 3, **overrides) -> torch.nn.Module:
    cfg = S.GARetinaHeadConfig(feat_channels=CHANNELS, stacked_convs=2, **overrides)
    return build_dense_head(cfg, num_classes, (CHANNELS,) * len(STRIDES), S.TestConfig())


def features(batch: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, CHANNELS, -(-H // s), -(-W // s), generator=g) for s in STRIDES]


def gt(seed: int, n: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([W * 0.7, H * 0.7])
    wh = 8 + torch.rand(n, 2, generator=g) * 70
    return {"boxes": torch.cat([xy, (xy + wh).minimum(torch.tensor([W - 1.0, H - 1.0]))], 1),
            "labels": torch.randint(0, 3, (n,), generator=g)}


METAS = [{"img_shape": (H, W), "pad_shape": (H, W)}] * 2


def spread_outputs(head: torch.nn.Module, seed: int = 3) -> None:
    """Random output layers: scores, shapes and location logits of a trained head's spread."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.dim() > 1 else 0.5) / max(1, p[0].numel()) ** 0.5)


def mmdet_head(num_classes: int = 3):
    from mmdet_reference import import_mmdet

    import_mmdet()
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    register_all_modules()
    configs = Path(importlib.util.find_spec("mmdet").origin).parent / ".mim" / "configs"
    cfg = Config.fromfile(str(configs / "guided_anchoring/ga-retinanet_r50_fpn_1x_coco.py"))
    head_cfg = cfg.model.bbox_head
    head_cfg.update(num_classes=num_classes, in_channels=CHANNELS, feat_channels=CHANNELS, stacked_convs=2,
                    train_cfg=cfg.model.train_cfg, test_cfg=cfg.model.test_cfg)
    return MODELS.build(head_cfg)


def dettool_name(name: str) -> str:
    """An MMDetection GARetinaHead parameter's dettool name (the converter's rules)."""
    name = re.sub(r"^(cls|reg)_convs\.(\d+)\.conv\.", lambda m: f"{m[1]}_convs.{2 * int(m[2])}.", name)
    return name.replace(".conv_adaption.weight", ".weight")


def instances(targets: list[dict]):
    from mmengine.structures import InstanceData

    return [InstanceData(bboxes=t["boxes"], labels=t["labels"]) for t in targets]


def test_outputs_and_losses_equal_mmdetection(monkeypatch):
    ref = mmdet_head().train()
    head = dettool_head()
    spread_outputs(head)
    mine = head.state_dict()
    ref.load_state_dict({name: mine[dettool_name(name)] for name in ref.state_dict()})
    feats = features(2)
    targets = [gt(0, 6), gt(1, 3)]
    raw, ref_raw = head(feats), ref(feats)
    for got, want in zip(raw, ref_raw):
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, atol=1e-5, rtol=0)
    orig = ref.loss_loc_single

    def swapped(loc_pred, loc_target, loc_weight, avg_factor):  # 0-based labels: the centre is class 0
        return orig(loc_pred, 1 - loc_target, loc_weight, avg_factor)

    monkeypatch.setattr(ref, "loss_loc_single", swapped)
    metas = [{"img_shape": (H, W), "pad_shape": (H, W), "batch_input_shape": (H, W)}] * 2
    want = {k: sum(v) for k, v in ref.loss_by_feat(*ref_raw, instances(targets), metas).items()}
    got = head.loss(raw, targets, METAS)
    assert set(got) == set(want)
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=1e-5, rtol=1e-4, msg=key)
    assert float(got["loss_shape"].detach()) > 0 and float(got["loss_bbox"].detach()) > 0


def test_mmdetection_trains_the_location_branch_with_swapped_labels():
    """MMDetection 3.3's loss_loc rewards a low centre probability inside the centre region."""
    ref = mmdet_head().train()
    head = dettool_head()
    feats = features(1)
    targets = [gt(0, 4)]
    raw = head(feats)
    loc_t, _, _ = location_targets([targets[0]["boxes"]], [tuple(f.shape[-2:]) for f in feats], STRIDES, 4.0, 0.2, 0.5)
    high_at_centres = [torch.where(t > 0, 6.0, -6.0) for t in loc_t]
    ours = float(head.location_loss(high_at_centres, targets))
    metas = [{"img_shape": (H, W), "pad_shape": (H, W), "batch_input_shape": (H, W)}]
    theirs = float(sum(ref.loss_by_feat(raw[0], raw[1], raw[2], high_at_centres, instances(targets),
                                        metas)["loss_loc"]))
    assert ours < 1e-3 < theirs


def test_empty_ground_truth_gives_finite_losses_and_zero_box_losses():
    head = dettool_head()
    spread_outputs(head)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    losses = head.loss(head(features(2)), [empty, empty], METAS)
    assert all(torch.isfinite(v) for v in losses.values())
    assert float(losses["loss_cls"]) > 0 and float(losses["loss_loc"]) > 0
    assert float(losses["loss_bbox"]) == 0 and float(losses["loss_shape"]) == 0
    sum(losses.values()).backward()
    assert head.retina_cls.weight.grad is not None and head.conv_loc.weight.grad.abs().sum() > 0


def test_batch_images_have_their_own_targets():
    """An image's targets do not depend on the other images of its batch: the losses of a batch
    of two, rescaled by their normalisers, are those of the two images alone."""
    head = dettool_head(ga_sampler=S.PseudoSamplerConfig())
    spread_outputs(head)
    feats = features(2)
    targets = [gt(0, 5), gt(1, 2)]
    both = head.loss(head(feats), targets, METAS)
    alone = [head.loss(head([f[i:i + 1] for f in feats]), [targets[i]], METAS[:1]) for i in range(2)]
    # loss_loc is normalised by the batch's locations / 200: a batch of two halves each image's sum
    torch.testing.assert_close(both["loss_loc"], (alone[0]["loss_loc"] + alone[1]["loss_loc"]) / 2)
    assert float(both["loss_cls"]) > 0


def test_decode_drops_locations_below_the_location_threshold():
    head = dettool_head().eval()
    spread_outputs(head)
    cls, reg, shape, loc = head(features(1))
    shapes = torch.tensor([[H, W]], dtype=torch.float32)
    none_kept = head.decode((cls, reg, shape, [torch.full_like(t, -10.0) for t in loc]), shapes)
    assert int(none_kept.num_dets[0]) == 0
    all_kept = head.decode((cls, reg, shape, [torch.full_like(t, 10.0) for t in loc]), shapes)
    assert int(all_kept.num_dets[0]) > 0
    # masking a location is the same as that location scoring 0 in every class
    mask = [torch.rand(t.shape, generator=torch.Generator().manual_seed(i)) > 0.5 for i, t in enumerate(loc)]
    masked = head.decode((cls, reg, shape, [torch.where(m, 10.0, -10.0) for m in mask]), shapes)
    zeroed = head.decode(([torch.where(m, c, -1e4) for m, c in zip(mask, cls)], reg, shape,
                          [torch.full_like(t, 10.0) for t in loc]), shapes)
    torch.testing.assert_close(masked.boxes, zeroed.boxes)
    torch.testing.assert_close(masked.scores, zeroed.scores)
    assert levels_to_rows(cls[0], 3).shape[1] == cls[0].shape[2] * cls[0].shape[3]  # one anchor per location


@pytest.mark.parametrize("key, value", [("square_anchor", S.AnchorConfig(ratios=(0.5, 1.0))),
                                        ("square_anchor", S.AnchorConfig(ratios=(1.0,), scales_per_octave=1,
                                                                         octave_base_scale=8.0))])
def test_config_refuses_squares_that_do_not_fit_the_approximating_anchors(key, value):
    from dettool.config.schema.common import Invalid

    with pytest.raises(Invalid, match=key):
        S.GARetinaHeadConfig(**{key: value})
