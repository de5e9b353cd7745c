"""Balanced L1 against hand-computed values (both pieces, where they meet), weights, avg_factor,
empty input, the builder, and MMDetection's ``BalancedL1Loss``."""
from __future__ import annotations

import math

import pytest
import torch

from dettool.config import schema as S
from dettool.trainer.builder.losses import build_loss
from dettool.trainer.models.losses import BalancedL1Loss

# |pred - target| -> loss, computed by hand from b = e^(gamma / alpha) - 1 = e^3 - 1 (alpha 0.5, gamma 1.5):
#   x < beta: alpha / b (b x + 1) ln(b x / beta + 1) - alpha x;  x >= beta: gamma x + gamma / b - alpha beta
B = math.exp(3.0) - 1
BETA_1 = {0.0: 0.0, 0.5: 0.4005675069053246, 1.0: 1.5 + 1.5 / B - 0.5, 2.0: 2.5785935447368837}
BETA_011 = {0.05: 0.09119712419983295, 0.11: 0.18859354473688394, 0.3: 0.4735935447368839}


def loss_fn(beta: float = 1.0, weight: float = 1.0) -> BalancedL1Loss:
    return BalancedL1Loss(alpha=0.5, gamma=1.5, beta=beta, weight=weight)


@pytest.mark.parametrize("beta, table", [(1.0, BETA_1), (0.11, BETA_011)])
def test_inlier_and_outlier_pieces_by_hand(beta, table):
    for diff, expected in table.items():
        pred = torch.tensor([[diff, -diff, 0.0, 0.0]])  # |x| on both signs; two exact predictions
        loss = loss_fn(beta)(pred, torch.zeros(1, 4), avg_factor=1.0)
        assert loss.item() == pytest.approx(2 * expected, rel=1e-5, abs=1e-7)


def test_the_pieces_meet_at_beta():
    below, above = torch.tensor([[0.11 - 1e-6, 0, 0, 0]]), torch.tensor([[0.11, 0, 0, 0]])
    loss = loss_fn(0.11)
    assert loss(below, torch.zeros(1, 4), avg_factor=1.0).item() == pytest.approx(
        loss(above, torch.zeros(1, 4), avg_factor=1.0).item(), abs=1e-5)


def test_weights_avg_factor_and_loss_weight():
    pred = torch.tensor([[0.5, 2.0, 0.0, 0.0], [2.0, 0.5, 0.5, 0.0]])
    weight = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])  # the second box does not count
    loss = loss_fn(weight=2.0)(pred, torch.zeros(2, 4), weight, avg_factor=4.0)
    assert loss.item() == pytest.approx(2.0 * (BETA_1[0.5] + BETA_1[2.0]) / 4.0, rel=1e-5)
    mean = loss_fn()(pred, torch.zeros(2, 4))  # no avg_factor: the mean over elements
    assert mean.item() == pytest.approx((3 * BETA_1[0.5] + 2 * BETA_1[2.0]) / 8, rel=1e-5)


def test_empty_input_is_zero_with_a_gradient():
    pred = torch.zeros((0, 4), requires_grad=True)
    loss = loss_fn(0.11)(pred, torch.zeros(0, 4), torch.zeros(0, 4), avg_factor=1.0)
    assert loss.item() == 0.0
    loss.backward()


def test_inliers_get_a_larger_gradient_than_smooth_l1():
    """The point of the loss: at |x| = 0.05 (beta 0.11) balanced L1's gradient exceeds smooth L1's x / beta.
    By hand: alpha ln(b x / beta + 1) + alpha (b x + 1) / (b x + beta) - alpha."""
    pred = torch.tensor([[0.05, 0.0, 0.0, 0.0]], requires_grad=True)
    loss_fn(0.11)(pred, torch.zeros(1, 4), avg_factor=1.0).backward()
    bx = B * 0.05
    assert pred.grad[0, 0].item() == pytest.approx(0.5 * math.log(bx / 0.11 + 1) + 0.5 * (bx + 1) / (bx + 0.11) - 0.5,
                                                   rel=1e-5)
    assert pred.grad[0, 0].item() > 0.05 / 0.11


def test_builder_builds_the_configured_loss():
    loss = build_loss(S.BalancedL1LossConfig(beta=0.11, weight=2.0), key="model.bbox_head.loss_bbox")
    assert isinstance(loss, BalancedL1Loss) and not loss.decoded_boxes
    assert (loss.alpha, loss.gamma, loss.beta, loss.weight) == (0.5, 1.5, 0.11, 2.0)


def test_equals_mmdetection():
    from mmdet_reference import import_mmdet

    import_mmdet()
    from mmdet.models.losses import BalancedL1Loss as MMDetBalancedL1Loss

    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(64, 4, generator=g) * 0.3, torch.randn(64, 4, generator=g) * 0.3
    weight = (torch.rand(64, 1, generator=g) > 0.3).float().expand(64, 4)
    for beta in (1.0, 0.11):
        ref = MMDetBalancedL1Loss(alpha=0.5, gamma=1.5, beta=beta, loss_weight=1.5)(pred, target, weight,
                                                                                    avg_factor=17.0)
        ours = loss_fn(beta, weight=1.5)(pred, target, weight, avg_factor=17.0)
        assert ours.item() == pytest.approx(ref.item(), rel=1e-6)
