"""GHM-C and GHM-R against hand-computed values, their moving averages, and GHM RetinaNet's losses."""
from __future__ import annotations

import math

import pytest
import torch
from detector_helpers import CONFIGS, empty_and_one_gt_losses
from torch.nn import functional as F

from dettool.config import load_config
from dettool.trainer import builder
from dettool.trainer.models.losses import GHMCLoss, GHMRLoss


def test_ghmc_weights_by_inverse_bin_density():
    # one class, four anchors: targets 1, 0, 0, 0; logits chosen so that g = |p - t| is
    # 0.9 (anchor 0: p = 0.1, t = 1) and 0.1, 0.2, 0.3 (anchors 1-3: p = g, t = 0). Two bins
    # [0, 0.5) and [0.5, 1]: bin 0 holds 3 anchors, bin 1 holds 1; tot = 4, 2 filled bins:
    # weights 4 / 1 / 2 = 2 for anchor 0 and 4 / 3 / 2 = 2/3 for the others.
    p = torch.tensor([0.1, 0.1, 0.2, 0.3])
    logits = torch.log(p / (1 - p))[:, None]
    labels = torch.tensor([0, 1, 1, 1])  # label 1 = background (C = 1)
    loss = GHMCLoss(bins=2, momentum=0.0, weight=1.0)(logits, labels, torch.ones(4))
    bce = F.binary_cross_entropy_with_logits(logits[:, 0], torch.tensor([1.0, 0.0, 0.0, 0.0]), reduction="none")
    expected = (2.0 * bce[0] + 2 / 3 * bce[1:].sum()) / 4
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_ghmc_ignores_zero_weight_anchors_and_scales_by_weight():
    logits = torch.tensor([[0.3, -1.0], [2.0, 0.5], [-0.7, 0.1]])
    labels = torch.tensor([0, 2, 1])
    full = GHMCLoss(bins=10, momentum=0.0, weight=1.0)(logits[:2], labels[:2], torch.ones(2))
    masked = GHMCLoss(bins=10, momentum=0.0, weight=1.0)(logits, labels, torch.tensor([1.0, 1.0, 0.0]))
    assert masked.item() == pytest.approx(full.item(), rel=1e-6)
    triple = GHMCLoss(bins=10, momentum=0.0, weight=3.0)(logits[:2], labels[:2], torch.ones(2))
    assert triple.item() == pytest.approx(3 * full.item(), rel=1e-6)


def test_ghmc_momentum_averages_bin_counts_and_is_saved():
    loss = GHMCLoss(bins=2, momentum=0.75, weight=1.0)
    p = torch.tensor([0.1, 0.1, 0.2, 0.3])
    logits = torch.log(p / (1 - p))[:, None]
    labels = torch.tensor([0, 1, 1, 1])
    loss(logits, labels, torch.ones(4))
    torch.testing.assert_close(loss.density.acc_sum, torch.tensor([0.25 * 3, 0.25 * 1]))
    loss(logits, labels, torch.ones(4))
    torch.testing.assert_close(loss.density.acc_sum, torch.tensor([0.75 * 0.75 + 0.75, 0.75 * 0.25 + 0.25]))
    assert "density.acc_sum" in loss.state_dict() and "density.edges" not in loss.state_dict()


def test_ghmr_authentic_smooth_l1_with_density_weights():
    # two positives (4 coordinates each, 8 valid entries), mu = 0.02; differences 0 (g = 0)
    # and 1 (g ~ 0.9998): two bins of 10 filled, 4 entries each: weights 8 / 4 / 2 = 1.
    mu = 0.02
    pred = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    target = torch.zeros(2, 4)
    loss = GHMRLoss(mu=mu, bins=10, momentum=0.0, weight=10.0)(pred, target, torch.ones(2, 4))
    asl1 = math.sqrt(1 + mu * mu) - mu
    assert loss.item() == pytest.approx(10.0 * 4 * asl1 / 8, rel=1e-6)


def test_ghmr_zero_weight_entries_do_not_count():
    pred = torch.tensor([[0.5, -0.2, 0.1, 0.0], [3.0, 3.0, 3.0, 3.0]])
    target = torch.zeros(2, 4)
    one = GHMRLoss(mu=0.02, bins=10, momentum=0.0, weight=1.0)(pred[:1], target[:1], torch.ones(1, 4))
    masked = GHMRLoss(mu=0.02, bins=10, momentum=0.0, weight=1.0)(pred, target, torch.tensor([[1.0] * 4, [0.0] * 4]))
    assert masked.item() == pytest.approx(one.item(), rel=1e-6)


def test_ghm_retinanet_losses_empty_and_one_gt(tiny_synth):
    cfg = load_config(CONFIGS / "ghm_retinanet_r18_fpn_synth.yaml", ["model.backbone.weights=null"])
    model = builder.build_model(cfg)
    head = model.bbox_head
    assert isinstance(head.loss_cls, GHMCLoss) and isinstance(head.loss_bbox, GHMRLoss)
    assert (head.loss_cls.density.bins, head.loss_cls.density.momentum, head.loss_bbox.weight) == (30, 0.75, 10.0)
    assert not head.reg_decoded_bbox  # GHM-R regresses deltas
    empty, losses = empty_and_one_gt_losses(model)
    assert empty["loss_cls"].item() > 0 and empty["loss_bbox"].item() == 0
    assert all(math.isfinite(v.item()) and v.item() > 0 for v in losses.values())
    sum(losses.values()).backward()


def test_ghm_losses_equal_mmdetection_over_several_steps():
    """The same inputs through MMDetection's ``GHMC`` / ``GHMR`` (their bin loops, momentum) and
    dettool's, three steps in a row: the moving averages must agree too."""
    from mmdet_reference import import_mmdet

    import_mmdet()
    from mmdet.models.losses import GHMC, GHMR

    ref_c, ours_c = GHMC(bins=30, momentum=0.75, loss_weight=1.0), GHMCLoss(bins=30, momentum=0.75, weight=1.0)
    ref_r, ours_r = GHMR(mu=0.02, bins=10, momentum=0.7, loss_weight=10.0), GHMRLoss(mu=0.02, bins=10, momentum=0.7,
                                                                                    weight=10.0)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        logits = torch.randn(200, 4, generator=g) * 3
        labels = torch.randint(0, 5, (200,), generator=g)  # 4 = background
        weights = (torch.rand(200, generator=g) > 0.1).float()
        ours = ours_c(logits, labels, weights)
        ref = ref_c(logits, labels, weights)
        assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
        pred, target = torch.randn(50, 4, generator=g), torch.randn(50, 4, generator=g) * 0.1
        box_weights = (torch.rand(50, 1, generator=g) > 0.5).float().expand(50, 4)
        assert ours_r(pred, target, box_weights).item() == pytest.approx(ref_r(pred, target, box_weights).item(),
                                                                         rel=1e-5)
    torch.testing.assert_close(ours_c.density.acc_sum, ref_c.acc_sum)
    torch.testing.assert_close(ours_r.density.acc_sum, ref_r.acc_sum)
