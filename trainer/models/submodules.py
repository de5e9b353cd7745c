"""Replacing submodules of a model in place, by qualified name (the one implementation behind
weight standardization at build time, its folding at export, and SyncBatchNorm's reversion)."""
from __future__ import annotations

from typing import Callable

from torch import nn


def replace_submodules(model: nn.Module, select: Callable[[str, nn.Module], bool],
                       replace: Callable[[nn.Module], nn.Module], *, what: str) -> nn.Module:
    """Replace, in place, every submodule ``m`` named ``name`` with ``select(name, m)`` by
    ``replace(m)``; returns ``model``.

    The candidates are listed before any is replaced, so a replacement's own children are not
    visited. ``model`` itself cannot be replaced in place: if it is selected, ``ValueError``
    (``what`` names it, e.g. "the conv").
    """
    chosen = [(name, m) for name, m in model.named_modules() if select(name, m)]
    if any(name == "" for name, _ in chosen):
        raise ValueError(f"pass the module holding {what}, not {what} itself")
    for name, m in chosen:
        model.set_submodule(name, replace(m))
    return model
