"""RPNHead: shapes, empty / one-gt losses, MMDetection defaults, sampling cap and proposals."""
from __future__ import annotations

import math

import pytest
import torch

from dettool.config import schema as S
from dettool.structures.detections import Detections
from dettool.trainer.builder.dense_heads import build_rpn_head
from dettool.trainer.models.dense_heads.rpn_head import RPNHead
from dettool.trainer.models.losses import BCEWithLogitsLoss, SmoothL1Loss
from dettool.trainer.models.postprocess.nms import ProposalSettings
from dettool.trainer.models.task_modules.samplers import RandomSampler

IN_CHANNELS = 8
# a 48 x 64 (h x w) resized image in a 64 x 64 padded batch; the original was 80 x 120
META = {"img_shape": (48, 64), "pad_shape": (64, 64), "ori_shape": (80, 120), "scale_factor": (64 / 120, 48 / 80)}


ANCHOR = S.AnchorConfig(strides=(8, 16), ratios=(0.5, 1.0, 2.0), octave_base_scale=4.0, scales_per_octave=1)


def _rpn(sampler: RandomSampler | None = None, loss_bbox=None, **cfg) -> RPNHead:
    """The RPN of ``RPNHeadConfig`` (MMDetection's defaults) on two levels, ``cfg`` overriding it."""
    torch.manual_seed(0)
    head = build_rpn_head(S.RPNHeadConfig(**{"feat_channels": 16, "anchor": ANCHOR, **cfg}), IN_CHANNELS, 2)
    head.sampler = sampler or head.sampler
    head.loss_bbox = loss_bbox or head.loss_bbox
    return head


def _feats(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, IN_CHANNELS, 8, 8, generator=g), torch.randn(2, IN_CHANNELS, 4, 4, generator=g)]


