"""SyncBN in training: synchronised on CUDA only, refused by name for multi-process CPU runs."""
from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from detector_helpers import CONFIGS
from torch import nn

from dettool.config import load_config
from dettool.errors import ConfigError
from dettool.trainer import builder
from dettool.trainer.distributed import DistInfo
from dettool.trainer.train import sync_batch_norm

CONFIG = CONFIGS / "retinanet_r18_fpn_synth.yaml"
CPU_PAIR = DistInfo(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"))
CPU_ALONE = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def test_pytorch_sync_batch_norm_still_refuses_cpu_tensors_under_gloo():
    """The reason for the refusal below: when this fails, PyTorch synchronises CPU tensors and
    dettool's refusal (trainer/train.py ``sync_batch_norm``) can be lifted."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        norm = nn.SyncBatchNorm(3).train()
        with pytest.raises(ValueError, match="SyncBatchNorm expected input tensor to be on GPU"):
            norm(torch.randn(2, 3, 4, 4))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(("overrides", "message"), [
    (["train.sync_bn=true"], "train.sync_bn: PyTorch's SyncBatchNorm synchronises CUDA tensors only (on CPU tensors "
     "it raises 'SyncBatchNorm expected input tensor to be on GPU'); set train.sync_bn=false for this 2-process "
     "CPU run"),
    (["model.backbone.norm=syncbn"], "model.backbone.norm: PyTorch's SyncBatchNorm synchronises CUDA tensors only "
     "(on CPU tensors it raises 'SyncBatchNorm expected input tensor to be on GPU'); set model.backbone.norm=bn "
     "for this 2-process CPU run"),
])
def test_multi_process_cpu_sync_bn_is_refused_naming_the_key(overrides, message):
    cfg = load_config(CONFIG, overrides)
    with pytest.raises(ConfigError) as error:
        sync_batch_norm(builder.build_model(cfg), cfg, CPU_PAIR)
    assert str(error.value) == message


def test_one_process_or_no_sync_bn_leaves_the_model_alone():
    for overrides, info in ((["train.sync_bn=true"], CPU_ALONE), (["model.backbone.norm=syncbn"], CPU_ALONE),
                            ([], CPU_PAIR)):
        cfg = load_config(CONFIG, overrides)
        model = builder.build_model(cfg)
        assert sync_batch_norm(model, cfg, info) is model


def test_single_process_sync_batch_norm_trains_as_batch_norm():
    """Without a process group ``nn.SyncBatchNorm`` normalises and updates its statistics as BN."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, 5) * 2 + 1
    sync, bn = nn.SyncBatchNorm(3).train(), nn.BatchNorm2d(3).train()
    torch.testing.assert_close(sync(x), bn(x))
    torch.testing.assert_close(sync.running_mean, bn.running_mean)
    torch.testing.assert_close(sync.running_var, bn.running_var)
