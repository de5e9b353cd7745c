"""Normalization layer factory: FrozenBN | BN | SyncBN | GN."""
from __future__ import annotations

from typing import Callable

from torch import nn
from torchvision.ops import FrozenBatchNorm2d

NORMS = ("frozen_bn", "bn", "syncbn", "gn")


def norm_layer(kind: str, gn_groups: int = 32) -> Callable[[int], nn.Module]:
    """Return ``channels -> nn.Module`` for ``kind`` in ``NORMS``.

    SyncBN synchronises statistics across processes when run under ``torch.distributed``
    (CUDA only in PyTorch); in a single process it behaves as BN.
    """
    if kind == "frozen_bn":
        return FrozenBatchNorm2d
    if kind == "bn":
        return nn.BatchNorm2d
    if kind == "syncbn":
        return nn.SyncBatchNorm
    if kind == "gn":
        return lambda channels: nn.GroupNorm(gn_groups, channels)
    raise ValueError(f"unknown norm {kind!r}; expected one of {NORMS}")
