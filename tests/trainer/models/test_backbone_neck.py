"""ResNet backbone (shapes, freezing, norms, DCN, local weights) and the FPN neck."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F
from torchvision.ops import FrozenBatchNorm2d

from dettool.config import schema as C
from dettool.errors import CheckpointError
from dettool.trainer.builder.backbones import build_backbone
from dettool.trainer.models.backbones.deform_conv import DeformConv2dPack
from dettool.trainer.models.backbones.resnet import ResNet
from dettool.trainer.models.necks.fpn import FPN


def _image(seed: int = 0, size: int = 64) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------- shapes


def resnet(**kwargs) -> ResNet:
    """The backbone of ``ResNetConfig(**kwargs)`` (the schema holds the defaults)."""
    return build_backbone(C.ResNetConfig(**kwargs))


@pytest.fixture(scope="module")
def r18() -> ResNet:
    """A default ResNet-18 (frozen BN, stem and stage 1 frozen), eval mode; tests must not change it."""
    torch.manual_seed(0)
    return resnet(depth=18).eval()


@pytest.fixture(scope="module")
def r50() -> ResNet:
    torch.manual_seed(0)
    return resnet(depth=50).eval()


@pytest.mark.parametrize("depth, channels", [(18, (128, 256, 512)), (50, (512, 1024, 2048))])
def test_resnet_output_shapes_and_channels(request, depth, channels):
    model = request.getfixturevalue(f"r{depth}")
    assert model.out_indices == (1, 2, 3)
    assert model.out_channels == channels
    with torch.no_grad():
        outs = model(_image())
    assert [tuple(o.shape) for o in outs] == [(1, channels[0], 8, 8), (1, channels[1], 4, 4), (1, channels[2], 2, 2)]


def test_resnet_rejects_unknown_depth_and_grouped_basic_blocks():
    args = dict(norm="bn", gn_groups=32, norm_eval=False, frozen_stages=-1, out_indices=(1, 2, 3))
    with pytest.raises(ValueError, match="depth"):
        resnet(depth=20, groups=1, width_per_group=64, **args)
    with pytest.raises(ValueError, match="ResNeXt"):
        resnet(depth=18, groups=32, width_per_group=4, **args)
    with pytest.raises(C.Invalid, match="ResNeXt"):
        C.ResNetConfig(depth=18, groups=32, width_per_group=4)


# ----------------------------------------------------------------------------------- freezing


def _bns(module: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


def test_frozen_stages_freeze_params_and_keep_their_bn_in_eval():
    model = resnet(depth=18, norm="bn", norm_eval=False, frozen_stages=1)
    model.train()
    for m in (model.conv1, model.bn1, model.layer1):
        assert all(not p.requires_grad for p in m.parameters())
    for m in (model.layer2, model.layer3, model.layer4):
        assert all(p.requires_grad for p in m.parameters())
    assert model.training and not model.bn1.training
    assert all(not bn.training for bn in _bns(model.layer1))
    assert all(bn.training for bn in _bns(model.layer2) + _bns(model.layer4))
    # frozen BN statistics do not move in a training-mode forward pass; trainable ones do
    frozen_mean = model.layer1[0].bn1.running_mean.clone()
    model(_image())
    assert torch.equal(model.layer1[0].bn1.running_mean, frozen_mean)
    assert torch.count_nonzero(model.layer2[0].bn1.running_mean) > 0
    model.eval()
    assert all(not m.training for m in model.modules())


def test_frozen_stages_zero_freezes_only_the_stem():
    model = resnet(depth=18, norm="bn", norm_eval=False, frozen_stages=0).train()
    assert not model.conv1.weight.requires_grad and not model.bn1.weight.requires_grad
    assert all(p.requires_grad for p in model.layer1.parameters())
    assert not model.bn1.training and all(bn.training for bn in _bns(model.layer1))


def test_norm_eval_keeps_every_bn_in_eval_and_minus_one_freezes_nothing():
    model = resnet(depth=18, norm="bn", norm_eval=True, frozen_stages=-1).train()
    assert model.training and model.layer4.training
    assert all(not bn.training for bn in _bns(model))
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("norm, cls", [("frozen_bn", FrozenBatchNorm2d), ("bn", nn.BatchNorm2d), ("gn", nn.GroupNorm)])
def test_norm_variants_build_and_run(norm, cls):
    model = resnet(depth=18, norm=norm, gn_groups=16, frozen_stages=-1).train()
    assert isinstance(model.bn1, cls) and isinstance(model.layer3[0].bn2, cls)
    assert isinstance(model.layer3[0].downsample[1], cls)
    if norm == "gn":
        assert model.bn1.num_groups == 16
    if norm == "frozen_bn":  # statistics and affine terms are buffers, not parameters
        assert not any("bn" in n or "downsample.1" in n for n, _ in model.named_parameters())
    outs = model(torch.randn(2, 3, 32, 32))
    assert [o.shape[1] for o in outs] == [128, 256, 512]
    assert all(torch.isfinite(o).all() for o in outs)


# ----------------------------------------------------------------------------------- DCN


def test_deform_conv_v1_starts_as_the_plain_conv():
    torch.manual_seed(0)
    m = DeformConv2dPack(4, 6, 3, stride=1, padding=1, modulated=False)
    assert torch.count_nonzero(m.conv_offset.weight) == 0 and torch.count_nonzero(m.conv_offset.bias) == 0
    assert m.conv_offset.out_channels == 18  # 2 * 3 * 3 offsets
    x = torch.randn(2, 4, 9, 9)
    torch.testing.assert_close(m(x), F.conv2d(x, m.weight, padding=1), rtol=1e-4, atol=1e-5)


def test_deform_conv_strided_matches_plain_conv():
    torch.manual_seed(0)
    m = DeformConv2dPack(4, 6, 3, stride=2, padding=1, modulated=False)
    x = torch.randn(1, 4, 9, 9)
    torch.testing.assert_close(m(x), F.conv2d(x, m.weight, stride=2, padding=1), rtol=1e-4, atol=1e-5)


def test_deform_conv_v2_starts_as_half_the_plain_conv():
    # zero offset conv: offsets 0 and masks sigmoid(0) = 0.5 (as in mmcv's ModulatedDeformConv2dPack)
    torch.manual_seed(0)
    m = DeformConv2dPack(4, 6, 3, padding=1, modulated=True)
    assert m.conv_offset.out_channels == 27  # 2 * 9 offsets + 9 masks
    assert torch.count_nonzero(m.conv_offset.weight) == 0 and torch.count_nonzero(m.conv_offset.bias) == 0
    x = torch.randn(2, 4, 9, 9)
    torch.testing.assert_close(m(x), 0.5 * F.conv2d(x, m.weight, padding=1), rtol=1e-4, atol=1e-5)


def test_resnet_dcnv2_stage_runs_and_matches_the_plain_resnet(r18):
    dcn = resnet(depth=18, plugins=(C.DCNPluginConfig(stages=(False, True, False, False)),)).eval()
    assert dcn.layer2[0].conv2.modulated and dcn.layer2[1].conv2.modulated
    assert type(dcn.layer1[0].conv2) is nn.Conv2d and type(dcn.layer3[0].conv2) is nn.Conv2d
    # The same weights, except the stage-2 deformable convs get twice the plain weight: with zero
    # offsets and masks of 0.5 they then compute exactly the plain network.
    state = {k: (2 * v if k.startswith("layer2.") and ".conv2." in k else v) for k, v in r18.state_dict().items()}
    missing, unexpected = dcn.load_state_dict(state, strict=False)
    assert not unexpected and missing and all("conv_offset" in k for k in missing)
    x = _image(3)
    with torch.no_grad():
        for a, b in zip(dcn(x), r18(x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    dcn.train()
    dcn(torch.randn(1, 3, 32, 32))[0].mean().backward()
    assert dcn.layer2[0].conv2.conv_offset.weight.grad is not None
    assert dcn.layer2[0].conv2.weight.grad is not None


# ----------------------------------------------------------------------------------- weights


@pytest.fixture(scope="module")
def tv18(tmp_path_factory):
    """A torchvision ResNet-18 (eval) with non-trivial BN, and its state dict saved to a file."""
    torch.manual_seed(0)
    tv = torchvision.models.resnet18()
    with torch.no_grad():  # non-trivial BN statistics, so that they are really compared
        for m in tv.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(tv.state_dict(), path)
    return tv.eval(), path


@pytest.fixture(scope="module")
def loaded18(tv18) -> ResNet:
    return resnet(depth=18, weights=str(tv18[1])).eval()


def _assert_same_tensors(model: ResNet, state: dict) -> None:
    own = model.state_dict()
    compared = 0
    for k, v in state.items():
        if k.startswith("fc.") or k.endswith("num_batches_tracked"):
            continue
        assert torch.equal(own[k], v), k
        compared += 1
    assert compared == len([k for k in own if not k.endswith("num_batches_tracked")])


def test_local_torchvision_weights_load_identically(tv18, loaded18):
    _assert_same_tensors(loaded18, tv18[0].state_dict())


def test_local_weights_load_into_plain_bn(tv18):
    _assert_same_tensors(resnet(depth=18, norm="bn", weights=str(tv18[1])), tv18[0].state_dict())


def test_local_weights_give_the_torchvision_features(tv18, loaded18):
    tv = tv18[0]
    x = _image(5)
    with torch.no_grad():
        c3 = tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))))
        c5 = tv.layer4(tv.layer3(c3))
        outs = loaded18(x)
    torch.testing.assert_close(outs[0], c3, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(outs[2], c5, rtol=1e-4, atol=1e-4)


def test_prefixed_checkpoint_formats_load(tv18, loaded18, tmp_path):
    state = tv18[0].state_dict()
    for i, wrap in enumerate([lambda s: {"state_dict": {f"backbone.{k}": v for k, v in s.items()}},
                              lambda s: {"model": s}]):
        path = tmp_path / f"wrapped{i}.pth"
        torch.save(wrap(state), path)
        loaded18.load_weights(str(path))  # the same weights again: must be accepted unchanged
        _assert_same_tensors(loaded18, state)


def test_backbone_of_a_detector_checkpoint_loads(tv18, loaded18, tmp_path):
    """A dettool (or MMDetection) detector checkpoint: its ``backbone.*`` entries, the rest ignored."""
    state = tv18[0].state_dict()
    detector = {**{f"backbone.{k}": v for k, v in state.items() if not k.startswith("fc.")},
                "neck.fpn.inner_blocks.0.0.weight": torch.zeros(8, 128, 1, 1), "bbox_head.conv.weight": torch.zeros(3)}
    path = tmp_path / "epoch_10.pth"
    torch.save({"model": detector, "epoch": 10}, path)
    model = resnet(depth=18, weights=str(path))
    _assert_same_tensors(model, state)


def test_wrong_depth_file_raises_checkpoint_error(tv18, r50):
    with pytest.raises(CheckpointError, match="shape mismatch"):
        r50.load_weights(str(tv18[1]))  # bottleneck 1x1 conv vs basic-block 3x3 conv


def test_incomplete_file_raises_checkpoint_error(tv18, tmp_path):
    path = tmp_path / "truncated.pth"
    torch.save({k: v for k, v in tv18[0].state_dict().items() if not k.startswith("layer4.")}, path)
    with pytest.raises(CheckpointError, match="lack"):
        resnet(depth=18, weights=str(path))


def test_deeper_file_into_shallower_model_raises(tv18, tmp_path):
    state = tv18[0].state_dict()
    deeper = dict(state)  # ResNet-34 has three blocks in stage 1, with ResNet-18's shapes
    deeper.update({k.replace("layer1.1.", "layer1.2."): v for k, v in state.items() if k.startswith("layer1.1.")})
    path = tmp_path / "resnet34_like.pth"
    torch.save(deeper, path)
    with pytest.raises(CheckpointError):
        resnet(depth=18, weights=str(path))


def test_missing_or_corrupt_weights_file_raises_checkpoint_error(r18, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        r18.load_weights(str(tmp_path / "absent.pth"))
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        r18.load_weights(str(bad))


# ----------------------------------------------------------------------------------- FPN

IN_CHANNELS = (8, 16, 32)


def _pyramid(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, c, s, s, generator=g) for c, s in zip(IN_CHANNELS, (16, 8, 4))]


@pytest.mark.parametrize("mode", ["on_input", "on_output", "none"])
def test_fpn_five_outputs_from_three_inputs(mode):
    fpn = FPN(IN_CHANNELS, out_channels=8, num_outs=5, add_extra_convs=mode, relu_before_extra_convs=False).eval()
    with torch.no_grad():
        outs = fpn(_pyramid())
    assert len(outs) == 5
    assert [tuple(o.shape) for o in outs] == [(2, 8, s, s) for s in (16, 8, 4, 2, 1)]
    for finer, coarser in zip(outs, outs[1:]):  # each level halves the resolution
        assert coarser.shape[-1] == finer.shape[-1] // 2 and coarser.shape[-2] == finer.shape[-2] // 2


def test_fpn_on_input_reads_the_last_backbone_map():
    fpn = FPN(IN_CHANNELS, out_channels=8, num_outs=5, add_extra_convs="on_input", relu_before_extra_convs=False).eval()
    convs = fpn.fpn.extra_blocks.convs
    assert convs[0].in_channels == 32 and convs[1].in_channels == 8
    feats = _pyramid()
    with torch.no_grad():
        outs = fpn(feats)
        torch.testing.assert_close(outs[3], convs[0](feats[2]))
        torch.testing.assert_close(outs[4], convs[1](outs[3]))  # no ReLU between by default


def test_fpn_on_output_reads_the_last_fpn_level_with_relu_between():
    fpn = FPN(IN_CHANNELS, out_channels=8, num_outs=5, add_extra_convs="on_output",
              relu_before_extra_convs=True).eval()
    convs = fpn.fpn.extra_blocks.convs
    assert convs[0].in_channels == 8
    with torch.no_grad():
        outs = fpn(_pyramid())
        torch.testing.assert_close(outs[3], convs[0](outs[2]))  # never a ReLU before the first
        torch.testing.assert_close(outs[4], convs[1](F.relu(outs[3])))


def test_fpn_none_mode_subsamples_without_params():
    fpn = FPN(IN_CHANNELS, out_channels=8, num_outs=5, add_extra_convs="none", relu_before_extra_convs=False).eval()
    assert len(fpn.fpn.extra_blocks.convs) == 0
    with torch.no_grad():
        outs = fpn(_pyramid())
    torch.testing.assert_close(outs[3], outs[2][..., ::2, ::2])
    torch.testing.assert_close(outs[4], outs[3][..., ::2, ::2])


def test_fpn_without_extra_levels_and_num_outs_check():
    fpn = FPN(IN_CHANNELS, out_channels=8, num_outs=3, add_extra_convs="none", relu_before_extra_convs=False).eval()
    with torch.no_grad():
        assert len(fpn(_pyramid())) == 3
    with pytest.raises(ValueError, match="num_outs"):
        FPN(IN_CHANNELS, out_channels=8, num_outs=2, add_extra_convs="none", relu_before_extra_convs=False)


# ----------------------------------------------------------------------------------- strides and dilations


@pytest.mark.parametrize("depth", [18, 50])
def test_dilated_res5_keeps_stride_16_and_equals_mmdetection(depth):
    """R-FCN's backbone (``strides (1, 2, 2, 1)``, ``dilations (1, 1, 1, 2)``) is MMDetection's
    ``ResNet`` with the same settings on the same weights: res4 and res5 both at stride 16."""
    from mmdet_reference import import_mmdet

    import_mmdet()
    from mmdet.models.backbones import ResNet as MMResNet

    torch.manual_seed(0)
    ours = resnet(depth=depth, norm="bn", frozen_stages=-1, out_indices=(2, 3), strides=(1, 2, 2, 1),
                  dilations=(1, 1, 1, 2)).eval()
    theirs = MMResNet(depth=depth, strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2), out_indices=(2, 3),
                      frozen_stages=-1, norm_cfg=dict(type="BN", requires_grad=True), norm_eval=False,
                      style="pytorch")
    theirs.load_state_dict(ours.state_dict(), strict=True)
    theirs.eval()  # MMDetection's ResNet.train returns None
    image = _image(size=96)
    with torch.no_grad():
        got, want = ours(image), theirs(image)
    assert [tuple(o.shape[-2:]) for o in got] == [(6, 6), (6, 6)]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_dilation_goes_to_every_block_and_keeps_under_dcn():
    """Each block of a dilated stage dilates its 3x3 conv (a basic block its first); a DCN plugin
    takes the dilation of the conv it replaces."""
    r18 = resnet(depth=18, strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2))
    assert [(b.conv1.dilation, b.conv1.padding, b.conv2.dilation) for b in r18.layer4] == [((2, 2), (2, 2), (1, 1))] * 2
    assert r18.layer4[0].conv1.stride == (1, 1) and r18.layer4[0].downsample[0].stride == (1, 1)
    dcn = C.DCNPluginConfig(stages=(False, False, False, True))
    r50 = resnet(depth=50, strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2), plugins=(dcn,))
    assert all(isinstance(b.conv2, DeformConv2dPack) and b.conv2.dilation == 2 for b in r50.layer4)
    with torch.no_grad():
        assert r50.eval()(_image(size=64))[-1].shape[-2:] == (4, 4)


def test_strides_and_dilations_need_four_positive_values():
    from dettool.config.schema.common import Invalid

    with pytest.raises(Invalid, match="dilations"):
        C.ResNetConfig(dilations=(1, 1, 0, 2))
