"""SSDHead: hard negative mining against hand-computed sums, empty ground truth, batch > 1, and
losses and detections equal to MMDetection's ``SSDHead`` on the same weights (skipped without it)."""
from __future__ import annotations

import math

import pytest
import torch
from mmdet_reference import import_mmdet, without_ssd_predict_bug
from torch.nn import functional as F

from dettool.config import schema as S
from dettool.trainer.builder.dense_heads import build_dense_head
from dettool.trainer.models.dense_heads.ssd_head import SSDHead, hard_negative_sum

NUM_CLASSES = 3
CHANNELS = (8, 16, 8, 8, 8, 8)
SIZES = [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]
META = {"img_shape": (300, 300), "pad_shape": (300, 300), "ori_shape": (300, 300), "scale_factor": (1.0, 1.0)}
GT = {"boxes": torch.tensor([[20.0, 30.0, 90.0, 120.0], [150.0, 100.0, 290.0, 280.0], [5.0, 200.0, 40.0, 230.0]]),
      "labels": torch.tensor([0, 2, 1])}
EMPTY = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.long)}


def ssd_head(**test) -> SSDHead:
    torch.manual_seed(0)
    head = build_dense_head(S.SSDHeadConfig(), NUM_CLASSES, CHANNELS,
                            S.TestConfig(**{"score_thr": 0.02, "nms_iou_thr": 0.45, "max_per_img": 200,
                                            "min_bbox_size": 0, **test}))
    assert isinstance(head, SSDHead)
    return head


def feats(batch: int, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, h, w, generator=g) for c, (h, w) in zip(CHANNELS, SIZES)]


def test_hard_negative_sum_by_hand():
    c = 2  # background label
    loss = torch.tensor([[0.5, 2.0, 1.0, 3.0, 0.1, 0.7],    # 1 positive: 3 negatives kept (3, 2, 1)
                         [0.4, 0.3, 9.0, 8.0, 0.2, 0.6],    # 2 positives: all 4 negatives (< 6)
                         [1.0, 5.0, 2.0, 0.0, 0.0, 0.0]])   # no positive: no negative kept
    labels = torch.tensor([[0, c, c, c, c, c], [1, c, 0, c, c, c], [c, c, c, c, c, c]])
    expected = (0.5 + 3.0 + 2.0 + 1.0) + (0.4 + 9.0 + 0.3 + 8.0 + 0.2 + 0.6) + 0.0
    assert hard_negative_sum(loss, labels, num_classes=c, neg_pos_ratio=3).item() == pytest.approx(expected)
    # ratio 1 keeps one negative per positive: the highest
    assert hard_negative_sum(loss[:1], labels[:1], num_classes=c, neg_pos_ratio=1).item() == pytest.approx(3.5)


