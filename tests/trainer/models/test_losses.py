"""Each loss against hand-computed values on tiny tensors; weight and avg_factor semantics."""
from __future__ import annotations

import math

import pytest
import torch

from dettool.trainer.models.losses import BCEWithLogitsLoss, FocalLoss, GIoULoss, IoULoss, L1Loss, SmoothL1Loss
from dettool.trainer.models.losses.reduction import weight_reduce


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _focal_pos(z: float, alpha: float, gamma: float) -> float:
    p = _sigmoid(z)
    return -alpha * (1 - p) ** gamma * math.log(p)


def _focal_neg(z: float, alpha: float, gamma: float) -> float:
    p = _sigmoid(z)
    return -(1 - alpha) * p ** gamma * math.log(1 - p)


def assert_close(actual: torch.Tensor, expected: float, tol: float = 1e-6) -> None:
    assert actual.shape == ()
    assert actual.item() == pytest.approx(expected, rel=1e-5, abs=tol)


# ----------------------------------------------------------------------------------- focal


def test_focal_loss_one_positive_and_one_negative_logit():
    # one sample of class 0 among 2 classes: class 0 is a positive (z = 1), class 1 a negative (z = -2)
    loss = FocalLoss(gamma=2.0, alpha=0.25, weight=1.0)(torch.tensor([[1.0, -2.0]]), torch.tensor([0]), avg_factor=1.0)
    assert_close(loss, _focal_pos(1.0, 0.25, 2.0) + _focal_neg(-2.0, 0.25, 2.0))


def test_focal_loss_background_label_is_all_negative():
    # label C (= 2) is background: both classes are negatives
    loss = FocalLoss(gamma=2.0, alpha=0.25, weight=1.0)(torch.tensor([[0.5, 3.0]]), torch.tensor([2]), avg_factor=1.0)
    assert_close(loss, _focal_neg(0.5, 0.25, 2.0) + _focal_neg(3.0, 0.25, 2.0))


def test_focal_loss_gamma_zero_is_alpha_weighted_bce():
    loss = FocalLoss(gamma=0.0, alpha=0.5, weight=1.0)(torch.tensor([[0.3]]), torch.tensor([0]), avg_factor=1.0)
    assert_close(loss, -0.5 * math.log(_sigmoid(0.3)))


def test_focal_loss_weights_avg_factor_and_loss_weight():
    logits = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    labels = torch.tensor([1, 2])
    a, g = 0.25, 2.0
    per_sample = [_focal_neg(1.0, a, g) + _focal_pos(-2.0, a, g), _focal_neg(0.5, a, g) + _focal_neg(3.0, a, g)]
    # no avg_factor: mean over all N * C elements
    assert_close(FocalLoss(gamma=g, alpha=a, weight=1.0)(logits, labels), sum(per_sample) / 4)
    # avg_factor: sum / avg_factor
    assert_close(FocalLoss(gamma=g, alpha=a, weight=1.0)(logits, labels, avg_factor=2.5), sum(per_sample) / 2.5)
    # per-sample weights [N] scale every class of that sample
    assert_close(FocalLoss(gamma=g, alpha=a, weight=1.0)(logits, labels, torch.tensor([2.0, 0.0]), avg_factor=1.0),
                 2 * per_sample[0])
    # loss weight multiplies the result
    assert_close(FocalLoss(gamma=g, alpha=a, weight=3.0)(logits, labels, avg_factor=1.0), 3 * sum(per_sample))


# ----------------------------------------------------------------------------------- smooth L1 / L1


def test_smooth_l1_both_branches_beta_one():
    pred = torch.tensor([[0.5, -2.0, 0.0, 1.0]])
    loss = SmoothL1Loss(beta=1.0, weight=1.0)(pred, torch.zeros(1, 4), avg_factor=1.0)
    # |x| = 0.5 < 1: 0.5 * 0.25 / 1; |x| = 2: 2 - 0.5; 0; |x| = 1 (boundary): 1 - 0.5
    assert_close(loss, 0.125 + 1.5 + 0.0 + 0.5)


def test_smooth_l1_beta_one_ninth():
    beta = 1.0 / 9.0
    pred = torch.tensor([[0.05, 0.5, -0.1, 3.0]])
    loss = SmoothL1Loss(beta=beta, weight=1.0)(pred, torch.zeros(1, 4), avg_factor=1.0)
    expected = 0.5 * 0.05 ** 2 / beta + (0.5 - 0.5 * beta) + 0.5 * 0.1 ** 2 / beta + (3.0 - 0.5 * beta)
    assert_close(loss, expected, tol=1e-5)


def test_smooth_l1_beta_zero_is_l1():
    pred = torch.tensor([[0.05, -0.5, 2.0, 0.0]])
    assert_close(SmoothL1Loss(beta=0.0, weight=1.0)(pred, torch.zeros(1, 4), avg_factor=1.0), 2.55)


