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
    names = [name for name, m in model.named_modules() if select(name, m)]
    if "" in names:
        raise ValueError(f"pass the module holding {what}, not {what} itself")
    for name in names:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, attr, replace(getattr(parent, attr)))
    return model
