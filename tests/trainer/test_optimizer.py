"""Optimizer parameter groups: weight decay of norms and biases (``decay_norm_and_bias``, ``norm_decay_mult``)."""
from __future__ import annotations

import pytest
from detector_helpers import CONFIGS
from torch import nn

from dettool.config import load_config
from dettool.config.schema import OptimizerConfig
from dettool.errors import ConfigError
from dettool.trainer.builder.optim import build_optimizer


def decay_of(cfg: OptimizerConfig) -> dict[str, float]:
    """Parameter name -> its weight decay in the optimizer built over convs, norms and a linear layer."""
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.BatchNorm2d(4), nn.SyncBatchNorm(4),
                      nn.Flatten(), nn.Linear(4, 2))
    optimizer = build_optimizer(cfg, m)
    by_id = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    return {name: by_id[id(p)] for name, p in m.named_parameters()}


NORMS = ["1.weight", "1.bias", "2.weight", "2.bias", "3.weight", "3.bias"]


def test_norm_decay_mult_scales_the_decay_of_norm_layers_only():
    wd = 1e-4
    got = decay_of(OptimizerConfig(weight_decay=wd, decay_norm_and_bias=True, norm_decay_mult=0.0))
    assert got == {"0.weight": wd, "0.bias": wd, **dict.fromkeys(NORMS, 0.0), "5.weight": wd, "5.bias": wd}
    got = decay_of(OptimizerConfig(weight_decay=wd, decay_norm_and_bias=False, norm_decay_mult=0.5))
    assert got == {"0.weight": wd, "0.bias": 0.0, **dict.fromkeys(NORMS, wd / 2), "5.weight": wd, "5.bias": 0.0}


def test_without_norm_decay_mult_norms_are_decayed_as_other_one_dim_parameters():
    wd = 1e-4
    got = decay_of(OptimizerConfig(weight_decay=wd, decay_norm_and_bias=True))
    assert set(got.values()) == {wd}
    got = decay_of(OptimizerConfig(weight_decay=wd, decay_norm_and_bias=False))
    assert got == {"0.weight": wd, "0.bias": 0.0, **dict.fromkeys(NORMS, 0.0), "5.weight": wd, "5.bias": 0.0}


def test_negative_norm_decay_mult_is_refused_by_key():
    with pytest.raises(ConfigError, match="train.optimizer.norm_decay_mult"):
        load_config(CONFIGS / "retinanet_r18_fpn_synth.yaml", ["train.optimizer.norm_decay_mult=-1"])
