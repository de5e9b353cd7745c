"""Optimizer config -> the optimizer over the model's trainable parameters."""
from __future__ import annotations

import torch
from torch import nn

from dettool.config import schema as S


def build_optimizer(cfg: S.OptimizerConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD or AdamW; norm weights and biases (1-D parameters) get no weight decay unless
    ``decay_norm_and_bias``."""
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 and not cfg.decay_norm_and_bias else decay).append(p)
    groups = [g for g in ({"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay,
                                                                                "weight_decay": 0.0})
              if g["params"]]
    return OPTIMIZERS[cfg.type](groups, cfg)


# ``train.optimizer.type`` -> the torch optimizer (the config's Literal admits exactly these keys).
OPTIMIZERS = {
    "sgd": lambda groups, c: torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum),
    "adamw": lambda groups, c: torch.optim.AdamW(groups, lr=c.lr, betas=c.betas),
}
