"""Optimizer config -> the optimizer over the model's trainable parameters."""
from __future__ import annotations

import torch
from torch import nn

from dettool.config import schema as S

# Normalization layers, as MMEngine's optimizer constructor tells them (``norm_decay_mult``).
NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


def build_optimizer(cfg: S.OptimizerConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD or AdamW; norm weights and biases (1-D parameters) get no weight decay unless
    ``decay_norm_and_bias``; with ``norm_decay_mult`` the parameters of normalization layers
    (``NORM_LAYERS``) get ``weight_decay * norm_decay_mult`` instead."""
    norm_params = set()
    if cfg.norm_decay_mult is not None:
        norm_params = {id(p) for m in model.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters(False)}
    decay, no_decay, norm = [], [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if id(p) in norm_params:
            norm.append(p)
        else:
            (no_decay if p.ndim <= 1 and not cfg.decay_norm_and_bias else decay).append(p)
    norm_decay = cfg.weight_decay * (cfg.norm_decay_mult or 0.0)
    groups = [g for g in ({"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay,
                                                                                "weight_decay": 0.0},
                          {"params": norm, "weight_decay": norm_decay})
              if g["params"]]
    return OPTIMIZERS[cfg.type](groups, cfg)


# ``train.optimizer.type`` -> the torch optimizer (the config's Literal admits exactly these keys).
OPTIMIZERS = {
    "sgd": lambda groups, c: torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum),
    "adamw": lambda groups, c: torch.optim.AdamW(groups, lr=c.lr, betas=c.betas),
}
