"""Precomputed proposals files (Fast R-CNN training and testing from an RPN's output).

A file holds ``{'format': 'dettool-proposals', 'version': 1, 'proposals': {image_id: Tensor[K, 5]}}``
written with ``torch.save`` and read back with ``torch.load(weights_only=True)``: plain tensors
only, never arbitrary pickles. Each row is (x1, y1, x2, y2, score) in original-image pixels.
"""
from __future__ import annotations

import numbers
from pathlib import Path

import torch

from dettool.errors import DataError
from dettool.io import atomic_save

FORMAT = "dettool-proposals"
VERSION = 1


def save_proposals(path: str | Path, proposals: dict[int, torch.Tensor]) -> None:
    """Write ``proposals`` (image id -> ``Tensor[K, 5]``) to ``path`` atomically.

    The tensors are stored as float32 CPU copies (a view never drags its whole storage along).
    The file appears complete or not at all: it is written beside ``path``, fsynced, then renamed.

    Raises: ``ValueError`` if an entry is not a ``Tensor[K, 5]`` under an integer image id.
    """
    data = {}
    for image_id, boxes in proposals.items():
        if isinstance(image_id, bool) or not isinstance(image_id, numbers.Integral):
            raise ValueError(f"proposals: image id {image_id!r} is not an int")
        if not isinstance(boxes, torch.Tensor) or boxes.ndim != 2 or boxes.shape[1] != 5:
            shape = tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__
            raise ValueError(f"proposals: image {image_id}: expected Tensor[K, 5], got {shape}")
        data[int(image_id)] = boxes.detach().to("cpu", torch.float32).clone()
    atomic_save({"format": FORMAT, "version": VERSION, "proposals": data}, path)


def load_proposals(path: str | Path) -> dict[int, torch.Tensor]:
    """Read a file written by ``save_proposals``: image id -> ``Tensor[K, 5]`` float32.

    Raises: ``DataError`` naming ``path`` if it is missing, unreadable, not a proposals file or
    holds an entry that is not a ``Tensor[K, 5]``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: proposals file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, random bytes: all user errors here
        raise DataError(f"{path}: not a readable proposals file ({type(exc).__name__})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT or not isinstance(obj.get("proposals"), dict):
        raise DataError(f"{path}: not a dettool proposals file (no '{FORMAT}' marker)")
    if obj.get("version") != VERSION:
        raise DataError(f"{path}: proposals file version {obj.get('version')!r}, expected {VERSION}")
    out = {}
    for image_id, boxes in obj["proposals"].items():
        if isinstance(image_id, bool) or not isinstance(image_id, int):
            raise DataError(f"{path}: image id {image_id!r} is not an int")
        if not isinstance(boxes, torch.Tensor) or boxes.ndim != 2 or boxes.shape[1] != 5:
            shape = tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__
            raise DataError(f"{path}: image {image_id}: proposals must be Tensor[K, 5], got {shape}")
        out[image_id] = boxes.float()
    return out
