"""Backbone weights from a local file: a classification model's state dict, or the backbone of a
detector checkpoint (dettool's or MMDetection's), each tensor checked against the backbone."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from dettool.errors import CheckpointError


def read_backbone_state(path: str | Path, head_prefix: str | tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The backbone tensors of the file at ``path`` (``weights_only``): a state dict (``head_prefix``
    entries, the classifier, dropped) or a checkpoint's ``state_dict`` / ``model`` (its
    ``backbone.*`` entries when it is a whole detector). ``CheckpointError`` names the file."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: backbone weights file not found")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise CheckpointError(f"{p}: cannot read backbone weights ({type(exc).__name__}: {exc})") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if any(k.startswith("backbone.") for k in state):  # a whole detector: its backbone only
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    return {k: v for k, v in state.items() if not k.startswith(head_prefix)}


def load_backbone_weights(module: nn.Module, path: str | Path, head_prefix: str | tuple[str, ...],
                          optional: Callable[[str], bool] = lambda key: False) -> None:
    """Load ``read_backbone_state(path)`` into ``module``; a tensor of the wrong shape, a missing
    one (unless ``optional(key)``: layers the file's model never had) or an unexpected one is a
    ``CheckpointError`` naming it."""
    state = read_backbone_state(path, head_prefix)
    own = module.state_dict()
    bad = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if bad:
        raise CheckpointError(f"{path}: shape mismatch for {bad[0]} ({tuple(state[bad[0]].shape)} vs "
                              f"{tuple(own[bad[0]].shape)}); wrong depth?")
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if not optional(k)]
    unexpected = [k for k in unexpected if not k.endswith("num_batches_tracked")]
    if missing:
        raise CheckpointError(f"{path}: backbone weights lack {len(missing)} tensors, e.g. {missing[0]}")
    if unexpected:
        raise CheckpointError(f"{path}: backbone weights have {len(unexpected)} unexpected tensors, "
                              f"e.g. {unexpected[0]}; wrong depth?")


def init_for_scratch(module: nn.Module) -> None:
    """MMDetection's initialisation of a backbone without pretrained weights (mmcv's ``kaiming_init``
    and ``constant_init``): every conv Kaiming normal (fan_out, ReLU gain), every BatchNorm /
    GroupNorm weight 1 and bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
