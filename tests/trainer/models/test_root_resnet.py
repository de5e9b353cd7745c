"""Root-ResNet (ScratchDet's backbone): the root block in place of ResNet's stem, stage strides and
shapes at 300x300; SSDNeck's BatchNorm option against MMDetection's ``SSDNeck(norm_cfg=BN)``; the
SSD head's BatchNorm after its predictors."""
from __future__ import annotations

import pytest
import torch
from mmdet_reference import import_mmdet
from torch import nn

from dettool.config import schema as S
from dettool.trainer.builder.backbones import build_backbone
from dettool.trainer.builder.dense_heads import build_dense_head
from dettool.trainer.builder.necks import build_neck
from dettool.trainer.models.backbones.root_resnet import RootResNet


def shapes_on_meta(module: nn.Module, size: int) -> list[tuple[int, ...]]:
    """Output shapes for a ``size`` x ``size`` image, without the arithmetic (meta tensors)."""
    with torch.device("meta"):
        return [tuple(f.shape) for f in module.to("meta")(torch.empty(1, 3, size, size))]


@pytest.mark.parametrize("depth", [18, 34])
def test_stages_at_300_run_at_strides_2_to_16(depth):
    with torch.device("meta"):
        backbone = build_backbone(S.RootResNetConfig(depth=depth, out_indices=(0, 1, 2, 3)))
    assert backbone.out_channels == (64, 128, 256, 512)
    assert shapes_on_meta(backbone, 300) == [(1, 64, 150, 150), (1, 128, 75, 75), (1, 256, 38, 38),
                                             (1, 512, 19, 19)]


def test_scratchdet_takes_ssds_38_and_19_levels():
    with torch.device("meta"):
        backbone = build_backbone(S.RootResNetConfig())  # Root-ResNet-34, stages 2 and 3
    assert shapes_on_meta(backbone, 300) == [(1, 256, 38, 38), (1, 512, 19, 19)]
    assert [len(s) for s in backbone.stages] == [3, 4, 6, 3]


def test_root_block_replaces_the_7x7_stem_and_its_pool():
    backbone = RootResNet(depth=18, out_indices=(3,), base_channels=64, norm="bn")
    convs = [m for m in backbone.root if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (3, 64, (3, 3), (1, 1)), (64, 64, (3, 3), (1, 1)), (64, 64, (3, 3), (1, 1))]
    assert [type(m) for m in backbone.root] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU] * 3
    assert (backbone.pool.kernel_size, backbone.pool.stride) == (2, 2)
    assert not any(isinstance(m, nn.Conv2d) and m.kernel_size == (7, 7) for m in backbone.modules())
    assert [s[0].conv1.stride for s in backbone.stages] == [(1, 1), (2, 2), (2, 2), (2, 2)]
    modules = list(backbone.modules())  # every conv is batch-normalised (trained from scratch)
    assert sum(isinstance(m, nn.Conv2d) for m in modules) == sum(isinstance(m, nn.BatchNorm2d) for m in modules)


def test_base_channels_narrow_every_stage_and_the_forward_runs():
    torch.manual_seed(0)
    backbone = RootResNet(depth=18, out_indices=(2, 3), base_channels=8, norm="bn").eval()
    with torch.no_grad():
        feats = backbone(torch.randn(2, 3, 300, 300))
    assert [tuple(f.shape) for f in feats] == [(2, 32, 38, 38), (2, 64, 19, 19)]
    assert backbone.out_channels == (32, 64)


def test_weights_load_from_a_detector_checkpoint(tmp_path):
    torch.manual_seed(0)
    source = RootResNet(depth=18, out_indices=(2, 3), base_channels=8, norm="bn")
    path = tmp_path / "det.pth"
    torch.save({"model": {f"backbone.{k}": v for k, v in source.state_dict().items()}}, path)
    loaded = RootResNet(depth=18, out_indices=(2, 3), base_channels=8, norm="bn", weights=str(path))
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in source.state_dict().items())


def test_scratchdet_neck_gives_ssd300_levels():
    cfg = S.SSDNeckConfig(out_channels=(256, 512, 512, 256, 256, 256), l2_norm_scale=None, norm="bn")
    with torch.device("meta"):
        backbone = build_backbone(S.RootResNetConfig())
        neck = build_neck(cfg, backbone.out_channels)
        outs = neck.eval()(backbone.eval()(torch.empty(1, 3, 300, 300)))
    assert [tuple(o.shape) for o in outs] == [(1, c, s, s) for c, s in zip(cfg.out_channels, (38, 19, 10, 5, 3, 1))]
    assert neck.l2_norm is None
    first = neck.extra_layers[0][0]
    assert first.conv.bias is None and isinstance(first.bn, nn.BatchNorm2d)


def test_ssd_neck_with_bn_equals_mmdetection():
    import_mmdet()
    from mmdet.models.necks import SSDNeck as MMSSDNeck

    settings = {"out_channels": (8, 16, 16, 8, 8, 8), "level_strides": (2, 2, 1, 1), "level_paddings": (1, 1, 0, 0),
                "l2_norm_scale": None, "last_kernel_size": 3}
    torch.manual_seed(0)
    neck = build_neck(S.SSDNeckConfig(**settings, norm="bn"), (8, 16))
    for m in neck.modules():  # non-trivial BN statistics and affine parameters
        if isinstance(m, nn.BatchNorm2d):
            for t in (m.weight, m.bias, m.running_mean):
                t.data.uniform_(-0.5, 0.5)
            m.running_var.data.uniform_(0.5, 1.5)
    reference = MMSSDNeck(in_channels=(8, 16), norm_cfg=dict(type="BN"), **settings)
    reference.load_state_dict(neck.state_dict(), strict=True)
    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(2, 8, 38, 38, generator=g), torch.randn(2, 16, 19, 19, generator=g)]
    neck.eval()
    reference.eval()
    with torch.no_grad():
        ours, ref = neck(feats), reference(tuple(feats))
    assert [o.shape[-1] for o in ours] == [38, 19, 10, 5, 3, 1]
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_ssd_head_predictor_norm_puts_bn_after_bias_free_predictors():
    channels = (8, 16, 8, 8, 8, 8)
    plain = build_dense_head(S.SSDHeadConfig(), 3, channels, S.TestConfig())
    normed = build_dense_head(S.SSDHeadConfig(predictor_norm="bn"), 3, channels, S.TestConfig())
    assert all(len(c) == 1 and c[0].bias is not None for c in list(plain.cls_convs) + list(plain.reg_convs))
    for conv in list(normed.cls_convs) + list(normed.reg_convs):
        assert conv[0].bias is None and isinstance(conv[1], nn.BatchNorm2d)
        assert conv[1].num_features == conv[0].out_channels
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(2, c, s, s, generator=g) for c, s in zip(channels, (38, 19, 10, 5, 3, 1))]
    cls, reg = normed.train()(feats)
    # in training each predictor output channel is batch-normalised: zero mean, unit variance
    flat = cls[0].transpose(0, 1).flatten(1)
    torch.testing.assert_close(flat.mean(1), torch.zeros(flat.shape[0]), atol=1e-5, rtol=0)
    assert [tuple(r.shape[1:]) for r in reg] == [(a * 4, s, s) for a, s in zip((4, 6, 6, 6, 4, 4),
                                                                             (38, 19, 10, 5, 3, 1))]
