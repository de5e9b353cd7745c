"""SyncBatchNorm becomes plain BatchNorm2d in the deploy graph, with the same outputs."""
from __future__ import annotations

import pytest
import torch
from detector_helpers import random_detector
from test_deploy_graph import assert_same, deploy_detections, tiny_cfg
from torch import nn

from dettool.exporters.deploy.detector import build_deploy_model
from dettool.exporters.deploy.sync_batch_norm import as_batch_norm, revert_sync_batch_norm
from dettool.trainer import builder


def randomise_statistics(model: nn.Module, seed: int = 0) -> None:
    """Running statistics and affine parameters away from their (0, 1) start, so BN matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def test_as_batch_norm_keeps_state_mode_and_outputs():
    sync = nn.SyncBatchNorm(6, eps=1e-3, momentum=0.03)
    randomise_statistics(sync)
    sync.num_batches_tracked.fill_(7)
    sync.bias.requires_grad_(False)
    bn = as_batch_norm(sync.eval())
    assert type(bn) is nn.BatchNorm2d and not bn.training
    assert (bn.eps, bn.momentum, bn.affine, bn.track_running_stats) == (1e-3, 0.03, True, True)
    assert bn.state_dict().keys() == sync.state_dict().keys()
    assert all(torch.equal(v, sync.state_dict()[k]) for k, v in bn.state_dict().items())
    assert bn.weight.requires_grad and not bn.bias.requires_grad
    assert bn.weight.data_ptr() != sync.weight.data_ptr()  # a copy: the trained model is left alone
    x = torch.randn(2, 6, 5, 7)
    torch.testing.assert_close(bn(x), sync(x), rtol=0, atol=0)


def test_revert_replaces_nested_norms_and_refuses_a_bare_norm():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SyncBatchNorm(4), nn.Sequential(nn.SyncBatchNorm(4)))
    assert revert_sync_batch_norm(model) is model
    assert [type(m) for m in model.modules()].count(nn.BatchNorm2d) == 2
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    with pytest.raises(ValueError, match="not the norm itself"):
        revert_sync_batch_norm(nn.SyncBatchNorm(4))


def test_deploy_graph_of_a_syncbn_model_has_plain_batch_norm_and_equals_predict(tiny_synth):
    cfg = tiny_cfg("retinanet", tiny_synth, "model.backbone.norm=syncbn")
    model = random_detector(cfg)
    randomise_statistics(model)
    num_sync = sum(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    assert num_sync == 20  # ResNet-18: the stem's, two per block, one per downsample
    deploy = build_deploy_model(model)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in deploy.modules())
    assert sum(type(m) is nn.BatchNorm2d for m in deploy.modules()) == num_sync
    assert sum(isinstance(m, nn.SyncBatchNorm) for m in model.modules()) == num_sync  # the model is not changed
    dataset = builder.build_dataset(cfg, "val")
    images, _, metas = next(iter(builder.build_dataloader(cfg, dataset, train=False, batch_size=3)))
    ref = model.predict(images, metas)
    assert sum(len(r) for r in ref) > 0
    assert_same(ref, deploy_detections(deploy, images, metas))
