"""Read MMDetection (2.x / 3.x) and torchvision checkpoints without unpickling foreign objects.

The file is read by ``torch.load(..., weights_only=True)``. What MMDetection's training
checkpoints hold besides the weights (mmengine's message hub with its ``HistoryBuffer`` logs,
NumPy scalars and arrays in them, optimizer and scheduler state) names classes that
``weights_only`` refuses. Those from mmengine, mmcv, mmdet and NumPy are mapped to an inert stand-in
(it is never imported, runs no code and keeps none of its state) and reported as skipped; they may
appear anywhere except among the weights. Any other class is refused, naming it.
"""
from __future__ import annotations

import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dettool.errors import CheckpointError

SKIPPABLE = ("mmengine.", "mmcv.", "mmdet.", "numpy.", "builtins.getattr")
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_MAX_FOREIGN = 64


class Skipped:
    """Stands in for a skipped foreign class or function: built from anything, keeps nothing."""

    name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Skipped:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> Skipped:
        return self


def _stand_in(name: str) -> type[Skipped]:
    return type(f"Skipped[{name}]", (Skipped,), {"name": name})


@dataclass
class ForeignCheckpoint:
    """``state_dict``: the weights; ``meta``: the checkpoint's metadata (``{}`` when it has none);
    ``skipped``: the foreign classes that were replaced by inert stand-ins."""

    state_dict: dict[str, torch.Tensor]
    meta: dict = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def _load(path: Path) -> tuple[Any, list[str]]:
    stand_ins: list[tuple[type, str]] = []
    while True:
        try:
            with torch.serialization.safe_globals(stand_ins):
                return torch.load(path, map_location="cpu", weights_only=True), [n for _, n in stand_ins]
        except Exception as exc:  # noqa: BLE001 (torch raises several types for unreadable files)
            found = _GLOBAL.search(str(exc))
            if found is None:
                raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt: "
                                      f"{type(exc).__name__})") from None
            name = found.group(1) if "." in found.group(1) else f"builtins.{found.group(1)}"
            if not name.startswith(SKIPPABLE):
                raise CheckpointError(f"{path}: holds a pickled {name}, which dettool does not unpickle (only "
                                      "tensors, containers and MMDetection's training metadata are read)") from None
            if len(stand_ins) >= _MAX_FOREIGN or any(n == name for _, n in stand_ins):
                raise CheckpointError(f"{path}: cannot be read with foreign classes skipped (at {name})") from None
            stand_ins.append((_stand_in(name), name))


def _skipped_inside(value: Any) -> str | None:
    if isinstance(value, Skipped):
        return value.name
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        for v in value:
            if (name := _skipped_inside(v)) is not None:
                return name
    return None


def read_foreign_checkpoint(path: str | Path) -> ForeignCheckpoint:
    """The weights and metadata of an MMDetection checkpoint (``{'state_dict': ..., 'meta': ...}``)
    or a torchvision / plain state dict (``{name: tensor}``); :class:`CheckpointError` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    if zipfile.is_zipfile(path):
        try:
            zipfile.ZipFile(path).testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt: "
                                  f"{type(exc).__name__})") from None
    obj, skipped = _load(path)
    if isinstance(obj, Mapping) and "state_dict" in obj:
        state, meta = obj["state_dict"], obj.get("meta") or {}
    else:
        state, meta = obj, {}
    if not isinstance(state, Mapping) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: holds no state dict (expected a 'state_dict' entry or a dict of tensors)")
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            what = f"pickled {v.name}" if isinstance(v, Skipped) else type(v).__name__
            raise CheckpointError(f"{path}: state dict entry {k!r} is a {what}, not a tensor")
    # metadata entries built from skipped classes are dropped (dettool reads only plain values there)
    meta = {k: v for k, v in meta.items() if _skipped_inside(v) is None} if isinstance(meta, Mapping) else {}
    return ForeignCheckpoint(dict(state), meta, skipped)
