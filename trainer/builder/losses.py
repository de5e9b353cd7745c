"""Loss configs -> loss modules."""
from __future__ import annotations

from torch import nn

from dettool.config import schema as S
from dettool.trainer.builder.table import Table
from dettool.trainer.models import losses as L

LOSSES = Table("loss", {
    S.FocalLossConfig: lambda c: L.FocalLoss(gamma=c.gamma, alpha=c.alpha, weight=c.weight),
    S.GHMCLossConfig: lambda c: L.GHMCLoss(bins=c.bins, momentum=c.momentum, weight=c.weight),
    S.BCELossConfig: lambda c: L.BCEWithLogitsLoss(weight=c.weight),
    S.CrossEntropyLossConfig: lambda c: L.CrossEntropyLoss(weight=c.weight),
    S.SmoothL1LossConfig: lambda c: L.SmoothL1Loss(beta=c.beta, weight=c.weight),
    S.L1LossConfig: lambda c: L.L1Loss(weight=c.weight),
    S.IoULossConfig: lambda c: L.IoULoss(mode=c.mode, weight=c.weight),
    S.GIoULossConfig: lambda c: L.GIoULoss(weight=c.weight),
    S.GHMRLossConfig: lambda c: L.GHMRLoss(mu=c.mu, bins=c.bins, momentum=c.momentum, weight=c.weight),
    S.BalancedL1LossConfig: lambda c: L.BalancedL1Loss(alpha=c.alpha, gamma=c.gamma, beta=c.beta, weight=c.weight),
    S.BoundedIoULossConfig: lambda c: L.BoundedIoULoss(beta=c.beta, weight=c.weight, eps=c.eps),
})


def build_loss(cfg, key: str) -> nn.Module:
    """The loss module of ``cfg`` (config key ``key``)."""
    return LOSSES.build(cfg, key=key)
