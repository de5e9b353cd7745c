"""RetinaHead and FCOSHead built from config: empty-gt losses (mmdetection's test_fcos_head.py
pattern), one-gt losses, and ``predict`` in original-image pixels."""
from __future__ import annotations

import math

import pytest
import torch

from dettool.config import schema as S
from dettool.structures.detections import Detections
from dettool.trainer.builder.dense_heads import build_dense_head
from dettool.trainer.models.dense_heads.fcos_head import FCOSHead
from dettool.trainer.models.dense_heads.retina_head import RetinaHead

NUM_CLASSES = 3
IN_CHANNELS = 8
# a 48 x 64 (h x w) resized image in a 64 x 64 padded batch; the original was 80 x 120
META = {"img_shape": (48, 64), "pad_shape": (64, 64), "ori_shape": (80, 120), "scale_factor": (64 / 120, 48 / 80)}


def _retina(**test) -> RetinaHead:
    cfg = S.RetinaHeadConfig(feat_channels=16, stacked_convs=1,
                             anchor=S.AnchorConfig(strides=(8, 16), ratios=(0.5, 1.0, 2.0), octave_base_scale=4.0,
                                                   scales_per_octave=1))
    head = build_dense_head(cfg, NUM_CLASSES, (IN_CHANNELS,) * 2, S.TestConfig(**test))
    assert isinstance(head, RetinaHead)
    return head


def _fcos(**test) -> FCOSHead:
    cfg = S.FCOSHeadConfig(feat_channels=16, stacked_convs=1, strides=(8, 16),
                           regress_ranges=((-1.0, 64.0), (64.0, 1e8)))
    head = build_dense_head(cfg, NUM_CLASSES, (IN_CHANNELS,) * 2, S.TestConfig(**test))
    assert isinstance(head, FCOSHead)
    return head


def _feats(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, IN_CHANNELS, 8, 8, generator=g), torch.randn(2, IN_CHANNELS, 4, 4, generator=g)]