def test_l1_loss_with_weights_and_avg_factor():
    pred = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]])
    target = torch.tensor([[0.0, 4.0, 3.0, 3.5], [1.0, 1.0, 1.0, 1.0]])
    # |diff| = [1, 2, 0, 0.5], [1, 1, 1, 1]
    assert_close(L1Loss(weight=1.0)(pred, target), 7.5 / 8)
    assert_close(L1Loss(weight=1.0)(pred, target, avg_factor=3.0), 7.5 / 3)
    w = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    assert_close(L1Loss(weight=1.0)(pred, target, w, avg_factor=1.0), 3.5)
    assert_close(L1Loss(weight=2.0)(pred, target, w, avg_factor=2.0), 3.5)


# ----------------------------------------------------------------------------------- IoU / GIoU

PRED = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 4.0, 4.0]])
TARGET = torch.tensor([[5.0, 0.0, 15.0, 10.0], [0.0, 0.0, 4.0, 4.0]])  # IoU 50 / 150 = 1/3, and 1


def test_iou_loss_log_mode():
    assert_close(IoULoss(mode="log", weight=1.0)(PRED, TARGET, avg_factor=1.0), math.log(3.0))
    assert_close(IoULoss(mode="log", weight=1.0)(PRED, TARGET), math.log(3.0) / 2)  # mean over pairs


def test_iou_loss_linear_mode():
    assert_close(IoULoss(mode="linear", weight=1.0)(PRED, TARGET, avg_factor=1.0), 2.0 / 3.0)


def test_iou_loss_weights_and_disjoint_boxes():
    w = torch.tensor([0.5, 4.0])
    assert_close(IoULoss(mode="linear", weight=1.0)(PRED, TARGET, w, avg_factor=2.0), 0.5 * (2 / 3) / 2)
    disjoint = IoULoss(mode="log", weight=1.0, eps=1e-6)(torch.tensor([[0.0, 0.0, 1.0, 1.0]]),
                                                           torch.tensor([[5.0, 5.0, 6.0, 6.0]]))
    assert torch.isfinite(disjoint)
    assert_close(disjoint, -math.log(1e-6), tol=1e-4)  # IoU clamped to eps, not log(0)


def test_iou_loss_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        IoULoss(mode="square", weight=1.0)


def test_giou_loss_non_overlapping_pair_is_above_one():
    # IoU 0, union 2, enclosing box [0, 0, 3, 1] has area 3: GIoU = 0 - (3 - 2) / 3 = -1/3
    loss = GIoULoss(weight=1.0)(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([[2.0, 0.0, 3.0, 1.0]]),
                                avg_factor=1.0)
    assert_close(loss, 4.0 / 3.0)
    assert loss.item() > 1.0


def test_giou_loss_overlapping_and_weighted():
    # first pair: IoU 1/3 and the enclosing box is the union, so GIoU = IoU; second pair identical
    assert_close(GIoULoss(weight=1.0)(PRED, TARGET, avg_factor=1.0), 2.0 / 3.0)
    assert_close(GIoULoss(weight=2.0)(PRED, TARGET, torch.tensor([3.0, 1.0]), avg_factor=4.0), 2.0 * 3.0 * (2 / 3) / 4)


# ----------------------------------------------------------------------------------- BCE


def test_bce_with_logits_hand_values():
    logits = torch.tensor([0.5, -1.0])
    target = torch.tensor([1.0, 0.3])
    e0 = -math.log(_sigmoid(0.5))
    e1 = -(0.3 * math.log(_sigmoid(-1.0)) + 0.7 * math.log(1 - _sigmoid(-1.0)))
    assert_close(BCEWithLogitsLoss(weight=1.0)(logits, target), (e0 + e1) / 2)
    assert_close(BCEWithLogitsLoss(weight=1.0)(logits, target, avg_factor=1.0), e0 + e1)
    assert_close(BCEWithLogitsLoss(weight=0.5)(logits, target, torch.tensor([0.0, 2.0]), avg_factor=1.0), 0.5 * 2 * e1)


# ----------------------------------------------------------------------------------- reduction


def test_weight_reduce_semantics():
    loss = torch.tensor([1.0, 2.0, 3.0, 4.0])
    weight = torch.tensor([1.0, 0.0, 1.0, 0.0])
    assert_close(weight_reduce(loss, None, None), 2.5)
    assert_close(weight_reduce(loss, weight, None), 1.0)  # mean over all elements, zero weights included
    assert_close(weight_reduce(loss, weight, 2.0), 2.0)
    assert_close(weight_reduce(loss, None, torch.tensor(5.0)), 2.0)


def test_empty_inputs_give_zero_not_nan():
    empty = torch.zeros((0, 4))
    for loss in (L1Loss(weight=1.0)(empty, empty), SmoothL1Loss(beta=1.0, weight=1.0)(empty, empty),
                 IoULoss(mode="log", weight=1.0)(empty, empty),
                 GIoULoss(weight=1.0)(empty, empty), L1Loss(weight=1.0)(empty, empty, avg_factor=1.0)):
        assert loss.item() == 0.0
    focal = FocalLoss(gamma=2.0, alpha=0.25, weight=1.0)
    assert focal(torch.zeros((0, 3)), torch.zeros((0,), dtype=torch.long)).item() == 0.0
