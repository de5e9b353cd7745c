"""BoundedIoULoss: hand-computed terms and loss, weights and normaliser, MMDetection's values."""
from __future__ import annotations

import torch

from dettool.trainer.models.losses import BoundedIoULoss
from dettool.trainer.models.losses.bounded_iou_loss import bounded_iou_terms

PRED = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), 10 x 20
TARGET = torch.tensor([[2.0, 0.0, 12.0, 10.0]])  # centre (7, 5), 10 x 10
EPS = 1e-3


def test_terms_hand_computed():
    # |dx| = 2, |dy| = 5 against a 10 x 10 target; widths 10 / 10, heights 20 / 10
    expected = torch.tensor([[1 - 6 / (14 + EPS), 1.0, 1 - 10 / (10 + EPS), 1 - 10 / (20 + EPS)]])
    torch.testing.assert_close(bounded_iou_terms(PRED, TARGET, EPS), expected)


def test_loss_is_smooth_l1_of_the_terms():
    d = [1 - 6 / (14 + EPS), 1.0, 1 - 10 / (10 + EPS), 1 - 10 / (20 + EPS)]
    beta = 0.2
    # dx, dy and dh are past the transition (d - beta / 2), dw below it (d^2 / (2 beta))
    expected = (d[0] - 0.1) + (d[1] - 0.1) + 0.5 * d[2] ** 2 / beta + (d[3] - 0.1)
    loss = BoundedIoULoss(beta=beta, weight=2.0)(PRED, TARGET, avg_factor=4.0)
    torch.testing.assert_close(loss, torch.tensor(2.0 * expected / 4.0))


def test_weights_and_identical_boxes():
    loss = BoundedIoULoss(beta=0.2, weight=1.0)
    torch.testing.assert_close(loss(TARGET, TARGET), torch.tensor(0.5 * (1 - 10 / (10 + EPS)) ** 2 / 0.2 / 2))
    assert float(loss(PRED, TARGET, torch.zeros(1, 4), avg_factor=1.0)) == 0.0
    assert float(loss(PRED[:0], TARGET[:0], torch.zeros(0, 4), avg_factor=1.0)) == 0.0


def test_gradient_flows_to_the_prediction_only():
    pred, target = PRED.clone().requires_grad_(), TARGET.clone().requires_grad_()
    BoundedIoULoss(beta=0.2, weight=1.0)(pred, target).backward()
    assert pred.grad.abs().sum() > 0 and target.grad is None


def test_values_equal_mmdetection():
    from mmdet_reference import import_mmdet

    import_mmdet()
    from mmdet.models.losses import BoundedIoULoss as Reference

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(30, 2, generator=g) * 50
    pred = torch.cat([xy, xy + 5 + torch.rand(30, 2, generator=g) * 40], 1)
    target = torch.cat([xy + 3, xy + 3 + 5 + torch.rand(30, 2, generator=g) * 40], 1)
    weight = (torch.rand(30, generator=g) > 0.3).float()[:, None].expand(-1, 4)
    got = BoundedIoULoss(beta=0.2, weight=1.5)(pred, target, weight, avg_factor=7.0)
    ref = Reference(beta=0.2, loss_weight=1.5)(pred, target, weight, avg_factor=7.0)
    torch.testing.assert_close(got, ref)