def _empty_targets() -> list[dict]:
    return [{"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.long)} for _ in range(2)]


def _one_gt_targets() -> list[dict]:
    box = torch.tensor([[5.0, 7.0, 45.0, 38.0]])  # not aligned with any anchor, inside img_shape
    return [{"boxes": box, "labels": torch.tensor([1])}, {"boxes": box + 4.0, "labels": torch.tensor([2])}]


@pytest.fixture(params=["retina", "fcos"])
def head(request):
    torch.manual_seed(0)
    return _retina() if request.param == "retina" else _fcos()


def test_build_dense_head_rejects_stride_level_mismatch():
    from dettool.errors import ConfigError

    with pytest.raises(ConfigError, match="strides"):
        build_dense_head(S.FCOSHeadConfig(feat_channels=16, stacked_convs=1), NUM_CLASSES, (IN_CHANNELS,) * 2,
                         S.TestConfig())


def test_forward_shapes(head):
    raw = head(_feats())
    a = head.num_anchors if isinstance(head, RetinaHead) else 1
    assert [tuple(c.shape) for c in raw[0]] == [(2, a * NUM_CLASSES, 8, 8), (2, a * NUM_CLASSES, 4, 4)]
    assert [tuple(r.shape) for r in raw[1]] == [(2, a * 4, 8, 8), (2, a * 4, 4, 4)]
    if isinstance(head, FCOSHead):
        assert [tuple(c.shape) for c in raw[2]] == [(2, 1, 8, 8), (2, 1, 4, 4)]


def test_empty_gt_only_classification_loss(head):
    losses = head.loss(head(_feats()), _empty_targets(), [META, META])
    assert set(losses) == ({"loss_cls", "loss_bbox"} if isinstance(head, RetinaHead)
                           else {"loss_cls", "loss_bbox", "loss_centerness"})
    assert losses["loss_cls"].item() > 0 and math.isfinite(losses["loss_cls"].item())
    for name, value in losses.items():
        if name != "loss_cls":
            assert value.item() == 0, f"{name} must be 0 without ground truth"
    # every term stays in the graph (no unused parameters under DDP) and backpropagates
    total = sum(losses.values())
    assert all(v.requires_grad for v in losses.values())
    total.backward()
    assert all(p.grad is not None for p in head.parameters() if p.requires_grad)


def test_one_gt_all_losses_positive_and_finite(head):
    losses = head.loss(head(_feats()), _one_gt_targets(), [META, META])
    for name, value in losses.items():
        assert math.isfinite(value.item()), name
        assert value.item() > 0, name
    sum(losses.values()).backward()


def test_one_gt_losses_differ_from_empty_gt(head):
    # the gt must actually produce positives: more classification loss on the same predictions
    raw = head(_feats())
    empty = head.loss(raw, _empty_targets(), [META, META])["loss_cls"]
    one = head.loss(raw, _one_gt_targets(), [META, META])["loss_cls"]
    assert one.item() > empty.item()


@pytest.mark.parametrize("kind", ["retina", "fcos"])
def test_predict_caps_detections_and_stays_in_original_image(kind):
    torch.manual_seed(0)
    head = _retina(score_thr=0.0, max_per_img=5) if kind == "retina" else _fcos(score_thr=0.0, max_per_img=5)
    with torch.no_grad():
        raw = list(head(_feats(1)))
        # large random regression so that many boxes run out of the image and get clipped
        g = torch.Generator().manual_seed(2)
        if kind == "retina":
            raw[1] = [torch.randn(r.shape, generator=g) * 2 for r in raw[1]]
        else:
            raw[1] = [torch.rand(r.shape, generator=g) * 80 for r in raw[1]]
    dets = head.predict(tuple(raw), [META, META])
    assert len(dets) == 2
    h, w = META["ori_shape"]
    for d in dets:
        assert isinstance(d, Detections)
        assert 0 < len(d) <= 5
        assert d.boxes.shape == (len(d), 4) and d.labels.shape == (len(d),)
        assert (d.boxes[:, 0::2] >= 0).all() and (d.boxes[:, 0::2] <= w).all()
        assert (d.boxes[:, 1::2] >= 0).all() and (d.boxes[:, 1::2] <= h).all()
        assert ((d.labels >= 0) & (d.labels < NUM_CLASSES)).all()
        assert (d.scores[:-1] >= d.scores[1:]).all()  # sorted by score


def test_retina_predict_rescales_a_single_confident_anchor():
    head = _retina()
    a = head.num_anchors
    cls = [torch.full((1, a * NUM_CLASSES, 8, 8), -10.0), torch.full((1, a * NUM_CLASSES, 4, 4), -10.0)]
    reg = [torch.zeros(1, a * 4, 8, 8), torch.zeros(1, a * 4, 4, 4)]
    # level 0, y = 2, x = 3, anchor 1 (ratio 1: 32 x 32 centred on (24, 16)), class 2
    cls[0][0, 1 * NUM_CLASSES + 2, 2, 3] = 10.0
    (det,) = head.predict((cls, reg), [META])
    assert len(det) == 1 and det.labels.tolist() == [2]
    assert det.scores.item() == pytest.approx(1 / (1 + math.exp(-10.0)), rel=1e-5)
    sx, sy = META["scale_factor"]
    # [8, 0, 40, 32] in resized pixels (y1 clipped at 0), divided by the scale factors
    torch.testing.assert_close(det.boxes, torch.tensor([[8 / sx, 0.0, 40 / sx, 32 / sy]]))


def test_fcos_predict_clips_to_image_then_rescales():
    head = _fcos()
    cls = [torch.full((1, NUM_CLASSES, 8, 8), -10.0), torch.full((1, NUM_CLASSES, 4, 4), -10.0)]
    dist = [torch.ones(1, 4, 8, 8), torch.ones(1, 4, 4, 4)]
    ctr = [torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 4, 4)]
    cls[0][0, 0, 2, 3] = 10.0  # point (3.5 * 8, 2.5 * 8) = (28, 20)
    dist[0][0, :, 2, 3] = torch.tensor([4.0, 4.0, 100.0, 4.0])  # right side runs past img width 64
    (det,) = head.predict((cls, dist, ctr), [META])
    assert len(det) == 1 and det.labels.tolist() == [0]
    assert det.scores.item() == pytest.approx(0.5 / (1 + math.exp(-10.0)), rel=1e-5)  # x sigmoid(0) centerness
    sx, sy = META["scale_factor"]
    torch.testing.assert_close(det.boxes, torch.tensor([[24 / sx, 16 / sy, 64 / sx, 24 / sy]]))


def test_shared_head_rejects_levels_of_different_channels():
    from dettool.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model.bbox_head: .*one channel count.*\[8, 16\]"):
        build_dense_head(S.RetinaHeadConfig(feat_channels=16, stacked_convs=1, anchor=S.AnchorConfig(strides=(8, 16))),
                         NUM_CLASSES, (8, 16), S.TestConfig())