def _empty_targets() -> list[dict]:
    return [{"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.long)} for _ in range(2)]


def _one_gt_targets() -> list[dict]:
    box = torch.tensor([[5.0, 7.0, 45.0, 38.0]])  # labels of any class: the RPN sees foreground only
    return [{"boxes": box, "labels": torch.tensor([1])}, {"boxes": box + 4.0, "labels": torch.tensor([2])}]


def test_mmdetection_defaults():
    head = build_rpn_head(S.RPNHeadConfig(), IN_CHANNELS, 5)
    assert head.num_classes == 1 and head.num_anchors == 3
    assert head.anchor_generator.strides == (4, 8, 16, 32, 64)
    a = head.assigner
    assert (a.pos_iou_thr, a.neg_iou_thr, a.min_pos_iou, a.ignore_iof_thr) == (0.7, 0.3, 0.3, -1.0)
    assert isinstance(head.sampler, RandomSampler)
    assert (head.sampler.num, head.sampler.pos_fraction, head.sampler.neg_pos_ub) == (256, 0.5, -1.0)
    assert isinstance(head.loss_cls, BCEWithLogitsLoss)
    assert isinstance(head.loss_bbox, SmoothL1Loss) and head.loss_bbox.beta == pytest.approx(1 / 9)
    assert head.allowed_border == -1
    assert head.test_proposals == ProposalSettings(nms_pre=1000, iou_thr=0.7, max_per_img=1000, min_bbox_size=0.0)
    assert head.train_proposals == ProposalSettings(nms_pre=2000, iou_thr=0.7, max_per_img=1000, min_bbox_size=0.0)
    for conv in (head.rpn_conv, head.rpn_cls, head.rpn_reg):
        assert conv.weight.std().item() == pytest.approx(0.01, rel=0.3) and not conv.bias.any()


def test_forward_shapes():
    head = _rpn()
    cls, reg = head(_feats())
    assert [tuple(c.shape) for c in cls] == [(2, 3, 8, 8), (2, 3, 4, 4)]
    assert [tuple(r.shape) for r in reg] == [(2, 12, 8, 8), (2, 12, 4, 4)]


def test_empty_gt_only_classification_loss():
    head = _rpn()
    losses = head.loss(head(_feats()), _empty_targets(), [META, META])
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_bbox"}
    assert losses["loss_rpn_cls"].item() > 0 and math.isfinite(losses["loss_rpn_cls"].item())
    assert losses["loss_rpn_bbox"].item() == 0
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in head.parameters())


def test_one_gt_both_losses_positive():
    head = _rpn()
    raw = head(_feats())
    targets = _one_gt_targets()
    losses = head.loss(raw, targets, [META, META])
    for name, value in losses.items():
        assert math.isfinite(value.item()) and value.item() > 0, name
    assert targets[0]["labels"].tolist() == [1]  # the caller's targets are not modified
    sum(losses.values()).backward()


def test_box_loss_uses_smooth_l1_beta_one_ninth():
    head = _rpn(sampler=RandomSampler(num=256, pos_fraction=0.5, neg_pos_ub=-1.0,
                                      generator=torch.Generator().manual_seed(0)))
    raw = head(_feats())
    loss = head.loss(raw, _one_gt_targets(), [META, META])["loss_rpn_bbox"]
    # the same loss with beta 1/9 swapped in explicitly, same sampling draws
    ref = _rpn(sampler=RandomSampler(num=256, pos_fraction=0.5, neg_pos_ub=-1.0,
                                     generator=torch.Generator().manual_seed(0)),
               loss_bbox=SmoothL1Loss(beta=1 / 9, weight=1.0))
    other = _rpn(sampler=RandomSampler(num=256, pos_fraction=0.5, neg_pos_ub=-1.0,
                                       generator=torch.Generator().manual_seed(0)),
                 loss_bbox=SmoothL1Loss(beta=1.0, weight=1.0))
    assert loss.item() == pytest.approx(ref.loss(raw, _one_gt_targets(), [META, META])["loss_rpn_bbox"].item())
    assert loss.item() != pytest.approx(other.loss(raw, _one_gt_targets(), [META, META])["loss_rpn_bbox"].item())


def test_objectness_loss_on_labels_matches_bce():
    logits = torch.tensor([[2.0], [-1.0], [0.5]])
    labels = torch.tensor([0, 1, 1])  # 0 = foreground, 1 = background (C = 1)
    weight = torch.tensor([1.0, 1.0, 0.0])
    got = BCEWithLogitsLoss(weight=1.0)(logits, labels, weight, avg_factor=2.0)
    ref = (torch.nn.functional.softplus(-logits[0, 0]) + torch.nn.functional.softplus(logits[1, 0])) / 2
    assert got.item() == pytest.approx(ref.item())


def test_neg_pos_ub_caps_sampled_negatives():
    head = _rpn(sampler=RandomSampler(num=256, pos_fraction=0.5, neg_pos_ub=2.0))
    sizes = [(8, 8), (4, 4)]
    anchors = torch.cat(head.anchor_generator.grid_anchors(sizes))
    valid = torch.cat(head.anchor_generator.valid_flags(sizes, META["pad_shape"], META["img_shape"]))
    target = {"boxes": torch.tensor([[5.0, 7.0, 45.0, 38.0]]), "labels": torch.tensor([0])}
    _, label_weights, _, box_weights, num_pos, num_neg = head._targets_single(anchors, valid, target, META)
    assert num_pos > 0
    assert num_neg == min(2 * num_pos, 256 - num_pos)
    assert int(label_weights.sum()) == num_pos + num_neg
    assert int(box_weights[:, 0].sum()) == num_pos
    # without ground truth the cap is 2 x max(num_pos, 1) = 2
    empty = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.long)}
    assert head._targets_single(anchors, valid, empty, META)[4:] == (0, 2)


