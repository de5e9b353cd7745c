"""Weight-standardized convs: the standardization by hand, equality with mmcv's ConvWS2d, folding
into a plain conv, and which convs ``conv: ws`` reaches in the backbone, the FPN and the box head."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from dettool.config import load_config
from dettool.config import schema as C
from dettool.errors import ConfigError
from dettool.trainer.builder.backbones import build_backbone
from dettool.trainer.builder.necks import build_neck
from dettool.trainer.builder.roi_heads import build_bbox_head
from dettool.trainer.models.backbones.conv_ws import ConvWS2d, standardize_convs, standardize_weight
from dettool.trainer.models.backbones.deform_conv import DeformConv2dPack

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def test_standardized_weight_by_hand():
    # channel 0: mean 2, unbiased std 1; channel 1: mean 2, unbiased std sqrt(18 / 2) = 3
    weight = torch.tensor([[1.0, 2.0, 3.0], [5.0, -1.0, 2.0]], dtype=torch.float64).view(2, 1, 1, 3)
    eps = 1e-5
    expected = torch.tensor([[-1.0 / (1 + eps), 0.0, 1.0 / (1 + eps)],
                             [3.0 / (3 + eps), -3.0 / (3 + eps), 0.0]], dtype=torch.float64).view(2, 1, 1, 3)
    torch.testing.assert_close(standardize_weight(weight, eps), expected, atol=1e-12, rtol=0)
    conv = ConvWS2d(1, 2, (1, 3), bias=False).double()
    with torch.no_grad():
        conv.weight.copy_(weight)
    x = torch.randn(1, 1, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(conv(x), F.conv2d(x, expected), atol=1e-12, rtol=0)


@pytest.mark.parametrize("kwargs", [dict(kernel_size=3, padding=1), dict(kernel_size=1, stride=2, bias=False),
                                    dict(kernel_size=3, padding=2, dilation=2, groups=4)])
def test_equals_mmcv_conv_ws(kwargs):
    from mmdet_reference import import_mmdet

    import_mmdet()
    from mmcv.cnn.bricks.conv_ws import ConvWS2d as MMCVConvWS2d

    torch.manual_seed(0)
    ref = MMCVConvWS2d(8, 16, **kwargs)
    ours = ConvWS2d(8, 16, **kwargs)
    ours.load_state_dict(ref.state_dict())
    assert ours.eps == ref.eps == 1e-5
    x = torch.randn(2, 8, 9, 11, requires_grad=True)
    out_ref, out = ref(x), ours(x)
    torch.testing.assert_close(out, out_ref, atol=1e-6, rtol=0)
    grad = torch.randn_like(out)
    (g_ref,) = torch.autograd.grad(out_ref, ref.weight, grad)
    (g,) = torch.autograd.grad(out, ours.weight, grad)
    torch.testing.assert_close(g, g_ref, atol=1e-5, rtol=1e-5)  # the standardization is trained through


def test_channels_last_weight():
    torch.manual_seed(0)
    conv = ConvWS2d(8, 16, 3, padding=1)
    x = torch.randn(2, 8, 9, 11)
    ref = conv(x)
    conv = conv.to(memory_format=torch.channels_last)  # dettool's train.channels_last (mmcv's view would fail)
    torch.testing.assert_close(conv(x.to(memory_format=torch.channels_last)), ref, atol=1e-5, rtol=0)


def test_folded_conv_equals_the_standardized_conv():
    torch.manual_seed(0)
    ws = ConvWS2d(8, 16, 3, padding=2, dilation=2, stride=2, groups=2)
    with torch.no_grad():
        ws.weight.mul_(5).add_(0.3)  # far from standardized already
        ws.bias.normal_()
    plain = ws.folded()
    assert type(plain) is nn.Conv2d
    assert not plain.weight.data_ptr() == ws.weight.data_ptr()
    x = torch.randn(2, 8, 13, 17)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), ws(x), atol=1e-5, rtol=0)
        assert not torch.allclose(F.conv2d(x, ws.weight, ws.bias, 2, 2, 2, 2), ws(x), atol=1e-2)


def test_standardize_convs_keeps_the_parameters_and_replaces_plain_convs_only():
    dcn = DeformConv2dPack(4, 4, 3, padding=1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Sequential(dcn, nn.Conv2d(4, 4, 1)))
    params = [model[0].weight, model[0].bias, model[1][1].weight]
    model[0].weight.requires_grad_(False)  # frozen stays frozen
    standardize_convs(model, select=lambda name: name == "0")
    assert type(model[0]) is ConvWS2d and type(model[1][1]) is nn.Conv2d and type(dcn.conv_offset) is nn.Conv2d
    assert model[0].weight is params[0] and model[0].bias is params[1] and not model[0].weight.requires_grad
    standardize_convs(model)  # no select: every plain conv, a deformable conv's offset conv too
    assert type(model[1][1]) is ConvWS2d and model[1][1].weight is params[2]
    assert type(dcn) is DeformConv2dPack and type(dcn.conv_offset) is ConvWS2d
    assert type(model[0]) is ConvWS2d  # not standardized twice


def _names(module: nn.Module, kind: type) -> set[str]:
    return {name for name, m in module.named_modules() if type(m) is kind}


def test_resnet_standardizes_its_own_convs_not_its_plugins():
    dcn = C.DCNPluginConfig(stages=(False, False, True, True))
    plain = build_backbone(C.ResNetConfig(depth=18, norm="gn", plugins=(dcn,)))
    ws = build_backbone(C.ResNetConfig(depth=18, norm="gn", conv="ws", plugins=(dcn,)))
    expected = {n for n in _names(plain, nn.Conv2d) if "conv_offset" not in n}
    assert "conv1" in expected and "layer2.0.downsample.0" in expected and "layer3.0.conv2" not in expected
    assert _names(ws, ConvWS2d) == expected
    assert _names(ws, nn.Conv2d) == {n for n in _names(plain, nn.Conv2d) if "conv_offset" in n}
    assert plain.state_dict().keys() == ws.state_dict().keys()  # plain and MMDetection weights load unchanged
    frozen = {n for n, p in ws.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, p in plain.named_parameters() if not p.requires_grad} and "conv1.weight" in frozen


def test_fpn_and_box_head_standardize_all_their_convs():
    fpn = build_neck(C.FPNConfig(out_channels=64, num_outs=5, add_extra_convs="on_input", norm="gn", conv="ws"),
                     (64, 128, 256, 512))
    assert not _names(fpn, nn.Conv2d) and len(_names(fpn, ConvWS2d)) == 4 + 4 + 1  # lateral, output, extra
    head = build_bbox_head(C.ConvFCBBoxHeadConfig(num_shared_convs=4, num_shared_fcs=1, conv_out_channels=64,
                                                  norm="gn", conv="ws"), 3, 64, 7, "model.roi_head.bbox_head")
    assert _names(head, ConvWS2d) == {f"shared_convs.{3 * i}" for i in range(4)} and not _names(head, nn.Conv2d)
    cls, reg = head(torch.randn(5, 64, 7, 7))
    assert cls.shape == (5, 4) and reg.shape == (5, 12)


def test_synth_config_builds_standardized_parts_and_bad_values_name_the_key():
    cfg = load_config(CONFIGS / "faster_rcnn_r18_fpn_gn_ws_synth.yaml")
    assert (cfg.model.backbone.conv, cfg.model.neck.conv, cfg.model.roi_head.bbox_head.conv) == ("ws",) * 3
    with pytest.raises(ConfigError, match=r"model\.roi_head\.bbox_head\.conv: .*num_shared_convs"):
        load_config(CONFIGS / "faster_rcnn_r18_fpn_gn_ws_synth.yaml", ["model.roi_head.bbox_head.num_shared_convs=0"])
    with pytest.raises(ConfigError, match=r"model\.backbone\.conv"):
        load_config(CONFIGS / "faster_rcnn_r18_fpn_gn_ws_synth.yaml", ["model.backbone.conv=convws"])
