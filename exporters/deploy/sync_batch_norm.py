"""Deploy-graph step: ``nn.SyncBatchNorm`` -> ``nn.BatchNorm2d`` holding the same parameters and statistics.

A SyncBatchNorm differs from BatchNorm only in training under a process group; in eval mode it
computes BN's ``F.batch_norm`` on its running statistics. The deploy graph holds plain
``nn.BatchNorm2d`` instead (MMEngine's ``revert_sync_batchnorm``), so the traced model asks
nothing of ``torch.distributed`` and the exporter meets the one BatchNorm it translates.
"""
from __future__ import annotations

from torch import nn

from dettool.trainer.models.submodules import replace_submodules


def as_batch_norm(sync: nn.SyncBatchNorm) -> nn.BatchNorm2d:
    """The ``nn.BatchNorm2d`` equal to ``sync``: same settings, parameters, running statistics,
    ``requires_grad`` and train / eval mode (copies, on the same device and dtype)."""
    reference = sync.weight if sync.affine else sync.running_mean
    kwargs = {} if reference is None else {"device": reference.device, "dtype": reference.dtype}
    bn = nn.BatchNorm2d(sync.num_features, eps=sync.eps, momentum=sync.momentum, affine=sync.affine,
                        track_running_stats=sync.track_running_stats, **kwargs)
    bn.load_state_dict(sync.state_dict())
    for name, p in bn.named_parameters():
        p.requires_grad_(getattr(sync, name).requires_grad)
    return bn.train(sync.training)


def revert_sync_batch_norm(model: nn.Module) -> nn.Module:
    """Replace, in place, every ``nn.SyncBatchNorm`` of ``model`` by its :func:`as_batch_norm`;
    returns ``model``. Inputs must be 4-D ``[N, C, H, W]`` (dettool's norms are all 2-D)."""
    return replace_submodules(model, lambda name, m: isinstance(m, nn.SyncBatchNorm), as_batch_norm, what="the norm")