def test_forward_shapes_per_level():
    head = ssd_head()
    cls, reg = head(feats(2))
    assert [tuple(x.shape) for x in cls] == [(2, a * (NUM_CLASSES + 1), h, w)
                                             for a, (h, w) in zip([4, 6, 6, 6, 4, 4], SIZES)]
    assert [tuple(x.shape) for x in reg] == [(2, a * 4, h, w) for a, (h, w) in zip([4, 6, 6, 6, 4, 4], SIZES)]
    assert sum(x.shape[1] // 4 * x.shape[2] * x.shape[3] for x in reg) == 8732


def test_losses_by_hand_from_targets():
    """The loss is the mined cross-entropy and smooth L1 over the batch, divided by the positives."""
    head = ssd_head()
    raw = head(feats(2))
    losses = head.loss(raw, [GT, GT], [META, META])
    _, labels, label_weights, box_targets, box_weights, num_pos = head.targets(SIZES, [GT, GT], [META, META],
                                                                               torch.device("cpu"))
    assert num_pos == int((labels < NUM_CLASSES).sum())
    assert num_pos > 3  # each gt takes at least its best anchor, most take several
    cls = torch.cat([c.permute(0, 2, 3, 1).reshape(2, -1, NUM_CLASSES + 1) for c in raw[0]], 1)
    reg = torch.cat([r.permute(0, 2, 3, 1).reshape(2, -1, 4) for r in raw[1]], 1)
    expected_cls = 0.0
    for b in range(2):
        ce = F.cross_entropy(cls[b], labels[b], reduction="none")
        pos, neg = labels[b] < NUM_CLASSES, labels[b] == NUM_CLASSES
        k = min(3 * int(pos.sum()), int(neg.sum()))
        expected_cls += ce[pos].sum() + ce[neg].topk(k).values.sum()
    torch.testing.assert_close(losses["loss_cls"], expected_cls / num_pos)
    pos = box_weights[..., 0] > 0
    expected_box = F.smooth_l1_loss(reg[pos], box_targets[pos], beta=1.0, reduction="sum") / num_pos
    torch.testing.assert_close(losses["loss_bbox"], expected_box)


def test_empty_ground_truth_gives_zero_losses():
    """MMDetection's test_ssd_head pattern: without ground truth no anchor is positive, so no
    negative is mined either and both losses are 0 (finite, with a graph)."""
    head = ssd_head()
    losses = head.loss(head(feats(2)), [EMPTY, EMPTY], [META, META])
    assert losses["loss_cls"].item() == 0 and losses["loss_bbox"].item() == 0
    assert losses["loss_cls"].requires_grad
    one = head.loss(head(feats(2)), [EMPTY, GT], [META, META])  # one image with objects, one without
    assert one["loss_cls"].item() > 0 and one["loss_bbox"].item() > 0 and all(math.isfinite(v.item())
                                                                              for v in one.values())


def test_batch_of_two_equals_each_image_alone():
    head = ssd_head().eval()
    x = feats(2)
    both = head.predict(head(x), [META, META])
    for b in range(2):
        alone = head.predict(head([f[b:b + 1] for f in x]), [META])[0]
        assert len(alone) == len(both[b]) > 0
        torch.testing.assert_close(both[b].boxes, alone.boxes, atol=1e-4, rtol=0)
        torch.testing.assert_close(both[b].scores, alone.scores, atol=1e-6, rtol=0)
        assert torch.equal(both[b].labels, alone.labels)
    # softmax scores of the C foreground classes: in (0, 1), at most 200 per image
    assert all(0 < float(d.scores.min()) and float(d.scores.max()) < 1 and len(d) <= 200 for d in both)


def mmdet_ssd_head(head: SSDHead):
    """MMDetection's SSDHead with SSD300's settings and ``head``'s weights."""
    import_mmdet()
    from mmdet.models.dense_heads import SSDHead as MMSSDHead
    from mmengine.config import ConfigDict
    from mmengine.structures import InstanceData

    train_cfg = ConfigDict(assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.0,
                                         ignore_iof_thr=-1, gt_max_assign_all=False),
                           sampler=dict(type="PseudoSampler"), smoothl1_beta=1.0, allowed_border=-1, pos_weight=-1,
                           neg_pos_ratio=3, debug=False)
    test_cfg = ConfigDict(nms_pre=1000, nms=dict(type="nms", iou_threshold=0.45), min_bbox_size=0, score_thr=0.02,
                          max_per_img=200)
    ref = MMSSDHead(num_classes=NUM_CLASSES, in_channels=CHANNELS,
                    anchor_generator=dict(type="SSDAnchorGenerator", scale_major=False, input_size=300,
                                          basesize_ratio_range=(0.15, 0.9), strides=[8, 16, 32, 64, 100, 300],
                                          ratios=[[2], [2, 3], [2, 3], [2, 3], [2], [2]]),
                    bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4,
                                    target_stds=[0.1, 0.1, 0.2, 0.2]),
                    train_cfg=train_cfg, test_cfg=test_cfg)
    ref.load_state_dict(head.state_dict())
    return without_ssd_predict_bug(ref), InstanceData


def test_losses_and_detections_equal_mmdetection():
    head = ssd_head().eval()
    ref, InstanceData = mmdet_ssd_head(head)
    ref.eval()
    x = feats(2, seed=3)
    raw, ref_raw = head(x), ref(tuple(x))
    for a, b in zip(raw[0] + raw[1], ref_raw[0] + ref_raw[1]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    gts = [InstanceData(bboxes=t["boxes"], labels=t["labels"]) for t in (GT, EMPTY)]
    metas = [dict(META, batch_input_shape=(300, 300)), dict(META, batch_input_shape=(300, 300))]
    ref_losses = ref.loss_by_feat(*ref_raw, gts, metas)
    losses = head.loss(raw, [GT, EMPTY], [META, META])
    torch.testing.assert_close(losses["loss_cls"], sum(ref_losses["loss_cls"]).reshape(()), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses["loss_bbox"], sum(ref_losses["loss_bbox"]).reshape(()), rtol=1e-5, atol=1e-6)
    ref_dets = ref.predict_by_feat(*ref_raw, batch_img_metas=metas, rescale=True)
    dets = head.predict(raw, [META, META])
    for d, r in zip(dets, ref_dets):
        assert len(d) == len(r.bboxes) > 0
        torch.testing.assert_close(d.boxes, r.bboxes, atol=1e-3, rtol=0)
        torch.testing.assert_close(d.scores, r.scores, atol=1e-6, rtol=0)
        assert torch.equal(d.labels, r.labels)
