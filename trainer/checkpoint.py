"""Checkpoint files: safe loading (``weights_only=True``), RNG state capture."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from dettool.errors import CheckpointError


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint with ``weights_only=True``; ``CheckpointError`` names the file on failure."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, truncated file, foreign pickle: all user errors here
        raise CheckpointError(f"{path}: not a readable dettool checkpoint ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(f"{path}: not a dettool checkpoint (no 'model' entry)")
    return ckpt


def load_model_weights(model: torch.nn.Module, ckpt: dict, path: str | Path) -> None:
    """Strictly load ``ckpt['model']``; a mismatch with the config is reported, not raised raw."""
    state = ckpt["model"]
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in state if k in own and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        if wrong:
            detail = (f"shape of {wrong[0]} is {tuple(state[wrong[0]].shape)}, the config builds "
                      f"{tuple(own[wrong[0]].shape)}")
        else:
            detail = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise CheckpointError(f"{path}: checkpoint does not match the config's model ({detail})")
    model.load_state_dict(state)


def checkpoint_classes(ckpt: dict, num_classes: int,
                       category_ids: list[int] | None = None) -> tuple[list[str], list[int]]:
    """Class names and COCO category ids of a checkpoint's ``num_classes`` labels.

    From the checkpoint's ``meta`` (written by training and by ``dettool convert``), else the
    config's ``data.category_ids`` (a converted checkpoint's label map), else ``class_<i>`` and
    ``1..C``.
    """
    meta = ckpt.get("meta") or {}
    names = list(meta.get("class_names") or [f"class_{i}" for i in range(num_classes)])
    cat_ids = [int(c) for c in (meta.get("cat_ids") or category_ids or range(1, num_classes + 1))]
    return names, cat_ids


def rng_state() -> dict:
    """Python, NumPy, torch (and CUDA) RNG states in ``weights_only``-loadable types."""
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)),
                                                      "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                                                      "cached": float(np_state[4])},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