def test_proposals_capped_sorted_inside_image_and_detached():
    head = _rpn(test_proposals=S.ProposalConfig(nms_pre=50, max_per_img=20),
                train_proposals=S.ProposalConfig(nms_pre=50, max_per_img=3))
    raw = list(head(_feats(1)))
    g = torch.Generator().manual_seed(2)
    raw[0] = [torch.randn(c.shape, generator=g) * 3 for c in raw[0]]
    raw[1] = [torch.randn(r.shape, generator=g) * 2 + 0 * r for r in raw[1]]  # still in the graph
    props = head.proposal_list(tuple(raw), [META, META], training=False)
    assert len(props) == 2
    h, w = META["img_shape"]
    for p in props:
        assert p.ndim == 2 and p.shape[1] == 5 and 0 < p.shape[0] <= 20
        assert not p.requires_grad
        assert (p[:-1, 4] >= p[1:, 4]).all()
        assert ((p[:, 4] >= 0) & (p[:, 4] <= 1)).all()
        assert (p[:, 0:4:2] >= 0).all() and (p[:, 0:4:2] <= w).all()
        assert (p[:, 1:4:2] >= 0).all() and (p[:, 1:4:2] <= h).all()
        assert ((p[:, 2] > p[:, 0]) & (p[:, 3] > p[:, 1])).all()  # min_bbox_size 0 drops empty boxes
    # the training-time proposals of a two-stage detector
    capped = head.proposal_list(tuple(raw), [META, META], training=True)
    assert all(p.shape[0] == 3 for p in capped)


def test_proposals_nms_is_per_level():
    head = _rpn(test_proposals=S.ProposalConfig(max_per_img=2))
    a = head.num_anchors
    cls = [torch.full((1, a, 8, 8), -10.0), torch.full((1, a, 4, 4), -10.0)]
    reg = [torch.zeros(1, a * 4, 8, 8), torch.zeros(1, a * 4, 4, 4)]
    # level 0, y = 2, x = 3, anchor 1 (32 x 32, centre (24, 16)): [8, 0, 40, 32]
    cls[0][0, 1, 2, 3] = 5.0
    # level 0, x = 4, shifted a quarter width left onto the same box: suppressed by the first
    cls[0][0, 1, 2, 4] = 4.0
    reg[0][0, 4:8, 2, 4] = torch.tensor([-0.25, 0.0, 0.0, 0.0])
    # level 1, y = 1, x = 1, anchor 1 (64 x 64, centre (16, 16)) moved and halved onto the same box:
    # another level, so NMS keeps it (MMDetection v2 groups its NMS by level)
    cls[1][0, 1, 1, 1] = 3.0
    reg[1][0, 4:8, 1, 1] = torch.tensor([0.125, 0.0, math.log(0.5), math.log(0.5)])
    (props,) = head.proposal_list((cls, reg), [META], training=False)
    torch.testing.assert_close(props[:, :4], torch.tensor([[8.0, 0.0, 40.0, 32.0], [8.0, 0.0, 40.0, 32.0]]))
    torch.testing.assert_close(props[:, 4], torch.tensor([5.0, 3.0]).sigmoid())


def test_predict_returns_detections_in_original_pixels():
    head = _rpn()
    a = head.num_anchors
    cls = [torch.full((1, a, 8, 8), -10.0), torch.full((1, a, 4, 4), -10.0)]
    reg = [torch.zeros(1, a * 4, 8, 8), torch.zeros(1, a * 4, 4, 4)]
    cls[0][0, 1, 2, 3] = 10.0
    (det,) = head.predict((cls, reg), [META])
    assert isinstance(det, Detections)
    assert det.labels.unique().tolist() == [0]
    sx, sy = META["scale_factor"]
    torch.testing.assert_close(det.boxes[0], torch.tensor([8 / sx, 0.0, 40 / sx, 32 / sy]))
    assert det.scores[0].item() == pytest.approx(1 / (1 + math.exp(-10.0)), rel=1e-5)
    assert (det.scores[:-1] >= det.scores[1:]).all()
